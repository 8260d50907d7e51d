using System.Buffers.Binary;
using Paravirt.Core.Backends.Network;
using static Paravirt.Tests.Backends.Network.TestPackets;

namespace Paravirt.Tests.Backends.Network;

/// <summary>Finding the transport header as skb_checksum_setup does, and finishing blank checksums.</summary>
public sealed class PacketHeadersTests
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public void Tcp_And_Udp_Over_IPv4_And_IPv6_Are_Found_And_Their_Blank_Checksums_Finished(bool ipv6, bool tcp)
    {
        foreach (var payload in (int[])[0, 1, 2, 3, 1000, 1001])
        {
            var f = tcp ? Tcp(B, A, ipv6, 1000, 80, 7, Ack, payload, seed: payload) : Udp(B, A, ipv6, 53, 5353, payload, seed: payload);
            PacketHeaders.TryChecksumSetup(f, out var ip).Should().BeTrue();
            ip.IsIPv6.Should().Be(ipv6);
            ip.Protocol.Should().Be(tcp ? PacketHeaders.IpProtoTcp : PacketHeaders.IpProtoUdp);
            ip.L4Offset.Should().Be(ipv6 ? 54 : 34);
            ip.L4Length.Should().Be(f.Length - ip.L4Offset);
            TransportChecksumOk(f).Should().BeFalse("the field holds only the pseudo-header sum");
            PacketHeaders.Complete(f, ip.Protocol, ip.L4Offset, ip.L4Length);
            TransportChecksumOk(f).Should().BeTrue($"payload {payload}");
        }
    }

    [Fact]
    public void A_Checksum_Of_Zero_Is_Written_As_All_Ones()
    {
        // Find a payload whose checksum comes out 0, then check the field holds 0xFFFF (UDP's "zero").
        for (var seed = 0; seed < 70000; seed++)
        {
            var f = Udp(B, A, false, 1, 2, 2, csum: Csum.Partial);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(42), (ushort)seed);
            SetChecksum(f, Csum.Partial);
            PacketHeaders.Complete(f, PacketHeaders.IpProtoUdp, 34, 10);
            if (BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(40)) == 0xFFFF && TransportChecksumOk(f))
            {
                return;
            }
        }

        Assert.Fail("no payload gave a checksum of zero");
    }

    [Fact]
    public void What_Is_Not_Tcp_Or_Udp_Over_Unfragmented_IP_Is_Refused()
    {
        var good = Tcp(B, A, false, 1, 2, 3, Ack, 100);
        PacketHeaders.TryChecksumSetup(good, out _).Should().BeTrue();

        var cases = new Dictionary<string, byte[]>
        {
            ["ARP"] = Edit(good, f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806)),
            ["VLAN tag"] = Edit(good, f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x8100)),
            ["ICMP"] = Edit(good, f => f[23] = 1),
            ["more fragments"] = Edit(good, f => f[20] |= 0x20),
            ["fragment offset"] = Edit(good, f => f[21] = 1),
            ["IHL below 5"] = Edit(good, f => f[14] = 0x44),
            ["version 6 in an IPv4 ethertype"] = Edit(good, f => f[14] = 0x65),
            ["total length past the frame"] = Edit(good, f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), (ushort)(f.Length - 13))),
            ["IP options past the total length"] = Edit(Tcp(B, A, false, 1, 2, 3, Ack, 0), f => f[14] = 0x4F),
            ["IP options leaving no room for a TCP header"] = Edit(Tcp(B, A, false, 1, 2, 3, Ack, 20), f => f[14] = 0x4F),
            ["TCP header cut short"] = Tcp(B, A, false, 1, 2, 3, Ack, 0).AsSpan(0, 34 + 19).ToArray() is var cut ? Edit(cut, f => BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 39)) : [],
            ["shorter than an IP header"] = good.AsSpan(0, 30).ToArray(),
            ["shorter than an Ethernet header"] = good.AsSpan(0, 10).ToArray(),
        };
        foreach (var (what, frame) in cases)
        {
            PacketHeaders.TryChecksumSetup(frame, out _).Should().BeFalse(what);
        }
    }

    [Fact]
    public void IPv6_Extension_Headers_Are_Walked_And_Fragments_Refused()
    {
        // A hop-by-hop header (8 bytes) and a destination-options header (16 bytes) before UDP.
        var inner = Udp(B, A, true, 7, 9, 20);
        var f = new byte[inner.Length + 24];
        inner.AsSpan(0, 54).CopyTo(f);
        f[20] = 0; // next header: hop-by-hop
        f[54] = 60; // then destination options
        f[55] = 0; // 8 bytes
        f[62] = 17; // then UDP
        f[63] = 1; // 16 bytes
        inner.AsSpan(54).CopyTo(f.AsSpan(78));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(18), (ushort)(inner.Length - 54 + 24));
        PacketHeaders.TryChecksumSetup(f, out var ip).Should().BeTrue();
        ip.L4Offset.Should().Be(78);
        ip.Protocol.Should().Be(PacketHeaders.IpProtoUdp);
        ip.L4Length.Should().Be(28);

        // A fragment header: atomic (offset 0, no MF) is fine, a real fragment is not.
        var frag = new byte[inner.Length + 8];
        inner.AsSpan(0, 54).CopyTo(frag);
        frag[20] = 44;
        frag[54] = 17;
        inner.AsSpan(54).CopyTo(frag.AsSpan(62));
        BinaryPrimitives.WriteUInt16BigEndian(frag.AsSpan(18), (ushort)(inner.Length - 54 + 8));
        PacketHeaders.TryChecksumSetup(frag, out ip).Should().BeTrue();
        ip.L4Offset.Should().Be(62);
        frag[57] = 1; // MF
        PacketHeaders.TryChecksumSetup(frag, out _).Should().BeFalse();

        // An extension header that runs past the payload.
        var runaway = Edit(f, x => x[63] = 200);
        PacketHeaders.TryChecksumSetup(runaway, out _).Should().BeFalse();
    }

    private static byte[] Edit(byte[] frame, Action<byte[]> change)
    {
        var copy = (byte[])frame.Clone();
        change(copy);
        return copy;
    }
}
