using Paravirt.Core.Abi.Io;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// One request in flight: the copy taken from the ring (validated and used, never re-read from
/// the guest), what validation worked out, and a bounce buffer for all its segments. A
/// connection has as many slots as its ring has entries, so at most a ring of requests is in
/// flight and no request allocates.
/// </summary>
internal sealed class BlkifRequestSlot : IThreadPoolWorkItem
{
    public const int BufferBytes = Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST * MachineMemory.PageSize;

    private readonly BlkifConnection _connection;
    private int _copyOffset;

    public BlkifRequestSlot(BlkifConnection connection)
    {
        _connection = connection;
        ToGuest = window => Buffer.AsSpan(_copyOffset, window.Length).CopyTo(window);
        FromGuest = window => window.CopyTo(Buffer.AsSpan(_copyOffset, window.Length));
        if (connection.SynchronousDevice is { } disk)
        {
            DiskToGuest = window => disk.Read(_diskSector, window);
        }
    }

    /// <summary>The request as copied out of the ring, once.</summary>
    public blkif_request Request;

    /// <summary>First disk sector (validated).</summary>
    public long Sector;

    /// <summary>Sectors the segments (or a discard) cover (validated).</summary>
    public long Sectors;

    /// <summary>The segments' data, back to back, in disk order.</summary>
    public byte[] Buffer { get; } = new byte[BufferBytes];

    /// <summary>Grant-copy transfers between <see cref="Buffer"/> at <see cref="At"/> and the granted page (made once per slot).</summary>
    public FrameAction ToGuest { get; }

    public FrameAction FromGuest { get; }

    /// <summary>
    /// For a <see cref="ISynchronousBlockDevice"/>: a grant copy whose source is the disk, read at
    /// <see cref="AtSector"/> straight into the granted page (made once per slot).
    /// </summary>
    public FrameAction? DiskToGuest { get; }

    private long _diskSector;

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

    public void Execute() => _connection.Execute(this);
}
