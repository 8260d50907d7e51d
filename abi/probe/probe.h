/*
 * Paravirt ABI probe: shared declarations.
 *
 * Each probe_<header>.c file lists, for one Xen public header, the structs (with every field)
 * and the constants the project mirrors in C#. The compiler answers the questions (sizeof,
 * _Alignof, offsetof, the value of each constant); the emitter writes them as JSON.
 *
 * The emitter also checks that every struct's listed fields tile the struct: a gap between
 * two fields (or before the tail) that alignment cannot explain means a field is missing from
 * the list, and the probe fails naming the struct and the offset.
 */
#ifndef PARAVIRT_ABI_PROBE_H
#define PARAVIRT_ABI_PROBE_H

#include <stddef.h>
#include <stdint.h>

void probe_header(const char *header);
void probe_struct_begin(const char *kind, const char *name, size_t size, size_t align);
void probe_field(const char *name, size_t offset, size_t size, size_t align);
void probe_struct_end(void);
void probe_const(const char *name, unsigned long long bits, int negative);
void probe_string(const char *name, const char *value);

/* A type is named by its C tag: STRUCT(evtchn_send) is `struct evtchn_send`. */
#define PROBE_TYPE_struct(T) struct T
#define PROBE_TYPE_union(T) union T
#define PROBE_TYPE_typedef(T) T

#define PROBE_BEGIN(kind, T, CT) \
    do { typedef CT probe_cur_t; \
         probe_struct_begin(#kind, #T, sizeof(probe_cur_t), _Alignof(probe_cur_t));
#define STRUCT(T) PROBE_BEGIN(struct, T, struct T)
#define UNION(T) PROBE_BEGIN(union, T, union T)
/* A type that only has a typedef name (an anonymous struct behind a typedef). */
#define TYPEDEF(T) PROBE_BEGIN(struct, T, T)
/* Fields may be dotted paths into nested structs and unions ("full_page.frame"). */
#define FIELD(f) \
    probe_field(#f, offsetof(probe_cur_t, f), sizeof(((probe_cur_t *)0)->f), \
                _Alignof(__typeof__(((probe_cur_t *)0)->f)));
#define END() probe_struct_end(); } while (0)

/* An integer constant: a #define or an enum value. */
#define CONST(X) probe_const(#X, (unsigned long long)(X), (X) < 0)
/* An integer computed from a macro that takes arguments, under a name of our choosing. */
#define CONST_AS(NAME, X) probe_const(NAME, (unsigned long long)(X), (X) < 0)
#define STRING(X) probe_string(#X, X)

/* One function per header, defined in probe_<header>.c. */
#define PROBE_HEADERS(X) \
    X(xen) X(arch_x86_xen) X(arch_x86_xen_x86_64) X(errno) X(event_channel) X(grant_table) \
    X(sched) X(memory) X(vcpu) X(version) X(callback) X(physdev) X(features) X(elfnote) \
    X(io_ring) X(io_blkif) X(io_netif) X(io_xs_wire) X(io_console) X(io_xenbus) X(io_protocols)

#define PROBE_DECLARE(h) void probe_##h(void);
PROBE_HEADERS(PROBE_DECLARE)

#endif
