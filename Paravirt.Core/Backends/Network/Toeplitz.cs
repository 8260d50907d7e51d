namespace Paravirt.Core.Backends.Network;

/// <summary>
/// The Toeplitz hash (io/netif.h's XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, Microsoft's RSS hash):
/// for every bit of the input, most significant first, that is set, the 32 key bits starting at
/// that bit's position are XORed into the result. Key bits past the key's end are zero.
/// </summary>
internal static class Toeplitz
{
    public static uint Hash(ReadOnlySpan<byte> key, ReadOnlySpan<byte> input)
    {
        // The window holds key bits [i, i + 64) for input bit i; its top 32 bits are what bit i XORs in.
        ulong window = 0;
        for (var k = 0; k < 8; k++)
        {
            window = (window << 8) | KeyByte(key, k);
        }

        uint result = 0;
        for (var i = 0; i < input.Length; i++)
        {
            var b = input[i];
            for (var bit = 7; bit >= 0; bit--)
            {
                if ((b >> bit & 1) != 0)
                {
                    result ^= (uint)(window >> 32);
                }

                window <<= 1;
            }

            window |= KeyByte(key, i + 8);
        }

        return result;
    }

    private static byte KeyByte(ReadOnlySpan<byte> key, int i) => (uint)i < (uint)key.Length ? key[i] : (byte)0;
}
