using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/memory.h (Xen 4.17), the part a guest sees: the __XEN__/__XEN_TOOLS__ block
// (paging, access, sharing, claims, reserved device memory) is not mirrored.
// Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/memory.h</c>: <c>XENMEM_*</c> sub-ops, <c>XENMEMF_*</c> flags, map spaces, resources.</summary>
public static class XenMem
{
    // HYPERVISOR_memory_op(cmd, arg), in number order.
    /// <summary>arg: <see cref="xen_memory_reservation"/>; returns the number of extents done.</summary>
    public const int XENMEM_increase_reservation = 0;
    /// <summary>arg: <see cref="xen_memory_reservation"/>.</summary>
    public const int XENMEM_decrease_reservation = 1;
    /// <summary>The highest machine frame of mapped RAM; never fails. arg: NULL.</summary>
    public const int XENMEM_maximum_ram_page = 2;
    /// <summary>Pages of the domain's current reservation. arg: <see cref="xen_memory_domain"/>.</summary>
    public const int XENMEM_current_reservation = 3;
    /// <summary>Pages of the domain's maximum reservation. arg: <see cref="xen_memory_domain"/>.</summary>
    public const int XENMEM_maximum_reservation = 4;
    /// <summary>MFNs of the 2 MB extents of the M2P table. arg: <see cref="xen_machphys_mfn_list"/>.</summary>
    public const int XENMEM_machphys_mfn_list = 5;
    /// <summary>arg: <see cref="xen_memory_reservation"/> (GPFNs in, GMFNs out).</summary>
    public const int XENMEM_populate_physmap = 6;
    /// <summary>Translated guests only. arg: <see cref="xen_add_to_physmap"/>.</summary>
    public const int XENMEM_add_to_physmap = 7;
    /// <summary>The pseudo-physical E820 map set at creation. arg: <see cref="xen_memory_map"/>.</summary>
    public const int XENMEM_memory_map = 9;
    /// <summary>The real physical E820 map. arg: <see cref="xen_memory_map"/>.</summary>
    public const int XENMEM_machine_memory_map = 10;
    /// <summary>Atomic exchange of pages; PV only. arg: <see cref="xen_memory_exchange"/>.</summary>
    public const int XENMEM_exchange = 11;
    /// <summary>Where the M2P table is mapped in the guest. arg: <see cref="xen_machphys_mapping"/>.</summary>
    public const int XENMEM_machphys_mapping = 12;
    /// <summary>arg: <see cref="xen_foreign_memory_map"/>.</summary>
    public const int XENMEM_set_memory_map = 13;
    /// <summary>The highest GFN in use by the domain. arg: <see cref="xen_memory_domain"/>.</summary>
    public const int XENMEM_maximum_gpfn = 14;
    /// <summary>Translated guests only. arg: <see cref="xen_remove_from_physmap"/>.</summary>
    public const int XENMEM_remove_from_physmap = 15;
    /// <summary>arg: <see cref="xen_pod_target"/>.</summary>
    public const int XENMEM_set_pod_target = 16;
    /// <summary>arg: <see cref="xen_pod_target"/>.</summary>
    public const int XENMEM_get_pod_target = 17;
    /// <summary>arg: <see cref="xen_add_to_physmap_batch"/>.</summary>
    public const int XENMEM_add_to_physmap_batch = 23;
    /// <summary>As <see cref="XENMEM_machphys_mfn_list"/>, for the compat M2P table.</summary>
    public const int XENMEM_machphys_compat_mfn_list = 25;
    /// <summary>arg: <see cref="xen_vnuma_topology_info"/>.</summary>
    public const int XENMEM_get_vnumainfo = 26;
    /// <summary>arg: <see cref="xen_mem_acquire_resource"/>.</summary>
    public const int XENMEM_acquire_resource = 28;

    /// <summary><see cref="xen_memory_reservation.mem_flags"/>: populate with populate-on-demand entries.</summary>
    public const int XENMEMF_populate_on_demand = 1 << 16;
    /// <summary>Allocate only from the node given with <see cref="XENMEMF_node"/>.</summary>
    public const int XENMEMF_exact_node_request = 1 << 17;
    /// <summary>The node given is a virtual node.</summary>
    public const int XENMEMF_vnode = 1 << 18;

    /// <summary>Flags bits 0-7: addressable bits of the allocation (0: no restriction).</summary>
    public static uint XENMEMF_address_bits(uint x) => x;

    public static uint XENMEMF_get_address_bits(uint x) => x & 0xffu;

    /// <summary>Flags bits 8-15: NUMA node + 1 to allocate from.</summary>
    public static uint XENMEMF_node(uint x) => (x + 1) << 8;

    public static uint XENMEMF_get_node(uint x) => ((x >> 8) - 1) & 0xffu;

    public static uint XENMEMF_exact_node(uint n) => XENMEMF_node(n) | (uint)XENMEMF_exact_node_request;

    // enum phys_map_space: xen_add_to_physmap.space
    /// <summary>The shared info page.</summary>
    public const int XENMAPSPACE_shared_info = 0;
    /// <summary>A grant table page.</summary>
    public const int XENMAPSPACE_grant_table = 1;
    /// <summary>A GMFN.</summary>
    public const int XENMAPSPACE_gmfn = 2;
    /// <summary>A GMFN range (XENMEM_add_to_physmap only).</summary>
    public const int XENMAPSPACE_gmfn_range = 3;
    /// <summary>A GMFN of another domain (XENMEM_add_to_physmap_batch only).</summary>
    public const int XENMAPSPACE_gmfn_foreign = 4;
    /// <summary>A device MMIO region (Arm only).</summary>
    public const int XENMAPSPACE_dev_mmio = 5;
    /// <summary><see cref="xen_add_to_physmap.idx"/> bit with XENMAPSPACE_grant_table: a status frame, not a shared frame.</summary>
    public const uint XENMAPIDX_grant_table_status = 0x80000000;

    /// <summary><see cref="xen_mem_acquire_resource.type"/>: an ioreq server's pages (id = server id).</summary>
    public const int XENMEM_resource_ioreq_server = 0;
    /// <summary>Type: the grant table (id = <c>XENMEM_resource_grant_table_id_*</c>).</summary>
    public const int XENMEM_resource_grant_table = 1;
    /// <summary>Type: a vCPU's processor trace buffer.</summary>
    public const int XENMEM_resource_vmtrace_buf = 2;
    /// <summary>Grant table id: the shared entries.</summary>
    public const int XENMEM_resource_grant_table_id_shared = 0;
    /// <summary>Grant table id: the version 2 status frames.</summary>
    public const int XENMEM_resource_grant_table_id_status = 1;
    /// <summary>ioreq server frame: the buffered ioreq page.</summary>
    public const int XENMEM_resource_ioreq_server_frame_bufioreq = 0;

    /// <summary>ioreq server frame: the n-th synchronous ioreq page.</summary>
    public static ulong XENMEM_resource_ioreq_server_frame_ioreq(ulong n) => 1 + n;
}

/// <summary>XENMEM_increase_reservation, _decrease_reservation, _populate_physmap (and each half of an exchange).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_memory_reservation
{
    /// <summary>IN/OUT: guest handle to <c>xen_pfn_t[nr_extents]</c>, the extent bases.</summary>
    public ulong extent_start;
    /// <summary>IN: number of extents.</summary>
    public ulong nr_extents;
    /// <summary>IN: each extent is 2^extent_order pages.</summary>
    public uint extent_order;
    /// <summary>IN: <c>XENMEMF_*</c>.</summary>
    public uint mem_flags;
    /// <summary>IN: <c>DOMID_SELF</c> unless privileged.</summary>
    public ushort domid;
}

/// <summary>XENMEM_exchange: trade the extents of <c>in</c> for new ones in <c>out</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_memory_exchange
{
    /// <summary>IN: extents to give up (GMFN bases).</summary>
    public xen_memory_reservation @in;
    /// <summary>IN/OUT: GPFN bases to populate; overwritten with the new GMFNs.</summary>
    public xen_memory_reservation @out;
    /// <summary>OUT: input extents exchanged; the caller must zero it.</summary>
    public ulong nr_exchanged;
}

/// <summary>XENMEM_current_reservation, _maximum_reservation, _maximum_gpfn.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_memory_domain
{
    /// <summary>IN: the domain queried (may be <c>DOMID_SELF</c>).</summary>
    public ushort domid;
}

/// <summary>XENMEM_machphys_mfn_list: MFN bases of the M2P table's 2 MB extents (0 for holes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_machphys_mfn_list
{
    /// <summary>IN: size of the <c>extent_start</c> array.</summary>
    public uint max_extents;
    /// <summary>IN: guest handle to <c>xen_pfn_t[max_extents]</c>.</summary>
    public ulong extent_start;
    /// <summary>OUT: entries written.</summary>
    public uint nr_extents;
}

/// <summary>XENMEM_machphys_mapping: the guest virtual range of the M2P table.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_machphys_mapping
{
    /// <summary>OUT: start virtual address.</summary>
    public ulong v_start;
    /// <summary>OUT: end virtual address.</summary>
    public ulong v_end;
    /// <summary>OUT: the highest MFN that can be looked up.</summary>
    public ulong max_mfn;
}

/// <summary>XENMEM_add_to_physmap: make a page of <c>space</c> appear at <c>gpfn</c> (translated guests).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_add_to_physmap
{
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN: pages for XENMAPSPACE_gmfn_range.</summary>
    public ushort size;
    /// <summary>IN: <c>XENMAPSPACE_*</c>.</summary>
    public uint space;
    /// <summary>IN: index into the space (may carry <c>XENMAPIDX_*</c>).</summary>
    public ulong idx;
    /// <summary>IN: where the page appears in <c>domid</c>.</summary>
    public ulong gpfn;
}

/// <summary>The <c>u</c> of <see cref="xen_add_to_physmap_batch"/>.</summary>
[StructLayout(LayoutKind.Explicit)]
public struct xen_add_to_physmap_batch_extra
{
    /// <summary>XENMAPSPACE_gmfn_foreign: the source domain.</summary>
    [FieldOffset(0)] public ushort foreign_domid;
    /// <summary>All other spaces: must be 0.</summary>
    [FieldOffset(0)] public ushort res0;
}

/// <summary>XENMEM_add_to_physmap_batch.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_add_to_physmap_batch
{
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN: <c>XENMAPSPACE_*</c>.</summary>
    public ushort space;
    /// <summary>IN: number of pages.</summary>
    public ushort size;
    /// <summary>IN</summary>
    public xen_add_to_physmap_batch_extra u;
    /// <summary>IN: guest handle to <c>xen_ulong_t[size]</c>, indexes into the space.</summary>
    public ulong idxs;
    /// <summary>IN: guest handle to <c>xen_pfn_t[size]</c>.</summary>
    public ulong gpfns;
    /// <summary>OUT: guest handle to <c>int[size]</c>, per-index error codes.</summary>
    public ulong errs;
}

/// <summary>XENMEM_remove_from_physmap (translated guests).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_remove_from_physmap
{
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN: the GPFN currently mapping the page.</summary>
    public ulong gpfn;
}

/// <summary>XENMEM_memory_map and XENMEM_machine_memory_map: E820 entries.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_memory_map
{
    /// <summary>IN: capacity of <c>buffer</c>; OUT: entries stored.</summary>
    public uint nr_entries;
    /// <summary>IN: guest handle to E820 entries (as INT 0x15, EAX=0xE820).</summary>
    public ulong buffer;
}

/// <summary>XENMEM_set_memory_map.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_foreign_memory_map
{
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN</summary>
    public xen_memory_map map;
}

/// <summary>XENMEM_set_pod_target and XENMEM_get_pod_target.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_pod_target
{
    /// <summary>IN</summary>
    public ulong target_pages;
    /// <summary>OUT</summary>
    public ulong tot_pages;
    /// <summary>OUT</summary>
    public ulong pod_cache_pages;
    /// <summary>OUT</summary>
    public ulong pod_entries;
    /// <summary>IN</summary>
    public ushort domid;
}

/// <summary>XENMEM_acquire_resource: frames of a guest resource for a tools domain to map.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_mem_acquire_resource
{
    /// <summary>IN: the domain owning the resource.</summary>
    public ushort domid;
    /// <summary>IN: <c>XENMEM_resource_*</c>.</summary>
    public ushort type;
    /// <summary>IN: type-specific id, else 0.</summary>
    public uint id;
    /// <summary>IN/OUT: frames to map; with a NULL list and 0, returns the resource size.</summary>
    public uint nr_frames;
    /// <summary>Must be zero.</summary>
    public uint pad;
    /// <summary>IN: index of the first frame.</summary>
    public ulong frame;
    /// <summary>IN/OUT: guest handle to <c>xen_pfn_t[nr_frames]</c>.</summary>
    public ulong frame_list;
}

/// <summary>A vNUMA memory range.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_vmemrange
{
    public ulong start;
    public ulong end;
    public uint flags;
    /// <summary>The virtual node.</summary>
    public uint nid;
}

/// <summary>XENMEM_get_vnumainfo: the vNUMA topology; counts are corrected on return when too small.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_vnuma_topology_info
{
    /// <summary>IN</summary>
    public ushort domid;
    public ushort pad;
    /// <summary>IN/OUT</summary>
    public uint nr_vnodes;
    /// <summary>IN/OUT</summary>
    public uint nr_vcpus;
    /// <summary>IN/OUT</summary>
    public uint nr_vmemranges;
    /// <summary>OUT: guest handle to <c>uint[nr_vnodes * nr_vnodes]</c>.</summary>
    public Handle vdistance;
    /// <summary>OUT: guest handle to <c>uint[nr_vcpus]</c>.</summary>
    public Handle vcpu_to_vnode;
    /// <summary>OUT: guest handle to <see cref="xen_vmemrange"/>[nr_vmemranges].</summary>
    public Handle vmemrange;

    /// <summary>A guest handle padded to 64 bits.</summary>
    [StructLayout(LayoutKind.Explicit)]
    public struct Handle
    {
        [FieldOffset(0)] public ulong h;
        [FieldOffset(0)] public ulong pad;
    }
}
