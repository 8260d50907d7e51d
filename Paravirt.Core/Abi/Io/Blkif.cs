using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/blkif.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.
//
// The frontend [front] writes requests into the shared ring; the backend [back] writes responses
// into the same slots. blkif_vdev_t is uint16_t, blkif_sector_t is uint64_t, and sectors are
// 512 bytes unless "feature-large-sector-size" says otherwise.

/// <summary>Constants of <c>xen/io/blkif.h</c>: operations, limits, response statuses, <c>VDISK_*</c> info bits.</summary>
public static class Blkif
{
    public const int BLKIF_OP_READ = 0;
    public const int BLKIF_OP_WRITE = 1;
    /// <summary>All earlier writes complete before it, all later ones start after it. Optional ("feature-barrier").</summary>
    public const int BLKIF_OP_WRITE_BARRIER = 2;
    /// <summary>Commit the backing device's volatile cache to stable storage. Optional ("feature-flush-cache").</summary>
    public const int BLKIF_OP_FLUSH_DISKCACHE = 3;
    /// <summary>Reserved (SLES device-specific command packets).</summary>
    public const int BLKIF_OP_RESERVED_1 = 4;
    /// <summary>The region may be discarded (trim/unmap); the request is a <see cref="blkif_request_discard"/>. Optional ("feature-discard").</summary>
    public const int BLKIF_OP_DISCARD = 5;
    /// <summary>The request is a <see cref="blkif_request_indirect"/>; only if the backend wrote "feature-max-indirect-segments".</summary>
    public const int BLKIF_OP_INDIRECT = 6;

    /// <summary>Segments of a direct request; chosen so a ring of <see cref="blkif_request"/> fits one page.</summary>
    public const int BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
    /// <summary>Pages of <see cref="blkif_request_segment"/> arrays an indirect request may name.</summary>
    public const int BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;

    /// <summary><see cref="blkif_request_discard.flag"/>: make the discarded data unrecoverable (ignored if "discard-secure" is 0).</summary>
    public const int BLKIF_DISCARD_SECURE = 1 << 0;

    /// <summary><see cref="blkif_response.status"/>: not supported (only for barrier writes).</summary>
    public const int BLKIF_RSP_EOPNOTSUPP = -2;
    /// <summary>Failed for some unspecified reason (-EIO).</summary>
    public const int BLKIF_RSP_ERROR = -1;
    /// <summary>Completed successfully.</summary>
    public const int BLKIF_RSP_OKAY = 0;

    /// <summary>Bits of the "info" node: the virtual disk is a CD-ROM.</summary>
    public const int VDISK_CDROM = 0x1;
    /// <summary>The media is removable.</summary>
    public const int VDISK_REMOVABLE = 0x2;
    /// <summary>The disk is read-only.</summary>
    public const int VDISK_READONLY = 0x4;
}

/// <summary>One granted frame of a request, and the (inclusive) sector range within it. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct blkif_request_segment
{
    /// <summary>Grant reference to the I/O buffer frame.</summary>
    public uint gref;
    /// <summary>First sector in the frame to transfer (inclusive).</summary>
    public byte first_sect;
    /// <summary>Last sector in the frame to transfer (inclusive).</summary>
    public byte last_sect;
}

/// <summary>A ring request: read, write, barrier or flush, with its segments inline. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct blkif_request
{
    /// <summary><c>BLKIF_OP_*</c>.</summary>
    public byte operation;
    /// <summary>Number of segments.</summary>
    public byte nr_segments;
    /// <summary>The virtual device (only for read/write requests).</summary>
    public ushort handle;
    /// <summary>Private guest value, echoed in the response.</summary>
    public ulong id;
    /// <summary>Start sector on disk (read/write only).</summary>
    public ulong sector_number;
    public Segments seg;

    [InlineArray(Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST)]
    public struct Segments
    {
        private blkif_request_segment _element0;
    }
}

/// <summary>A request with <c>operation == BLKIF_OP_DISCARD</c>, cast over a <see cref="blkif_request"/>. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct blkif_request_discard
{
    /// <summary><c>BLKIF_OP_DISCARD</c>.</summary>
    public byte operation;
    /// <summary><c>BLKIF_DISCARD_SECURE</c> or zero.</summary>
    public byte flag;
    /// <summary>As for read/write requests.</summary>
    public ushort handle;
    /// <summary>Private guest value, echoed in the response.</summary>
    public ulong id;
    /// <summary>Start sector on disk.</summary>
    public ulong sector_number;
    /// <summary>Number of contiguous sectors to discard.</summary>
    public ulong nr_sectors;
}

/// <summary>
/// A request with <c>operation == BLKIF_OP_INDIRECT</c>: its segments live in granted pages of
/// <see cref="blkif_request_segment"/> arrays rather than in the ring. [front] writes.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct blkif_request_indirect
{
    /// <summary><c>BLKIF_OP_INDIRECT</c>.</summary>
    public byte operation;
    /// <summary><c>BLKIF_OP_READ</c> or <c>BLKIF_OP_WRITE</c>.</summary>
    public byte indirect_op;
    /// <summary>Number of segments.</summary>
    public ushort nr_segments;
    /// <summary>Private guest value, echoed in the response.</summary>
    public ulong id;
    /// <summary>Start sector on disk (read/write only).</summary>
    public ulong sector_number;
    /// <summary>As for read/write requests.</summary>
    public ushort handle;
    /// <summary>Grant references of the pages holding the segment arrays.</summary>
    public fixed uint indirect_grefs[Blkif.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
}

/// <summary>A ring response. [back] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct blkif_response
{
    /// <summary>Copied from the request.</summary>
    public ulong id;
    /// <summary>Copied from the request.</summary>
    public byte operation;
    /// <summary><c>BLKIF_RSP_*</c>.</summary>
    public short status;
}

/// <summary>One slot of the block ring: a request until the backend answers, then its response.</summary>
[StructLayout(LayoutKind.Explicit)]
public struct blkif_sring_entry
{
    /// <summary>[front] writes.</summary>
    [FieldOffset(0)] public blkif_request req;
    /// <summary>[back] writes.</summary>
    [FieldOffset(0)] public blkif_response rsp;
}

/// <summary>
/// The shared block ring page. C's <c>ring[1]</c> runs to the end of the page:
/// <see cref="Ring.RING_SIZE_blkif"/> entries in 4096 bytes; this twin holds the first.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct blkif_sring
{
    /// <summary>[front] Requests produced.</summary>
    public uint req_prod;
    /// <summary>[back] Notify the backend when <see cref="req_prod"/> passes this.</summary>
    public uint req_event;
    /// <summary>[back] Responses produced.</summary>
    public uint rsp_prod;
    /// <summary>[front] Notify the frontend when <see cref="rsp_prod"/> passes this.</summary>
    public uint rsp_event;
    public Ring.Pvt pvt;
    public fixed byte __pad[44];
    /// <summary>The first entry of the ring.</summary>
    public blkif_sring_entry ring;
}
