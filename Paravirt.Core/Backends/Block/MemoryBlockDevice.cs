namespace Paravirt.Core.Backends.Block;

/// <summary>A disk in a byte array the host owns (<see cref="BlockDevice.InMemory(byte[], bool, int)"/>). Every operation completes synchronously.</summary>
public sealed class MemoryBlockDevice : IBlockDevice, ISynchronousBlockDevice
{
    private readonly byte[] _bytes;

    internal MemoryBlockDevice(byte[] bytes, bool readOnly, int sectorSize)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        BlockDevice.CheckSectorSize(sectorSize);
        if (bytes.Length == 0 || bytes.Length % sectorSize != 0)
        {
            throw new ArgumentException($"an in-memory disk is a whole, non-zero number of {sectorSize}-byte sectors; {bytes.Length} bytes is not", nameof(bytes));
        }

        _bytes = bytes;
        IsReadOnly = readOnly;
        SectorSize = sectorSize;
    }

    public int SectorSize { get; }

    public int PhysicalSectorSize => SectorSize;

    public long SectorCount => _bytes.Length / SectorSize;

    public bool IsReadOnly { get; }

    public bool SupportsDiscard => !IsReadOnly;

    /// <summary>The disk's bytes (the array it was made over).</summary>
    public Memory<byte> Bytes => _bytes;

    /// <summary>Flushes done (nothing to flush in memory; counted for the host).</summary>
    public long Flushes => Interlocked.Read(ref _flushes);

    private long _flushes;

    public ValueTask ReadAsync(long sector, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckRange(this, sector, destination.Length);
        _bytes.AsSpan((int)(sector * SectorSize), destination.Length).CopyTo(destination.Span);
        return ValueTask.CompletedTask;
    }

    void ISynchronousBlockDevice.Read(long sector, Span<byte> destination)
    {
        BlockDevice.CheckRange(this, sector, destination.Length);
        _bytes.AsSpan((int)(sector * SectorSize), destination.Length).CopyTo(destination);
    }

    void ISynchronousBlockDevice.Write(long sector, ReadOnlySpan<byte> source)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckRange(this, sector, source.Length);
        source.CopyTo(_bytes.AsSpan((int)(sector * SectorSize), source.Length));
    }

    public ValueTask WriteAsync(long sector, ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckRange(this, sector, source.Length);
        source.Span.CopyTo(_bytes.AsSpan((int)(sector * SectorSize), source.Length));
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        Interlocked.Increment(ref _flushes);
        return ValueTask.CompletedTask;
    }

    public ValueTask DiscardAsync(long sector, long count, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckSectors(this, sector, count);
        _bytes.AsSpan((int)(sector * SectorSize), (int)(count * SectorSize)).Clear();
        return ValueTask.CompletedTask;
    }

    public void Dispose()
    {
    }
}
