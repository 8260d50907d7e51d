/* Paravirt ABI probe: the JSON emitter and the field-tiling check. */
#include "probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 256

struct field {
    const char *name;
    size_t offset, size, align;
};

static struct {
    const char *kind, *name;
    size_t size, align;
    struct field fields[MAX_FIELDS];
    int count;
} cur;

static const char *cur_header;
static int first_struct = 1, first_const = 1, first_string = 1;
static int failures;

/* Output is buffered per section so the JSON comes out as three ordered objects. */
static char *structs_buf, *consts_buf, *strings_buf;
static size_t structs_len, consts_len, strings_len;
static FILE *structs_out, *consts_out, *strings_out;

static void die(const char *what)
{
    fprintf(stderr, "abi probe: %s\n", what);
    exit(2);
}

void probe_header(const char *header)
{
    cur_header = header;
}

void probe_struct_begin(const char *kind, const char *name, size_t size, size_t align)
{
    cur.kind = kind;
    cur.name = name;
    cur.size = size;
    cur.align = align;
    cur.count = 0;
}

void probe_field(const char *name, size_t offset, size_t size, size_t align)
{
    if (cur.count == MAX_FIELDS)
        die("too many fields in one struct; raise MAX_FIELDS");
    cur.fields[cur.count++] = (struct field){ name, offset, size, align };
}

static size_t round_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

static int top_level(const struct field *f)
{
    return strchr(f->name, '.') == NULL;
}

static int by_offset(const void *a, const void *b)
{
    const struct field *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return 0;
}

/*
 * Every byte of a struct is a listed top-level field or padding that alignment explains.
 * Anything else means the list in probe_<header>.c is missing a field.
 */
static void check_tiling(void)
{
    struct field sorted[MAX_FIELDS];
    int n = 0;
    size_t end = 0;

    for (int i = 0; i < cur.count; i++)
        if (top_level(&cur.fields[i]))
            sorted[n++] = cur.fields[i];
    if (n == 0) {
        fprintf(stderr, "abi probe: %s %s (%s): no fields listed\n", cur.kind, cur.name, cur_header);
        failures++;
        return;
    }
    if (strcmp(cur.kind, "union") == 0) {
        for (int i = 0; i < n; i++) {
            if (sorted[i].size > end)
                end = sorted[i].size;
        }
    } else {
        qsort(sorted, n, sizeof(sorted[0]), by_offset);
        for (int i = 0; i < n; i++) {
            if (sorted[i].offset != round_up(end, sorted[i].align)) {
                fprintf(stderr,
                        "abi probe: struct %s (%s): field %s at offset %zu, expected %zu; "
                        "is a field missing from the probe's list?\n",
                        cur.name, cur_header, sorted[i].name, sorted[i].offset,
                        round_up(end, sorted[i].align));
                failures++;
            }
            end = sorted[i].offset + sorted[i].size;
        }
    }
    if (round_up(end, cur.align) != cur.size) {
        fprintf(stderr,
                "abi probe: %s %s (%s): listed fields end at %zu but sizeof is %zu; "
                "is a field missing from the probe's list?\n",
                cur.kind, cur.name, cur_header, end, cur.size);
        failures++;
    }
}

void probe_struct_end(void)
{
    check_tiling();
    fprintf(structs_out, "%s\n    \"%s\": {\n", first_struct ? "" : ",", cur.name);
    fprintf(structs_out, "      \"header\": \"%s\",\n      \"kind\": \"%s\",\n", cur_header, cur.kind);
    fprintf(structs_out, "      \"size\": %zu,\n      \"align\": %zu,\n      \"fields\": [", cur.size,
            cur.align);
    for (int i = 0; i < cur.count; i++) {
        const struct field *f = &cur.fields[i];
        fprintf(structs_out, "%s\n        { \"name\": \"%s\", \"offset\": %zu, \"size\": %zu }",
                i ? "," : "", f->name, f->offset, f->size);
    }
    fprintf(structs_out, "\n      ]\n    }");
    first_struct = 0;
}

void probe_const(const char *name, unsigned long long bits, int negative)
{
    fprintf(consts_out, "%s\n    \"%s\": { \"header\": \"%s\", \"value\": ", first_const ? "" : ",",
            name, cur_header);
    if (negative)
        fprintf(consts_out, "%lld }", (long long)bits);
    else
        fprintf(consts_out, "%llu }", bits);
    first_const = 0;
}

void probe_string(const char *name, const char *value)
{
    fprintf(strings_out, "%s\n    \"%s\": { \"header\": \"%s\", \"value\": \"", first_string ? "" : ",",
            name, cur_header);
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', strings_out);
        fputc(*p, strings_out);
    }
    fprintf(strings_out, "\" }");
    first_string = 0;
}

#define PROBE_CALL(h) probe_##h();

int main(void)
{
    structs_out = open_memstream(&structs_buf, &structs_len);
    consts_out = open_memstream(&consts_buf, &consts_len);
    strings_out = open_memstream(&strings_buf, &strings_len);
    if (!structs_out || !consts_out || !strings_out)
        die("out of memory");

    PROBE_HEADERS(PROBE_CALL)

    fclose(structs_out);
    fclose(consts_out);
    fclose(strings_out);
    if (failures) {
        fprintf(stderr, "abi probe: %d layout problem(s); no JSON written\n", failures);
        return 1;
    }

    printf("{\n");
    printf("  \"source\": \"Xen public headers (Debian libxen-dev, /usr/include/xen)\",\n");
    printf("  \"xen\": \"%s\",\n", PROBE_XEN_RELEASE);
    printf("  \"arch\": \"x86_64\",\n");
    printf("  \"interface_version\": \"0x%08x\",\n", __XEN_INTERFACE_VERSION__);
    printf("  \"structs\": {%s\n  },\n", structs_buf);
    printf("  \"constants\": {%s\n  },\n", consts_buf);
    printf("  \"strings\": {%s\n  }\n", strings_buf);
    printf("}\n");
    free(structs_buf);
    free(consts_buf);
    free(strings_buf);
    return 0;
}
