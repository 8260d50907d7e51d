using System.Buffers.Binary;

namespace Paravirt.Core.Backends.Network;

/// <summary>Where an IP packet's parts are in an Ethernet frame, as <see cref="PacketHeaders.TryParseIp"/> found them.</summary>
/// <param name="IsIPv6">IPv6 (ethertype 0x86DD) rather than IPv4 (0x0800).</param>
/// <param name="Protocol">The transport protocol: IPv4's protocol, or IPv6's last next-header after the extension headers.</param>
/// <param name="L4Offset">Offset in the frame of the transport header.</param>
/// <param name="L4Length">Bytes from <paramref name="L4Offset"/> to the end of the IP payload, as the IP header says.</param>
/// <param name="IsFragment">A fragment (IPv4 MF or offset; an IPv6 fragment header with MF or an offset).</param>
internal readonly record struct IpPacket(bool IsIPv6, byte Protocol, int L4Offset, int L4Length, bool IsFragment);

/// <summary>
/// Reading and checksumming the Ethernet, IP and TCP/UDP headers of a frame: what Linux's
/// <c>skb_checksum_setup</c> does for netback (find the transport header of a packet whose checksum
/// is left blank, refuse what is not TCP or UDP over unfragmented IPv4/IPv6) and what checksum
/// completion (<c>skb_checksum_help</c>) does for a receiver that cannot finish a blank checksum.
/// Every offset is checked against the frame; nothing here trusts a length it read.
/// </summary>
internal static class PacketHeaders
{
    public const int EthernetHeader = 14;
    public const ushort EtherTypeIPv4 = 0x0800;
    public const ushort EtherTypeIPv6 = 0x86DD;
    public const byte IpProtoTcp = 6;
    public const byte IpProtoUdp = 17;
    public const int TcpHeader = 20;
    public const int UdpHeader = 8;

    private const int IPv4Header = 20;
    private const int IPv6Header = 40;

    /// <summary>The offset of the checksum field in a TCP (16) or UDP (6) header.</summary>
    public static int ChecksumFieldOffset(byte protocol) => protocol == IpProtoTcp ? 16 : 6;

    /// <summary>
    /// Parses the IP header(s) of an IPv4 or IPv6 frame: version, header length, the IPv6 extension
    /// headers Linux walks (hop-by-hop, routing, destination options, AH, fragment), and the total
    /// length, which must lie within the frame. False for anything else (ARP, VLAN tags, truncated).
    /// </summary>
    public static bool TryParseIp(ReadOnlySpan<byte> frame, out IpPacket packet)
    {
        packet = default;
        if (frame.Length < EthernetHeader)
        {
            return false;
        }

        var ip = frame[EthernetHeader..];
        switch (BinaryPrimitives.ReadUInt16BigEndian(frame[12..]))
        {
            case EtherTypeIPv4:
                {
                    if (ip.Length < IPv4Header || ip[0] >> 4 != 4)
                    {
                        return false;
                    }

                    var ihl = (ip[0] & 0xF) * 4;
                    var total = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
                    if (ihl < IPv4Header || total < ihl || total > ip.Length)
                    {
                        return false;
                    }

                    var fragment = (BinaryPrimitives.ReadUInt16BigEndian(ip[6..]) & 0x3FFF) != 0; // IP_MF | IP_OFFSET
                    packet = new IpPacket(false, ip[9], EthernetHeader + ihl, total - ihl, fragment);
                    return true;
                }

            case EtherTypeIPv6:
                {
                    if (ip.Length < IPv6Header || ip[0] >> 4 != 6)
                    {
                        return false;
                    }

                    var length = IPv6Header + BinaryPrimitives.ReadUInt16BigEndian(ip[4..]);
                    if (length > ip.Length)
                    {
                        return false;
                    }

                    var next = ip[6];
                    var off = IPv6Header;
                    var fragment = false;
                    while (true)
                    {
                        // Each extension header moves on by at least 8 bytes, so the walk ends within the packet.
                        switch (next)
                        {
                            case 0 or 43 or 60: // hop-by-hop, routing, destination options: (hdrlen + 1) * 8
                                if (off + 2 > length)
                                {
                                    return false;
                                }

                                next = ip[off];
                                off += (ip[off + 1] + 1) * 8;
                                break;
                            case 51: // AH: (hdrlen + 2) * 4
                                if (off + 12 > length)
                                {
                                    return false;
                                }

                                next = ip[off];
                                off += (ip[off + 1] + 2) * 4;
                                break;
                            case 44: // fragment header: 8 bytes; a fragment if it has an offset or more fragments follow
                                if (off + 8 > length)
                                {
                                    return false;
                                }

                                fragment |= (BinaryPrimitives.ReadUInt16BigEndian(ip[(off + 2)..]) & 0xFFF9) != 0;
                                next = ip[off];
                                off += 8;
                                break;
                            default:
                                if (off > length)
                                {
                                    return false;
                                }

                                packet = new IpPacket(true, next, EthernetHeader + off, length - off, fragment);
                                return true;
                        }
                    }
                }

            default:
                return false;
        }
    }

    /// <summary>
    /// skb_checksum_setup: the frame is TCP or UDP over unfragmented IPv4 or IPv6 with its whole
    /// fixed transport header inside the IP payload. False (and netback drops the packet) otherwise.
    /// </summary>
    public static bool TryChecksumSetup(ReadOnlySpan<byte> frame, out IpPacket packet)
    {
        if (!TryParseIp(frame, out packet) || packet.IsFragment)
        {
            return false;
        }

        return packet.Protocol switch
        {
            IpProtoTcp => packet.L4Length >= TcpHeader,
            IpProtoUdp => packet.L4Length >= UdpHeader,
            _ => false,
        };
    }

    /// <summary>Adds <paramref name="data"/> as big-endian 16-bit words (an odd last byte padded with zero) to a one's complement running sum.</summary>
    public static ulong Sum(ReadOnlySpan<byte> data, ulong sum = 0)
    {
        // 32-bit words add two 16-bit words at once: 2^16 is 1 modulo 2^16 - 1, so folding later gives the same sum.
        var i = 0;
        for (; i + 4 <= data.Length; i += 4)
        {
            sum += BinaryPrimitives.ReadUInt32BigEndian(data[i..]);
        }

        for (; i + 2 <= data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (i < data.Length)
        {
            sum += (ulong)data[i] << 8;
        }

        return sum;
    }

    /// <summary>Folds a running sum to 16 bits (end-around carry).</summary>
    public static ushort Fold(ulong sum)
    {
        while (sum >> 16 != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)sum;
    }

    /// <summary>The TCP/UDP pseudo-header sum: addresses, protocol and <paramref name="l4Length"/>.</summary>
    public static ulong PseudoHeaderSum(ReadOnlySpan<byte> frame, bool ipv6, byte protocol, int l4Length)
    {
        var ip = frame[EthernetHeader..];
        return ipv6
            ? Sum(ip.Slice(8, 32)) + (uint)l4Length + protocol
            : Sum(ip.Slice(12, 8)) + (uint)l4Length + protocol;
    }

    /// <summary>
    /// Writes the partial checksum a sender leaves with a blank checksum: the folded pseudo-header
    /// sum, uncomplemented (Linux's <c>~csum_tcpudp_magic(…)</c>), over <paramref name="l4Length"/> bytes.
    /// </summary>
    public static void SeedPartial(Span<byte> frame, bool ipv6, byte protocol, int l4Offset, int l4Length)
    {
        var field = frame.Slice(l4Offset + ChecksumFieldOffset(protocol), 2);
        BinaryPrimitives.WriteUInt16BigEndian(field, Fold(PseudoHeaderSum(frame, ipv6, protocol, l4Length)));
    }

    /// <summary>
    /// Finishes a blank checksum (<c>skb_checksum_help</c>): the field holds the pseudo-header sum,
    /// so the one's complement of the sum over the transport header and payload is the checksum. A
    /// result of 0 is written 0xFFFF (the same value in one's complement; 0 means "none" to UDP).
    /// </summary>
    public static void Complete(Span<byte> frame, byte protocol, int l4Offset, int l4Length)
    {
        var field = frame.Slice(l4Offset + ChecksumFieldOffset(protocol), 2);
        var check = (ushort)~Fold(Sum(frame.Slice(l4Offset, l4Length)));
        BinaryPrimitives.WriteUInt16BigEndian(field, check == 0 ? (ushort)0xFFFF : check);
    }

    /// <summary>Writes a full TCP/UDP checksum from scratch (pseudo-header included).</summary>
    public static void WriteFull(Span<byte> frame, bool ipv6, byte protocol, int l4Offset, int l4Length)
    {
        SeedPartial(frame, ipv6, protocol, l4Offset, l4Length);
        Complete(frame, protocol, l4Offset, l4Length);
    }

    /// <summary>Recomputes an IPv4 header's checksum in place.</summary>
    public static void WriteIPv4HeaderChecksum(Span<byte> ipHeader)
    {
        ipHeader[10] = 0;
        ipHeader[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ipHeader[10..], (ushort)~Fold(Sum(ipHeader)));
    }
}
