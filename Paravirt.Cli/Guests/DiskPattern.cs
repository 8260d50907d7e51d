using System.Buffers.Binary;

namespace Paravirt.Cli.Guests;

/// <summary>The bytes a guest writes to a disk, so the host can check them without the guest's help: a function of (seed, byte offset).</summary>
internal static class DiskPattern
{
    /// <summary>Fills <paramref name="buffer"/> with the pattern of disk bytes [<paramref name="offset"/>, + length); offset is 8-byte aligned.</summary>
    public static void Fill(Span<byte> buffer, long offset, ulong seed)
    {
        for (var i = 0; i + 8 <= buffer.Length; i += 8)
        {
            // splitmix64 of (seed, word index): no two words of a disk alike.
            var z = seed + (((ulong)(offset + i) >> 3) * 0x9E3779B97F4A7C15UL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            BinaryPrimitives.WriteUInt64LittleEndian(buffer[i..], z ^ (z >> 31));
        }
    }

    public static byte[] Make(int length, long offset, ulong seed)
    {
        var b = new byte[length];
        Fill(b, offset, seed);
        return b;
    }
}

/// <summary>A write–flush–read-back–compare on one disk, as a guest does it through its frontend.</summary>
internal static class BlockRoundtrip
{
    /// <summary>Writes <paramref name="bytes"/> of the pattern at <paramref name="offset"/>, flushes, reads them back; returns the first differing byte or -1.</summary>
    public static long Run(Paravirt.Guest.BlockFrontend disk, long offset, int bytes, ulong seed, GuestLedger? ledger)
    {
        var data = DiskPattern.Make(bytes, offset, seed);
        disk.Write(offset / disk.SectorSize, data);
        ledger?.CountBlockWritten(bytes);
        if (disk.SupportsFlush)
        {
            disk.Flush();
        }

        var back = new byte[bytes];
        disk.Read(offset / disk.SectorSize, back);
        ledger?.CountBlockRead(bytes);
        var same = back.AsSpan().CommonPrefixLength(data);
        return same == bytes ? -1 : offset + same;
    }
}
