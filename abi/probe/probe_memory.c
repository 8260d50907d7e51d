/* xen/memory.h (the guest-visible part; the __XEN__/__XEN_TOOLS__ block is not compiled here) */
#include "probe.h"

#include <xen/xen.h>
#include <xen/memory.h>

void probe_memory(void)
{
    probe_header("memory.h");

    /* XENMEM_* sub-ops, in number order. */
    CONST(XENMEM_increase_reservation);
    CONST(XENMEM_decrease_reservation);
    CONST(XENMEM_maximum_ram_page);
    CONST(XENMEM_current_reservation);
    CONST(XENMEM_maximum_reservation);
    CONST(XENMEM_machphys_mfn_list);
    CONST(XENMEM_populate_physmap);
    CONST(XENMEM_add_to_physmap);
    CONST(XENMEM_memory_map);
    CONST(XENMEM_machine_memory_map);
    CONST(XENMEM_exchange);
    CONST(XENMEM_machphys_mapping);
    CONST(XENMEM_set_memory_map);
    CONST(XENMEM_maximum_gpfn);
    CONST(XENMEM_remove_from_physmap);
    CONST(XENMEM_set_pod_target);
    CONST(XENMEM_get_pod_target);
    CONST(XENMEM_add_to_physmap_batch);
    CONST(XENMEM_machphys_compat_mfn_list);
    CONST(XENMEM_get_vnumainfo);
    CONST(XENMEM_acquire_resource);

    /* xen_memory_reservation.mem_flags (the plain flags; the rest are function-like). */
    CONST(XENMEMF_populate_on_demand);
    CONST(XENMEMF_exact_node_request);
    CONST(XENMEMF_vnode);

    /* enum phys_map_space */
    CONST(XENMAPSPACE_shared_info);
    CONST(XENMAPSPACE_grant_table);
    CONST(XENMAPSPACE_gmfn);
    CONST(XENMAPSPACE_gmfn_range);
    CONST(XENMAPSPACE_gmfn_foreign);
    CONST(XENMAPSPACE_dev_mmio);
    CONST(XENMAPIDX_grant_table_status);

    /* xen_mem_acquire_resource.type and .id, .frame */
    CONST(XENMEM_resource_ioreq_server);
    CONST(XENMEM_resource_grant_table);
    CONST(XENMEM_resource_vmtrace_buf);
    CONST(XENMEM_resource_grant_table_id_shared);
    CONST(XENMEM_resource_grant_table_id_status);
    CONST(XENMEM_resource_ioreq_server_frame_bufioreq);

    STRUCT(xen_memory_reservation)
        FIELD(extent_start) FIELD(nr_extents) FIELD(extent_order) FIELD(mem_flags) FIELD(domid)
    END();
    STRUCT(xen_memory_exchange)
        FIELD(in) FIELD(out) FIELD(nr_exchanged)
        FIELD(in.extent_start) FIELD(in.nr_extents) FIELD(in.extent_order) FIELD(in.mem_flags)
        FIELD(in.domid)
        FIELD(out.extent_start) FIELD(out.nr_extents) FIELD(out.extent_order) FIELD(out.mem_flags)
        FIELD(out.domid)
    END();
    STRUCT(xen_memory_domain) FIELD(domid) END();
    STRUCT(xen_machphys_mfn_list) FIELD(max_extents) FIELD(extent_start) FIELD(nr_extents) END();
    STRUCT(xen_machphys_mapping) FIELD(v_start) FIELD(v_end) FIELD(max_mfn) END();
    STRUCT(xen_add_to_physmap) FIELD(domid) FIELD(size) FIELD(space) FIELD(idx) FIELD(gpfn) END();
    UNION(xen_add_to_physmap_batch_extra) FIELD(foreign_domid) FIELD(res0) END();
    STRUCT(xen_add_to_physmap_batch)
        FIELD(domid) FIELD(space) FIELD(size) FIELD(u) FIELD(idxs) FIELD(gpfns) FIELD(errs)
        FIELD(u.foreign_domid) FIELD(u.res0)
    END();
    STRUCT(xen_remove_from_physmap) FIELD(domid) FIELD(gpfn) END();
    STRUCT(xen_memory_map) FIELD(nr_entries) FIELD(buffer) END();
    STRUCT(xen_foreign_memory_map)
        FIELD(domid) FIELD(map) FIELD(map.nr_entries) FIELD(map.buffer)
    END();
    STRUCT(xen_pod_target)
        FIELD(target_pages) FIELD(tot_pages) FIELD(pod_cache_pages) FIELD(pod_entries) FIELD(domid)
    END();
    STRUCT(xen_mem_acquire_resource)
        FIELD(domid) FIELD(type) FIELD(id) FIELD(nr_frames) FIELD(pad) FIELD(frame) FIELD(frame_list)
    END();
    STRUCT(xen_vmemrange) FIELD(start) FIELD(end) FIELD(flags) FIELD(nid) END();
    STRUCT(xen_vnuma_topology_info)
        FIELD(domid) FIELD(pad) FIELD(nr_vnodes) FIELD(nr_vcpus) FIELD(nr_vmemranges)
        FIELD(vdistance) FIELD(vcpu_to_vnode) FIELD(vmemrange)
        FIELD(vdistance.h) FIELD(vdistance.pad)
        FIELD(vcpu_to_vnode.h) FIELD(vcpu_to_vnode.pad)
        FIELD(vmemrange.h) FIELD(vmemrange.pad)
    END();
}
