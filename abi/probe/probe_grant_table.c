/* xen/grant_table.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/grant_table.h>

void probe_grant_table(void)
{
    probe_header("grant_table.h");

    /* enum grant_table_op */
    CONST(GNTTABOP_map_grant_ref);
    CONST(GNTTABOP_unmap_grant_ref);
    CONST(GNTTABOP_setup_table);
    CONST(GNTTABOP_dump_table);
    CONST(GNTTABOP_transfer);
    CONST(GNTTABOP_copy);
    CONST(GNTTABOP_query_size);
    CONST(GNTTABOP_unmap_and_replace);
    CONST(GNTTABOP_set_version);
    CONST(GNTTABOP_get_status_frames);
    CONST(GNTTABOP_get_version);
    CONST(GNTTABOP_swap_grant_ref);
    CONST(GNTTABOP_cache_flush);

    /* Entries kept across version changes. */
    CONST(GNTTAB_NR_RESERVED_ENTRIES);
    CONST(GNTTAB_RESERVED_CONSOLE);
    CONST(GNTTAB_RESERVED_XENSTORE);

    /* Grant entry types and flags. */
    CONST(GTF_invalid);
    CONST(GTF_permit_access);
    CONST(GTF_accept_transfer);
    CONST(GTF_transitive);
    CONST(GTF_type_mask);
    CONST(_GTF_readonly);
    CONST(GTF_readonly);
    CONST(_GTF_reading);
    CONST(GTF_reading);
    CONST(_GTF_writing);
    CONST(GTF_writing);
    CONST(_GTF_PWT);
    CONST(GTF_PWT);
    CONST(_GTF_PCD);
    CONST(GTF_PCD);
    CONST(_GTF_PAT);
    CONST(GTF_PAT);
    CONST(_GTF_sub_page);
    CONST(GTF_sub_page);
    CONST(_GTF_transfer_committed);
    CONST(GTF_transfer_committed);
    CONST(_GTF_transfer_completed);
    CONST(GTF_transfer_completed);

    /* gnttab_copy.flags */
    CONST(_GNTCOPY_source_gref);
    CONST(GNTCOPY_source_gref);
    CONST(_GNTCOPY_dest_gref);
    CONST(GNTCOPY_dest_gref);

    /* gnttab_cache_flush.op */
    CONST(GNTTAB_CACHE_CLEAN);
    CONST(GNTTAB_CACHE_INVAL);
    CONST(GNTTAB_CACHE_SOURCE_GREF);

    /* gnttab_map_grant_ref.flags */
    CONST(_GNTMAP_device_map);
    CONST(GNTMAP_device_map);
    CONST(_GNTMAP_host_map);
    CONST(GNTMAP_host_map);
    CONST(_GNTMAP_readonly);
    CONST(GNTMAP_readonly);
    CONST(_GNTMAP_application_map);
    CONST(GNTMAP_application_map);
    CONST(_GNTMAP_contains_pte);
    CONST(GNTMAP_contains_pte);
    CONST(_GNTMAP_guest_avail0);
    CONST(GNTMAP_guest_avail_mask);

    /* enum grant_status */
    CONST(GNTST_okay);
    CONST(GNTST_general_error);
    CONST(GNTST_bad_domain);
    CONST(GNTST_bad_gntref);
    CONST(GNTST_bad_handle);
    CONST(GNTST_bad_virt_addr);
    CONST(GNTST_bad_dev_addr);
    CONST(GNTST_no_device_space);
    CONST(GNTST_permission_denied);
    CONST(GNTST_bad_page);
    CONST(GNTST_bad_copy_arg);
    CONST(GNTST_address_too_big);
    CONST(GNTST_eagain);
    CONST(GNTST_no_space);

    /* Shared grant table entries. */
    STRUCT(grant_entry_v1) FIELD(flags) FIELD(domid) FIELD(frame) END();
    STRUCT(grant_entry_header) FIELD(flags) FIELD(domid) END();
    UNION(grant_entry_v2)
        FIELD(hdr) FIELD(full_page) FIELD(sub_page) FIELD(transitive) FIELD(__spacer)
        FIELD(hdr.flags) FIELD(hdr.domid)
        FIELD(full_page.hdr) FIELD(full_page.pad0) FIELD(full_page.frame)
        FIELD(sub_page.hdr) FIELD(sub_page.page_off) FIELD(sub_page.length) FIELD(sub_page.frame)
        FIELD(transitive.hdr) FIELD(transitive.trans_domid) FIELD(transitive.pad0)
        FIELD(transitive.gref)
    END();

    /* GNTTABOP_* arguments. */
    STRUCT(gnttab_map_grant_ref)
        FIELD(host_addr) FIELD(flags) FIELD(ref) FIELD(dom) FIELD(status) FIELD(handle)
        FIELD(dev_bus_addr)
    END();
    STRUCT(gnttab_unmap_grant_ref) FIELD(host_addr) FIELD(dev_bus_addr) FIELD(handle) FIELD(status) END();
    STRUCT(gnttab_setup_table) FIELD(dom) FIELD(nr_frames) FIELD(status) FIELD(frame_list) END();
    STRUCT(gnttab_dump_table) FIELD(dom) FIELD(status) END();
    STRUCT(gnttab_transfer) FIELD(mfn) FIELD(domid) FIELD(ref) FIELD(status) END();
    STRUCT(gnttab_copy_ptr) FIELD(u) FIELD(u.ref) FIELD(u.gmfn) FIELD(domid) FIELD(offset) END();
    STRUCT(gnttab_copy)
        FIELD(source) FIELD(dest) FIELD(len) FIELD(flags) FIELD(status)
        FIELD(source.u.ref) FIELD(source.u.gmfn) FIELD(source.domid) FIELD(source.offset)
        FIELD(dest.u.ref) FIELD(dest.u.gmfn) FIELD(dest.domid) FIELD(dest.offset)
    END();
    STRUCT(gnttab_query_size) FIELD(dom) FIELD(nr_frames) FIELD(max_nr_frames) FIELD(status) END();
    STRUCT(gnttab_unmap_and_replace) FIELD(host_addr) FIELD(new_addr) FIELD(handle) FIELD(status) END();
    STRUCT(gnttab_set_version) FIELD(version) END();
    STRUCT(gnttab_get_status_frames) FIELD(nr_frames) FIELD(dom) FIELD(status) FIELD(frame_list) END();
    STRUCT(gnttab_get_version) FIELD(dom) FIELD(pad) FIELD(version) END();
    STRUCT(gnttab_swap_grant_ref) FIELD(ref_a) FIELD(ref_b) FIELD(status) END();
    STRUCT(gnttab_cache_flush)
        FIELD(a) FIELD(a.dev_bus_addr) FIELD(a.ref) FIELD(offset) FIELD(length) FIELD(op)
    END();
}
