using System.Buffers.Binary;

namespace Paravirt.Cli.Guests;

/// <summary>What <see cref="Ipv4Responder.Answer"/> made of a frame.</summary>
internal enum ResponderVerdict
{
    /// <summary>Not for us (another address, another protocol): no reply.</summary>
    Ignored,

    /// <summary>An ARP request for our address: <c>reply</c> holds the ARP reply.</summary>
    ArpReply,

    /// <summary>An ICMP echo request to our address with correct checksums: <c>reply</c> holds the echo reply.</summary>
    EchoReply,

    /// <summary>An IPv4 packet to us whose header or ICMP checksum is wrong: dropped, as a host's stack drops it.</summary>
    BadChecksum,
}

/// <summary>
/// The least of an IPv4 host (RFC 826 ARP, RFC 792 echo): answers ARP requests for its address and
/// ICMP echo requests to it, checking both checksums of what it receives and computing them for
/// what it sends, so a peer's <c>ping</c> works against it. Used by <c>managed:pingable</c> and by
/// tests that make the host's own switch port answer pings.
/// </summary>
internal static class Ipv4Responder
{
    private const ushort EtherTypeIpv4 = 0x0800, EtherTypeArp = 0x0806;

    /// <summary>
    /// Looks at <paramref name="frame"/>; for an ARP request or ICMP echo request to
    /// <paramref name="ip"/> writes the answer (from <paramref name="mac"/>) into
    /// <paramref name="reply"/> (at least the frame's length, and 60 bytes) and sets <paramref name="length"/>.
    /// </summary>
    public static ResponderVerdict Answer(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> mac, uint ip, Span<byte> reply, out int length)
    {
        length = 0;
        if (frame.Length < 14)
        {
            return ResponderVerdict.Ignored;
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        if (type == EtherTypeArp)
        {
            return AnswerArp(frame, mac, ip, reply, out length);
        }

        return type == EtherTypeIpv4 ? AnswerIcmp(frame, mac, ip, reply, out length) : ResponderVerdict.Ignored;
    }

    private static ResponderVerdict AnswerArp(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> mac, uint ip, Span<byte> reply, out int length)
    {
        length = 0;
        var arp = frame[14..];
        // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, oper 1 (request), target protocol address ours.
        if (arp.Length < 28 || BinaryPrimitives.ReadUInt16BigEndian(arp) != 1 || BinaryPrimitives.ReadUInt16BigEndian(arp[2..]) != EtherTypeIpv4
            || arp[4] != 6 || arp[5] != 4 || BinaryPrimitives.ReadUInt16BigEndian(arp[6..]) != 1 || BinaryPrimitives.ReadUInt32BigEndian(arp[24..]) != ip)
        {
            return ResponderVerdict.Ignored;
        }

        reply[..60].Clear();
        frame.Slice(6, 6).CopyTo(reply); // to the asker
        mac.CopyTo(reply[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(reply[12..], EtherTypeArp);
        var answer = reply[14..];
        arp[..6].CopyTo(answer); // htype, ptype, hlen, plen
        BinaryPrimitives.WriteUInt16BigEndian(answer[6..], 2); // reply
        mac.CopyTo(answer[8..]);
        BinaryPrimitives.WriteUInt32BigEndian(answer[14..], ip);
        arp.Slice(8, 10).CopyTo(answer[18..]); // the asker's hardware and protocol addresses become the target
        length = 60;
        return ResponderVerdict.ArpReply;
    }

    private static ResponderVerdict AnswerIcmp(ReadOnlySpan<byte> frame, ReadOnlySpan<byte> mac, uint ip, Span<byte> reply, out int length)
    {
        length = 0;
        var packet = frame[14..];
        if (packet.Length < 20 || packet[0] >> 4 != 4)
        {
            return ResponderVerdict.Ignored;
        }

        var headerBytes = (packet[0] & 0xF) * 4;
        var total = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        if (headerBytes < 20 || total < headerBytes + 8 || total > packet.Length || BinaryPrimitives.ReadUInt32BigEndian(packet[16..]) != ip)
        {
            return ResponderVerdict.Ignored;
        }

        if (packet[9] != 1 || (BinaryPrimitives.ReadUInt16BigEndian(packet[6..]) & 0x3FFF) != 0)
        {
            return ResponderVerdict.Ignored; // not ICMP, or a fragment
        }

        var icmp = packet[headerBytes..total];
        if (Checksum(packet[..headerBytes]) != 0 || Checksum(icmp) != 0)
        {
            return ResponderVerdict.BadChecksum;
        }

        if (icmp[0] != 8 || icmp[1] != 0)
        {
            return ResponderVerdict.Ignored; // not an echo request
        }

        length = Math.Max(60, 14 + total);
        reply[..length].Clear();
        frame.Slice(6, 6).CopyTo(reply);
        mac.CopyTo(reply[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(reply[12..], EtherTypeIpv4);
        var answer = reply[14..];
        packet[..total].CopyTo(answer);
        answer[8] = 64; // TTL
        packet.Slice(12, 4).CopyTo(answer[16..]); // destination: the asker
        BinaryPrimitives.WriteUInt32BigEndian(answer[12..], ip);
        BinaryPrimitives.WriteUInt16BigEndian(answer[10..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(answer[10..], Checksum(answer[..headerBytes]));
        var echo = answer[headerBytes..total];
        echo[0] = 0; // echo reply; identifier, sequence and data stay
        BinaryPrimitives.WriteUInt16BigEndian(echo[2..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(echo[2..], Checksum(echo));
        return ResponderVerdict.EchoReply;
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>: 0 when a received header or message with its checksum in place is intact.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        ulong sum = 0;
        var i = 0;
        for (; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (i < data.Length)
        {
            sum += (ulong)data[i] << 8;
        }

        while (sum >> 16 != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    /// <summary>Parses a dotted-quad IPv4 address into its big-endian value; false when it is not one.</summary>
    public static bool TryParse(string text, out uint ip)
    {
        ip = 0;
        if (!Config.VifSpec.TryParseIpv4(text, out var a))
        {
            return false;
        }

        ip = BinaryPrimitives.ReadUInt32BigEndian(a.GetAddressBytes());
        return true;
    }
}
