using System.Buffers.Binary;
using Paravirt.Core.Backends.Network;

namespace Paravirt.Tests.Backends.Network;

/// <summary>
/// Ethernet/IPv4/IPv6/TCP/UDP frames for tests, and checks of their checksums computed here from
/// scratch, byte pair by byte pair (RFC 1071), independently of the backend's own code.
/// </summary>
public static class TestPackets
{
    public const byte Fin = 0x01, Syn = 0x02, Psh = 0x08, Ack = 0x10, Cwr = 0x80;

    public static readonly byte[] Ip4A = [10, 0, 0, 1], Ip4B = [10, 0, 0, 2];

    public static readonly byte[] Ip6A = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    public static readonly byte[] Ip6B = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// <summary>How a frame's transport checksum field is left.</summary>
    public enum Csum
    {
        /// <summary>The full checksum.</summary>
        Full,

        /// <summary>The folded pseudo-header sum (what a sender leaves with NETTXF_csum_blank).</summary>
        Partial,

        /// <summary>Zero.</summary>
        Zero,
    }

    /// <summary>A payload pattern: byte i of flow <paramref name="seed"/>.</summary>
    public static byte PayloadByte(int seed, int i) => (byte)((i * 7) + (seed * 13) + (i >> 8));

    /// <summary>An Ethernet + IPv4/IPv6 + TCP frame with a 12-byte TCP option block (timestamps-sized) and <paramref name="payload"/> pattern bytes.</summary>
    public static byte[] Tcp(MacAddress to, MacAddress from, bool ipv6, ushort sport, ushort dport, uint seq, byte flags, int payload, int seed = 0, ushort ipId = 0x1234, Csum csum = Csum.Partial)
    {
        const int tcpHeader = 32;
        var ipHeader = ipv6 ? 40 : 20;
        var f = new byte[14 + ipHeader + tcpHeader + payload];
        Ethernet(f, to, from, ipv6);
        IpHeader(f, ipv6, 6, tcpHeader + payload, ipId);
        var t = f.AsSpan(14 + ipHeader);
        BinaryPrimitives.WriteUInt16BigEndian(t, sport);
        BinaryPrimitives.WriteUInt16BigEndian(t[2..], dport);
        BinaryPrimitives.WriteUInt32BigEndian(t[4..], seq);
        BinaryPrimitives.WriteUInt32BigEndian(t[8..], 0x11223344); // ack
        t[12] = (tcpHeader / 4) << 4;
        t[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(t[14..], 0xFFFF); // window
        t[20] = 1; // NOP, NOP, then a 10-byte timestamp option
        t[21] = 1;
        t[22] = 8;
        t[23] = 10;
        for (var i = 0; i < payload; i++)
        {
            t[tcpHeader + i] = PayloadByte(seed, i);
        }

        SetChecksum(f, csum);
        return f;
    }

    /// <summary>An Ethernet + IPv4/IPv6 + UDP frame.</summary>
    public static byte[] Udp(MacAddress to, MacAddress from, bool ipv6, ushort sport, ushort dport, int payload, int seed = 0, Csum csum = Csum.Partial)
    {
        var ipHeader = ipv6 ? 40 : 20;
        var f = new byte[14 + ipHeader + 8 + payload];
        Ethernet(f, to, from, ipv6);
        IpHeader(f, ipv6, 17, 8 + payload, 0x4321);
        var u = f.AsSpan(14 + ipHeader);
        BinaryPrimitives.WriteUInt16BigEndian(u, sport);
        BinaryPrimitives.WriteUInt16BigEndian(u[2..], dport);
        BinaryPrimitives.WriteUInt16BigEndian(u[4..], (ushort)(8 + payload));
        for (var i = 0; i < payload; i++)
        {
            u[8 + i] = PayloadByte(seed, i);
        }

        SetChecksum(f, csum);
        return f;
    }

    private static void Ethernet(byte[] f, MacAddress to, MacAddress from, bool ipv6)
    {
        to.Write(f);
        from.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), ipv6 ? (ushort)0x86DD : (ushort)0x0800);
    }

    private static void IpHeader(byte[] f, bool ipv6, byte protocol, int l4Length, ushort id)
    {
        var ip = f.AsSpan(14);
        if (ipv6)
        {
            ip[0] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)l4Length);
            ip[6] = protocol;
            ip[7] = 64;
            Ip6A.CopyTo(ip[8..]);
            Ip6B.CopyTo(ip[24..]);
            return;
        }

        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4Length));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], id);
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = protocol;
        Ip4A.CopyTo(ip[12..]);
        Ip4B.CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], (ushort)~Fold(Sum(ip[..20])));
    }

    /// <summary>Sets the frame's transport checksum as <paramref name="csum"/> says.</summary>
    public static void SetChecksum(byte[] f, Csum csum)
    {
        var (l4, length, protocol) = Transport(f);
        var field = l4 + (protocol == 6 ? 16 : 6);
        f[field] = f[field + 1] = 0;
        var pseudo = PseudoSum(f, length, protocol);
        var value = csum switch
        {
            Csum.Partial => Fold(pseudo),
            Csum.Full => Full(pseudo + Sum(f.AsSpan(l4, length))),
            _ => 0,
        };
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(field), (ushort)value);
    }

    private static ushort Full(long sum)
    {
        var v = (ushort)~Fold(sum);
        return v == 0 ? (ushort)0xFFFF : v;
    }

    /// <summary>Where the transport header is, how long the IP payload is, and its protocol (no extension headers).</summary>
    public static (int L4, int Length, byte Protocol) Transport(ReadOnlySpan<byte> f)
    {
        var ipv6 = BinaryPrimitives.ReadUInt16BigEndian(f[12..]) == 0x86DD;
        return ipv6
            ? (54, BinaryPrimitives.ReadUInt16BigEndian(f[18..]), f[20])
            : (14 + ((f[14] & 0xF) * 4), BinaryPrimitives.ReadUInt16BigEndian(f[16..]) - ((f[14] & 0xF) * 4), f[23]);
    }

    /// <summary>The TCP/UDP pseudo-header sum of the frame.</summary>
    public static long PseudoSum(ReadOnlySpan<byte> f, int length, byte protocol)
    {
        var ipv6 = BinaryPrimitives.ReadUInt16BigEndian(f[12..]) == 0x86DD;
        return (ipv6 ? Sum(f.Slice(22, 32)) : Sum(f.Slice(26, 8))) + protocol + length;
    }

    /// <summary>True when the frame's TCP/UDP checksum is right (the sum over pseudo-header, header and payload is all ones).</summary>
    public static bool TransportChecksumOk(ReadOnlySpan<byte> f)
    {
        var (l4, length, protocol) = Transport(f);
        return Fold(PseudoSum(f, length, protocol) + Sum(f.Slice(l4, length))) == 0xFFFF;
    }

    /// <summary>True when the frame's checksum field holds exactly the folded pseudo-header sum (a blank checksum left for the receiver).</summary>
    public static bool TransportChecksumIsPartial(ReadOnlySpan<byte> f)
    {
        var (l4, length, protocol) = Transport(f);
        return BinaryPrimitives.ReadUInt16BigEndian(f[(l4 + (protocol == 6 ? 16 : 6))..]) == Fold(PseudoSum(f, length, protocol));
    }

    public static bool IPv4HeaderChecksumOk(ReadOnlySpan<byte> f) => Fold(Sum(f.Slice(14, (f[14] & 0xF) * 4))) == 0xFFFF;

    /// <summary>One's complement sum of big-endian byte pairs, done the slow way.</summary>
    public static long Sum(ReadOnlySpan<byte> data)
    {
        long sum = 0;
        for (var i = 0; i < data.Length; i += 2)
        {
            sum += (data[i] << 8) + (i + 1 < data.Length ? data[i + 1] : 0);
        }

        return sum;
    }

    public static int Fold(long sum)
    {
        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (int)sum;
    }

    /// <summary>The Toeplitz hash as Microsoft's RSS specification defines it, bit by bit.</summary>
    public static uint Toeplitz(ReadOnlySpan<byte> key, ReadOnlySpan<byte> input)
    {
        uint result = 0;
        for (var bit = 0; bit < input.Length * 8; bit++)
        {
            if ((input[bit / 8] & (0x80 >> (bit % 8))) == 0)
            {
                continue;
            }

            uint window = 0;
            for (var k = 0; k < 32; k++)
            {
                var kb = bit + k;
                var keyBit = kb / 8 < key.Length && (key[kb / 8] & (0x80 >> (kb % 8))) != 0;
                window = (window << 1) | (keyBit ? 1u : 0u);
            }

            result ^= window;
        }

        return result;
    }
}
