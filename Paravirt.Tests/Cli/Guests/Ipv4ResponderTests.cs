using System.Buffers.Binary;
using Paravirt.Cli.Guests;

namespace Paravirt.Tests.Cli.Guests;

/// <summary>The ARP and ICMP echo answers of <c>managed:pingable</c> and the tests' host port, checked field by field.</summary>
public sealed class Ipv4ResponderTests
{
    private static readonly byte[] Us = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x03];
    private static readonly byte[] Peer = [0x00, 0x16, 0x3e, 0x00, 0x00, 0xa1];
    private const uint Ours = 0x0A000003, Theirs = 0x0A000001; // 10.0.0.3, 10.0.0.1

    private static byte[] ArpRequest(uint target)
    {
        var f = new byte[42];
        f.AsSpan(0, 6).Fill(0xFF);
        Peer.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 1);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 0x0800);
        f[18] = 6;
        f[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(20), 1);
        Peer.CopyTo(f, 22);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(28), Theirs);
        BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(38), target);
        return f;
    }

    private static byte[] EchoRequest(uint to, int dataBytes = 56)
    {
        var f = new byte[14 + 20 + 8 + dataBytes];
        Us.CopyTo(f, 0);
        Peer.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        var ip = f.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + 8 + dataBytes));
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000); // DF
        ip[8] = 64;
        ip[9] = 1;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], Theirs);
        BinaryPrimitives.WriteUInt32BigEndian(ip[16..], to);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Ipv4Responder.Checksum(ip[..20]));
        var icmp = ip[20..];
        icmp[0] = 8;
        BinaryPrimitives.WriteUInt16BigEndian(icmp[4..], 0x1234);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[6..], 7);
        for (var i = 0; i < dataBytes; i++)
        {
            icmp[8 + i] = (byte)(i * 13);
        }

        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Ipv4Responder.Checksum(icmp));
        return f;
    }

    [Fact]
    public void An_Arp_Request_For_Our_Address_Gets_A_Reply_To_The_Asker()
    {
        var reply = new byte[1514];
        Ipv4Responder.Answer(ArpRequest(Ours), Us, Ours, reply, out var n).Should().Be(ResponderVerdict.ArpReply);
        n.Should().Be(60);
        reply.AsSpan(0, 6).ToArray().Should().Equal(Peer);
        reply.AsSpan(6, 6).ToArray().Should().Equal(Us);
        BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(20)).Should().Be(2, "oper: reply");
        reply.AsSpan(22, 6).ToArray().Should().Equal(Us, "sender hardware address: ours");
        BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(28)).Should().Be(Ours);
        reply.AsSpan(32, 6).ToArray().Should().Equal(Peer, "target: the asker");
        BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(38)).Should().Be(Theirs);

        Ipv4Responder.Answer(ArpRequest(0x0A000009), Us, Ours, reply, out _).Should().Be(ResponderVerdict.Ignored, "another address's request");
    }

    [Fact]
    public void An_Echo_Request_Gets_An_Echo_Reply_With_Correct_Checksums_And_The_Same_Data()
    {
        var request = EchoRequest(Ours);
        var reply = new byte[1514];
        Ipv4Responder.Answer(request, Us, Ours, reply, out var n).Should().Be(ResponderVerdict.EchoReply);
        n.Should().Be(request.Length);
        reply.AsSpan(0, 6).ToArray().Should().Equal(Peer);
        var ip = reply.AsSpan(14, n - 14);
        Ipv4Responder.Checksum(ip[..20]).Should().Be(0, "the IP header checksum is valid");
        BinaryPrimitives.ReadUInt32BigEndian(ip[12..]).Should().Be(Ours);
        BinaryPrimitives.ReadUInt32BigEndian(ip[16..]).Should().Be(Theirs);
        var icmp = ip[20..];
        icmp[0].Should().Be(0, "echo reply");
        Ipv4Responder.Checksum(icmp).Should().Be(0, "the ICMP checksum is valid");
        icmp[4..].ToArray().Should().Equal(request.AsSpan(14 + 20 + 4).ToArray(), "identifier, sequence and data come back");
    }

    [Fact]
    public void A_Corrupted_Echo_Request_Is_Dropped_And_Others_Are_Ignored()
    {
        var reply = new byte[1514];
        var corrupt = EchoRequest(Ours);
        corrupt[^1] ^= 0x40;
        Ipv4Responder.Answer(corrupt, Us, Ours, reply, out _).Should().Be(ResponderVerdict.BadChecksum);
        var header = EchoRequest(Ours);
        header[14 + 8] = 3; // TTL changed without the header checksum
        Ipv4Responder.Answer(header, Us, Ours, reply, out _).Should().Be(ResponderVerdict.BadChecksum);
        Ipv4Responder.Answer(EchoRequest(0x0A000009), Us, Ours, reply, out _).Should().Be(ResponderVerdict.Ignored);
        Ipv4Responder.Answer(EchoRequest(Ours)[..40], Us, Ours, reply, out _).Should().Be(ResponderVerdict.Ignored, "truncated below its total length");
    }
}
