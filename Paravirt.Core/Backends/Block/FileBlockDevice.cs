using Microsoft.Win32.SafeHandles;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// A disk in a file (<see cref="BlockDevice.OpenFile"/>), read and written with
/// <see cref="RandomAccess"/> at explicit offsets (no shared file position, so requests run
/// concurrently). A flush is <see cref="RandomAccess.FlushToDisk"/> (fsync); a discard writes zeros.
/// </summary>
public sealed class FileBlockDevice : IBlockDevice, ISynchronousBlockDevice
{
    private static readonly ReadOnlyMemory<byte> Zeros = new byte[64 * 1024];
    private readonly SafeFileHandle _handle;

    private FileBlockDevice(string path, SafeFileHandle handle, bool readOnly, int sectorSize, long sectors)
    {
        Path = path;
        _handle = handle;
        IsReadOnly = readOnly;
        SectorSize = sectorSize;
        SectorCount = sectors;
    }

    internal static FileBlockDevice Open(string path, bool writable, int sectorSize)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        BlockDevice.CheckSectorSize(sectorSize);
        var full = System.IO.Path.GetFullPath(path);
        var handle = File.OpenHandle(full, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read, FileShare.Read);
        try
        {
            var sectors = RandomAccess.GetLength(handle) / sectorSize;
            if (sectors == 0)
            {
                throw new ArgumentException($"'{full}' is smaller than one {sectorSize}-byte sector; a disk needs at least one", nameof(path));
            }

            return new FileBlockDevice(full, handle, !writable, sectorSize, sectors);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The file's full path (what the backend advertises as <c>params</c>).</summary>
    public string Path { get; }

    public int SectorSize { get; }

    public int PhysicalSectorSize => SectorSize;

    public long SectorCount { get; }

    public bool IsReadOnly { get; }

    public bool SupportsDiscard => !IsReadOnly;

    public async ValueTask ReadAsync(long sector, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckRange(this, sector, destination.Length);
        var offset = sector * SectorSize;
        while (!destination.IsEmpty)
        {
            var n = await RandomAccess.ReadAsync(_handle, destination, offset, cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                throw new IOException($"'{Path}' ended at byte {offset}, inside the disk of {SectorCount} sectors (was it truncated?)");
            }

            destination = destination[n..];
            offset += n;
        }
    }

    void ISynchronousBlockDevice.Read(long sector, Span<byte> destination)
    {
        BlockDevice.CheckRange(this, sector, destination.Length);
        var offset = sector * SectorSize;
        while (!destination.IsEmpty)
        {
            var n = RandomAccess.Read(_handle, destination, offset);
            if (n == 0)
            {
                throw new IOException($"'{Path}' ended at byte {offset}, inside the disk of {SectorCount} sectors (was it truncated?)");
            }

            destination = destination[n..];
            offset += n;
        }
    }

    void ISynchronousBlockDevice.Write(long sector, ReadOnlySpan<byte> source)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckRange(this, sector, source.Length);
        RandomAccess.Write(_handle, source, sector * SectorSize);
    }

    public ValueTask WriteAsync(long sector, ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckRange(this, sector, source.Length);
        return RandomAccess.WriteAsync(_handle, source, sector * SectorSize, cancellationToken);
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        RandomAccess.FlushToDisk(_handle);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DiscardAsync(long sector, long count, CancellationToken cancellationToken = default)
    {
        BlockDevice.CheckWritable(this);
        BlockDevice.CheckSectors(this, sector, count);
        var offset = sector * SectorSize;
        var left = count * SectorSize;
        while (left > 0)
        {
            var chunk = (int)Math.Min(left, Zeros.Length);
            await RandomAccess.WriteAsync(_handle, Zeros[..chunk], offset, cancellationToken).ConfigureAwait(false);
            offset += chunk;
            left -= chunk;
        }
    }

    public void Dispose() => _handle.Dispose();
}
