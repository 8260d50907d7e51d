namespace Paravirt.Core.Backends.Block;

/// <summary>
/// A disk a block backend serves: a run of <see cref="SectorCount"/> logical sectors of
/// <see cref="SectorSize"/> bytes. Callers (the backend) pass whole sectors inside the disk; an
/// implementation still checks and throws <see cref="ArgumentOutOfRangeException"/> otherwise.
/// I/O failures are exceptions (the backend answers them with <c>BLKIF_RSP_ERROR</c>). Requests
/// may run concurrently, as on a real disk: overlapping requests in flight at once see each other
/// in no particular order.
/// </summary>
public interface IBlockDevice : IDisposable
{
    /// <summary>Logical sector size in bytes: a power of two from 512 to 4096.</summary>
    int SectorSize { get; }

    /// <summary>Physical sector size in bytes: a multiple of <see cref="SectorSize"/>.</summary>
    int PhysicalSectorSize { get; }

    /// <summary>Size of the disk in <see cref="SectorSize"/> sectors.</summary>
    long SectorCount { get; }

    /// <summary>True if writes and discards are refused.</summary>
    bool IsReadOnly { get; }

    /// <summary>True if <see cref="DiscardAsync"/> is supported (then discarded sectors read back as zeros).</summary>
    bool SupportsDiscard { get; }

    /// <summary>Reads <c>destination.Length / SectorSize</c> sectors from <paramref name="sector"/>.</summary>
    ValueTask ReadAsync(long sector, Memory<byte> destination, CancellationToken cancellationToken = default);

    /// <summary>Writes <c>source.Length / SectorSize</c> sectors at <paramref name="sector"/>.</summary>
    ValueTask WriteAsync(long sector, ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default);

    /// <summary>Makes every completed write durable (a disk's cache flush; fsync for a file).</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Forgets <paramref name="count"/> sectors from <paramref name="sector"/> (trim); they read back as zeros.</summary>
    ValueTask DiscardAsync(long sector, long count, CancellationToken cancellationToken = default);
}
