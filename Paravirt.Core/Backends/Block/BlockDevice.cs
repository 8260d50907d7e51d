namespace Paravirt.Core.Backends.Block;

/// <summary>Ready-made <see cref="IBlockDevice"/>s: a file (or block special file) and an array in memory.</summary>
public static class BlockDevice
{
    /// <summary>
    /// Opens the file at <paramref name="path"/> as a disk of <c>length / sectorSize</c> sectors (a
    /// partial last sector is not part of the disk). Read-only unless <paramref name="writable"/>.
    /// </summary>
    public static FileBlockDevice OpenFile(string path, bool writable, int sectorSize = 512) => FileBlockDevice.Open(path, writable, sectorSize);

    /// <summary>
    /// A disk over <paramref name="bytes"/> itself (not a copy: the host sees every write at once).
    /// Its length must be a whole number of sectors.
    /// </summary>
    public static MemoryBlockDevice InMemory(byte[] bytes, bool readOnly = false, int sectorSize = 512) => new(bytes, readOnly, sectorSize);

    /// <summary>A zero-filled disk of <paramref name="sectors"/> sectors.</summary>
    public static MemoryBlockDevice InMemory(int sectors, int sectorSize = 512)
    {
        CheckSectorSize(sectorSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sectors);
        return new MemoryBlockDevice(new byte[checked(sectors * sectorSize)], readOnly: false, sectorSize);
    }

    internal static void CheckSectorSize(int sectorSize)
    {
        if (sectorSize is < 512 or > 4096 || (sectorSize & (sectorSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(sectorSize), sectorSize, "a sector size is a power of two from 512 to 4096 bytes");
        }
    }

    /// <summary>Checks a request against the disk: whole sectors, inside it.</summary>
    internal static void CheckRange(IBlockDevice device, long sector, long bytes)
    {
        if (bytes % device.SectorSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"a transfer is a whole number of {device.SectorSize}-byte sectors");
        }

        CheckSectors(device, sector, bytes / device.SectorSize);
    }

    internal static void CheckSectors(IBlockDevice device, long sector, long count)
    {
        if (sector < 0 || count < 0 || sector > device.SectorCount || count > device.SectorCount - sector)
        {
            throw new ArgumentOutOfRangeException(nameof(sector), sector, $"sectors {sector}+{count} are not inside the disk of {device.SectorCount} sectors");
        }
    }

    internal static void CheckWritable(IBlockDevice device)
    {
        if (device.IsReadOnly)
        {
            throw new InvalidOperationException("the disk is read-only");
        }
    }
}
