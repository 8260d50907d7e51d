using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/grant_table.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/grant_table.h</c>: <c>GNTTABOP_*</c> sub-ops, entry flags, map flags, statuses.</summary>
public static class GrantTable
{
    // enum grant_table_op: HYPERVISOR_grant_table_op(cmd, args, count) takes an array of count arguments.
    public const int GNTTABOP_map_grant_ref = 0;
    public const int GNTTABOP_unmap_grant_ref = 1;
    public const int GNTTABOP_setup_table = 2;
    public const int GNTTABOP_dump_table = 3;
    public const int GNTTABOP_transfer = 4;
    public const int GNTTABOP_copy = 5;
    public const int GNTTABOP_query_size = 6;
    public const int GNTTABOP_unmap_and_replace = 7;
    public const int GNTTABOP_set_version = 8;
    public const int GNTTABOP_get_status_frames = 9;
    public const int GNTTABOP_get_version = 10;
    public const int GNTTABOP_swap_grant_ref = 11;
    public const int GNTTABOP_cache_flush = 12;

    /// <summary>The first entries survive grant table version changes and may be filled in by the tools at domain creation.</summary>
    public const int GNTTAB_NR_RESERVED_ENTRIES = 8;
    /// <summary>Reserved entry granting the console ring page to the console backend.</summary>
    public const int GNTTAB_RESERVED_CONSOLE = 0;
    /// <summary>Reserved entry granting the xenstore ring page to xenstored.</summary>
    public const int GNTTAB_RESERVED_XENSTORE = 1;

    /// <summary><see cref="grant_entry_v1.flags"/> type: the entry grants nothing.</summary>
    public const uint GTF_invalid = 0u << 0;
    /// <summary>Type: <c>domid</c> may map and access <c>frame</c>.</summary>
    public const uint GTF_permit_access = 1u << 0;
    /// <summary>Type: <c>domid</c> may transfer one page to this guest; Xen writes its number to <c>frame</c>.</summary>
    public const uint GTF_accept_transfer = 2u << 0;
    /// <summary>Type: <c>domid</c> may use a subrange of another domain's grant (copy only, no mapping).</summary>
    public const uint GTF_transitive = 3u << 0;
    /// <summary>The type bits of the flags.</summary>
    public const uint GTF_type_mask = 3u << 0;

    public const int _GTF_readonly = 2;
    /// <summary>[GST] restrict <c>domid</c> to read-only mappings and accesses.</summary>
    public const uint GTF_readonly = 1u << _GTF_readonly;
    public const int _GTF_reading = 3;
    /// <summary>[XEN] the entry is currently mapped for reading.</summary>
    public const uint GTF_reading = 1u << _GTF_reading;
    public const int _GTF_writing = 4;
    /// <summary>[XEN] the entry is currently mapped for writing.</summary>
    public const uint GTF_writing = 1u << _GTF_writing;
    public const int _GTF_PWT = 5;
    /// <summary>[GST] x86 cache attribute (write-through) for mappings of the grant.</summary>
    public const uint GTF_PWT = 1u << _GTF_PWT;
    public const int _GTF_PCD = 6;
    /// <summary>[GST] x86 cache attribute (cache disable) for mappings of the grant.</summary>
    public const uint GTF_PCD = 1u << _GTF_PCD;
    public const int _GTF_PAT = 7;
    /// <summary>[GST] x86 cache attribute (PAT) for mappings of the grant.</summary>
    public const uint GTF_PAT = 1u << _GTF_PAT;
    public const int _GTF_sub_page = 8;
    /// <summary>[GST] grant only a subrange of the page; <c>domid</c> may copy, not map.</summary>
    public const uint GTF_sub_page = 1u << _GTF_sub_page;

    public const int _GTF_transfer_committed = 2;
    /// <summary>[XEN] Xen is committed to the transfer; the guest must not touch the entry until completed.</summary>
    public const uint GTF_transfer_committed = 1u << _GTF_transfer_committed;
    public const int _GTF_transfer_completed = 3;
    /// <summary>[XEN] the transferred frame's number has been written to <c>frame</c>.</summary>
    public const uint GTF_transfer_completed = 1u << _GTF_transfer_completed;

    public const int _GNTCOPY_source_gref = 0;
    /// <summary><see cref="gnttab_copy.flags"/>: <c>source.u.ref</c> is a grant reference (else <c>source.u.gmfn</c> is a frame).</summary>
    public const int GNTCOPY_source_gref = 1 << _GNTCOPY_source_gref;
    public const int _GNTCOPY_dest_gref = 1;
    /// <summary><see cref="gnttab_copy.flags"/>: <c>dest.u.ref</c> is a grant reference (else <c>dest.u.gmfn</c> is a frame).</summary>
    public const int GNTCOPY_dest_gref = 1 << _GNTCOPY_dest_gref;

    /// <summary><see cref="gnttab_cache_flush.op"/>: clean the cache lines.</summary>
    public const uint GNTTAB_CACHE_CLEAN = 1u << 0;
    /// <summary><see cref="gnttab_cache_flush.op"/>: invalidate the cache lines.</summary>
    public const uint GNTTAB_CACHE_INVAL = 1u << 1;
    /// <summary><see cref="gnttab_cache_flush.op"/>: <c>a.ref</c> is a grant reference (else <c>a.dev_bus_addr</c>).</summary>
    public const uint GNTTAB_CACHE_SOURCE_GREF = 1u << 31;

    public const int _GNTMAP_device_map = 0;
    /// <summary><see cref="gnttab_map_grant_ref.flags"/>: map for access by I/O devices.</summary>
    public const int GNTMAP_device_map = 1 << _GNTMAP_device_map;
    public const int _GNTMAP_host_map = 1;
    /// <summary>Map for access by host CPUs.</summary>
    public const int GNTMAP_host_map = 1 << _GNTMAP_host_map;
    public const int _GNTMAP_readonly = 2;
    /// <summary>Restrict the mapping to read-only access.</summary>
    public const int GNTMAP_readonly = 1 << _GNTMAP_readonly;
    public const int _GNTMAP_application_map = 3;
    /// <summary>With <see cref="GNTMAP_host_map"/>: the mapping is usable by the current application too, not only the guest OS.</summary>
    public const int GNTMAP_application_map = 1 << _GNTMAP_application_map;
    public const int _GNTMAP_contains_pte = 4;
    /// <summary><c>host_addr</c> is the machine address of the PTE to update, not a virtual address.</summary>
    public const int GNTMAP_contains_pte = 1 << _GNTMAP_contains_pte;
    public const int _GNTMAP_guest_avail0 = 16;
    /// <summary>Bits for the guest-available PTE bits (only with <c>XENFEAT_gnttab_map_avail_bits</c>).</summary>
    public const uint GNTMAP_guest_avail_mask = 0xFFFFFFFFu << _GNTMAP_guest_avail0;

    // enum grant_status: the status field of each argument; all errors are negative.
    /// <summary>Normal return.</summary>
    public const int GNTST_okay = 0;
    /// <summary>General undefined error.</summary>
    public const int GNTST_general_error = -1;
    /// <summary>Unrecognised domain id.</summary>
    public const int GNTST_bad_domain = -2;
    /// <summary>Unrecognised or inappropriate grant reference.</summary>
    public const int GNTST_bad_gntref = -3;
    /// <summary>Unrecognised or inappropriate handle.</summary>
    public const int GNTST_bad_handle = -4;
    /// <summary>Inappropriate virtual address to map.</summary>
    public const int GNTST_bad_virt_addr = -5;
    /// <summary>Inappropriate device address to unmap.</summary>
    public const int GNTST_bad_dev_addr = -6;
    /// <summary>Out of space in the I/O MMU.</summary>
    public const int GNTST_no_device_space = -7;
    /// <summary>Not enough privilege for the operation.</summary>
    public const int GNTST_permission_denied = -8;
    /// <summary>The page was invalid for the operation.</summary>
    public const int GNTST_bad_page = -9;
    /// <summary>Copy arguments cross a page boundary.</summary>
    public const int GNTST_bad_copy_arg = -10;
    /// <summary>Transfer page address too large.</summary>
    public const int GNTST_address_too_big = -11;
    /// <summary>Operation not done; try again.</summary>
    public const int GNTST_eagain = -12;
    /// <summary>Out of space (handles etc.).</summary>
    public const int GNTST_no_space = -13;
}

/// <summary>A version 1 grant table entry, in the pages shared between Xen and the granting guest.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct grant_entry_v1
{
    /// <summary>[XEN,GST] <c>GTF_*</c> type and flags; written last when introducing an entry.</summary>
    public ushort flags;
    /// <summary>[GST] the domain being granted foreign privileges.</summary>
    public ushort domid;
    /// <summary>[GST] the GFN granted or to transfer into; [XEN] the transferred MFN once completed.</summary>
    public uint frame;
}

/// <summary>The prefix version 1 and version 2 entries share (fields as in <see cref="grant_entry_v1"/>).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct grant_entry_header
{
    /// <summary>[XEN,GST] <c>GTF_*</c>.</summary>
    public ushort flags;
    /// <summary>[GST]</summary>
    public ushort domid;
}

/// <summary>A version 2 grant table entry: 16 bytes, read according to <c>hdr.flags</c>.</summary>
[StructLayout(LayoutKind.Explicit)]
public unsafe struct grant_entry_v2
{
    [FieldOffset(0)] public grant_entry_header hdr;
    /// <summary>Full-page grants: <c>GTF_accept_transfer</c>, or <c>GTF_permit_access</c> without <c>GTF_sub_page</c>.</summary>
    [FieldOffset(0)] public FullPage full_page;
    /// <summary><c>GTF_permit_access</c> with <c>GTF_sub_page</c>: bytes [page_off, page_off+length) of frame.</summary>
    [FieldOffset(0)] public SubPage sub_page;
    /// <summary><c>GTF_transitive</c>: use grant <c>gref</c> of <c>trans_domid</c> as if local (no mapping).</summary>
    [FieldOffset(0)] public Transitive transitive;
    /// <summary>Pads the entry to a power of two.</summary>
    [FieldOffset(0)] public fixed uint __spacer[4];

    [StructLayout(LayoutKind.Sequential)]
    public struct FullPage
    {
        public grant_entry_header hdr;
        public uint pad0;
        /// <summary>[GST] as <see cref="grant_entry_v1.frame"/>.</summary>
        public ulong frame;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SubPage
    {
        public grant_entry_header hdr;
        /// <summary>[GST]</summary>
        public ushort page_off;
        /// <summary>[GST]</summary>
        public ushort length;
        /// <summary>[GST]</summary>
        public ulong frame;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Transitive
    {
        public grant_entry_header hdr;
        /// <summary>[GST]</summary>
        public ushort trans_domid;
        public ushort pad0;
        /// <summary>[GST]</summary>
        public uint gref;
    }
}

/// <summary>GNTTABOP_map_grant_ref: map grant (dom, ref) for host and/or device access.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_map_grant_ref
{
    /// <summary>IN: virtual address, or PTE machine address with <c>GNTMAP_contains_pte</c>.</summary>
    public ulong host_addr;
    /// <summary>IN: <c>GNTMAP_*</c>.</summary>
    public uint flags;
    /// <summary>IN</summary>
    public uint @ref;
    /// <summary>IN</summary>
    public ushort dom;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
    /// <summary>OUT: tracks the mapping for unmapping.</summary>
    public uint handle;
    /// <summary>OUT: with <c>GNTMAP_device_map</c>, the address devices use.</summary>
    public ulong dev_bus_addr;
}

/// <summary>GNTTABOP_unmap_grant_ref: destroy mappings tracked by <c>handle</c> (zero addresses are ignored).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_unmap_grant_ref
{
    /// <summary>IN</summary>
    public ulong host_addr;
    /// <summary>IN</summary>
    public ulong dev_bus_addr;
    /// <summary>IN</summary>
    public uint handle;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_setup_table: size the grant table of <c>dom</c> and return its frames.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_setup_table
{
    /// <summary>IN: <c>DOMID_SELF</c> unless privileged.</summary>
    public ushort dom;
    /// <summary>IN: at least this many frames.</summary>
    public uint nr_frames;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
    /// <summary>OUT: guest handle to <c>xen_pfn_t[nr_frames]</c>.</summary>
    public ulong frame_list;
}

/// <summary>GNTTABOP_dump_table: dump the grant table to the Xen console (debugging).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_dump_table
{
    /// <summary>IN</summary>
    public ushort dom;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_transfer: give page <c>mfn</c> to a domain that offered (domid, ref). PV only.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_transfer
{
    /// <summary>IN</summary>
    public ulong mfn;
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN</summary>
    public uint @ref;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>One end of a <see cref="gnttab_copy"/>: a grant reference or a frame, with domain and offset.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_copy_ptr
{
    /// <summary>IN: <c>ref</c> with <c>GNTCOPY_*_gref</c>, else <c>gmfn</c>.</summary>
    public U u;
    /// <summary>IN</summary>
    public ushort domid;
    /// <summary>IN: byte offset within the frame.</summary>
    public ushort offset;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        [FieldOffset(0)] public uint @ref;
        [FieldOffset(0)] public ulong gmfn;
    }
}

/// <summary>GNTTABOP_copy: Xen copies <c>len</c> bytes between frames or grants.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_copy
{
    /// <summary>IN</summary>
    public gnttab_copy_ptr source;
    /// <summary>IN</summary>
    public gnttab_copy_ptr dest;
    /// <summary>IN: bytes; neither end may cross a page boundary.</summary>
    public ushort len;
    /// <summary>IN: <c>GNTCOPY_*</c>.</summary>
    public ushort flags;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_query_size: current and maximum grant table frames of <c>dom</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_query_size
{
    /// <summary>IN</summary>
    public ushort dom;
    /// <summary>OUT</summary>
    public uint nr_frames;
    /// <summary>OUT</summary>
    public uint max_nr_frames;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_unmap_and_replace: unmap <c>handle</c> and atomically put the PTE of <c>new_addr</c> in its place.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_unmap_and_replace
{
    /// <summary>IN</summary>
    public ulong host_addr;
    /// <summary>IN: redirected to the null entry.</summary>
    public ulong new_addr;
    /// <summary>IN</summary>
    public uint handle;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_set_version: switch the table format (1 or 2) while no grants are active.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_set_version
{
    /// <summary>IN/OUT</summary>
    public uint version;
}

/// <summary>GNTTABOP_get_status_frames: the frames of the version 2 status array of <c>dom</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_get_status_frames
{
    /// <summary>IN: length of <c>frame_list</c>.</summary>
    public uint nr_frames;
    /// <summary>IN</summary>
    public ushort dom;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
    /// <summary>OUT: guest handle to <c>uint64_t[nr_frames]</c>.</summary>
    public ulong frame_list;
}

/// <summary>GNTTABOP_get_version: the grant table version in effect for <c>dom</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_get_version
{
    /// <summary>IN</summary>
    public ushort dom;
    public ushort pad;
    /// <summary>OUT</summary>
    public uint version;
}

/// <summary>GNTTABOP_swap_grant_ref: swap the contents of two grant entries.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_swap_grant_ref
{
    /// <summary>IN</summary>
    public uint ref_a;
    /// <summary>IN</summary>
    public uint ref_b;
    /// <summary>OUT: <c>GNTST_*</c>.</summary>
    public short status;
}

/// <summary>GNTTABOP_cache_flush: cache maintenance on part of a page granted to the caller.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct gnttab_cache_flush
{
    /// <summary>IN: <c>ref</c> with <c>GNTTAB_CACHE_SOURCE_GREF</c>, else <c>dev_bus_addr</c>.</summary>
    public A a;
    /// <summary>IN: offset from the start of the grant.</summary>
    public ushort offset;
    /// <summary>IN: size within the grant.</summary>
    public ushort length;
    /// <summary>IN: <c>GNTTAB_CACHE_*</c>.</summary>
    public uint op;

    [StructLayout(LayoutKind.Explicit)]
    public struct A
    {
        [FieldOffset(0)] public ulong dev_bus_addr;
        [FieldOffset(0)] public uint @ref;
    }
}
