using System.Buffers.Binary;

namespace Paravirt.Tests.Guest.Block;

/// <summary>
/// A deterministic byte pattern by disk offset: each aligned 8-byte word is a mix (splitmix64) of
/// its offset and a seed, so any slice can be generated on its own, by the guest and the host alike.
/// </summary>
internal static class BlockPattern
{
    public static void Fill(Span<byte> destination, long offset, ulong seed)
    {
        if (offset % 8 != 0 || destination.Length % 8 != 0)
        {
            throw new ArgumentException("the pattern is made of aligned 8-byte words");
        }

        for (var i = 0; i < destination.Length; i += 8)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(destination[i..], Mix((ulong)(offset + i) ^ seed));
        }
    }

    public static byte[] Make(int length, long offset, ulong seed)
    {
        var b = new byte[length];
        Fill(b, offset, seed);
        return b;
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }
}
