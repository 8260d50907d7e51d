using Paravirt.Core.Abi.Io;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// One request in flight: the copy taken from the ring (validated and used, never re-read from
/// the guest), its segments (copied out of the request, or out of an indirect request's granted
/// pages, once), what validation worked out, how each segment's grant is held when the ring
/// maps persistent grants, and a bounce buffer for its data. A ring has as many slots as entries,
/// so at most a ring of requests is in flight. The buffer starts at 11 pages and grows (to a
/// power of two of pages, at most <see cref="BlkBack.MaxIndirectSegments"/>) the first time the
/// slot serves a larger request, and is kept: after that no request allocates.
/// </summary>
internal sealed class BlkifRequestSlot : IThreadPoolWorkItem
{
    public const int InitialBufferBytes = Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST * MachineMemory.PageSize;

    public const int MaxBufferBytes = BlkBack.MaxIndirectSegments * MachineMemory.PageSize;

    private readonly BlkifRing _ring;
    private int _copyOffset;
    private long _diskSector;

    public BlkifRequestSlot(BlkifRing ring, bool mapsGrants)
    {
        _ring = ring;
        Mappings = mapsGrants ? new SegmentMapping[BlkBack.MaxIndirectSegments] : null;
        ToGuest = window => Buffer.AsSpan(_copyOffset, window.Length).CopyTo(window);
        FromGuest = window => window.CopyTo(Buffer.AsSpan(_copyOffset, window.Length));
        if (ring.SynchronousDevice is { } disk)
        {
            DiskToGuest = window => disk.Read(_diskSector, window);
        }
    }

    /// <summary>The request as copied out of the ring, once.</summary>
    public blkif_request Request;

    /// <summary>The operation carried out and answered: the request's, or an indirect request's <c>indirect_op</c> (as blkback answers it).</summary>
    public byte Operation;

    /// <summary>Segments in <see cref="Segments"/> (validated).</summary>
    public int SegmentCount;

    /// <summary>First disk sector (validated).</summary>
    public long Sector;

    /// <summary>Sectors the segments (or a discard) cover (validated).</summary>
    public long Sectors;

    /// <summary>True while <see cref="Mappings"/> holds the segments' grants (released when the request is answered).</summary>
    public bool Mapped;

    /// <summary>The request's segments, in disk order: the inline ones or those of its indirect pages.</summary>
    public blkif_request_segment[] Segments { get; } = new blkif_request_segment[BlkBack.MaxIndirectSegments];

    /// <summary>With persistent grants: how each segment's grant is held (null when the ring copies instead).</summary>
    public SegmentMapping[]? Mappings { get; }

    /// <summary>The segments' data, back to back, in disk order (at least <see cref="EnsureBuffer"/>'s bytes).</summary>
    public byte[] Buffer { get; private set; } = new byte[InitialBufferBytes];

    /// <summary>Grant-copy transfers between <see cref="Buffer"/> at <see cref="At"/> and the granted page (made once per slot).</summary>
    public FrameAction ToGuest { get; }

    public FrameAction FromGuest { get; }

    /// <summary>
    /// For a <see cref="ISynchronousBlockDevice"/>: a grant copy whose source is the disk, read at
    /// <see cref="AtSector"/> straight into the granted page (made once per slot).
    /// </summary>
    public FrameAction? DiskToGuest { get; }

    /// <summary>Makes <see cref="Buffer"/> hold at least <paramref name="bytes"/> (at most <see cref="MaxBufferBytes"/>, as validation allows).</summary>
    public byte[] EnsureBuffer(int bytes)
    {
        if (Buffer.Length < bytes)
        {
            Buffer = new byte[Math.Min(MaxBufferBytes, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)bytes))];
        }

        return Buffer;
    }

    /// <summary>Which disk sector <see cref="DiskToGuest"/> reads next.</summary>
    public BlkifRequestSlot AtSector(long sector)
    {
        _diskSector = sector;
        return this;
    }

    /// <summary>Where in <see cref="Buffer"/> the next grant copy goes.</summary>
    public BlkifRequestSlot At(int offset)
    {
        _copyOffset = offset;
        return this;
    }

    public void Execute() => _ring.Execute(this);
}
