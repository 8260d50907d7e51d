using System.Buffers.Binary;
using System.Net;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;

namespace Paravirt.Tests.Backends.Network;

/// <summary>
/// What the switch enforces beyond learning: addresses age out as a Linux bridge's do
/// (ageing_time), and a vif sends only from its own MAC and, with xl's <c>ip=</c>, only from
/// those IPv4 addresses (DHCP requests excepted), as Xen's vif scripts allow.
/// </summary>
public sealed class SwitchPolicyTests : IDisposable
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");
    private static readonly MacAddress C = MacAddress.Parse("02:00:00:00:00:0c");
    private static readonly MacAddress Broadcast = MacAddress.Parse("ff:ff:ff:ff:ff:ff");
    private readonly ManualClock clock = new();
    private readonly VirtualSwitch sw;

    public SwitchPolicyTests() => sw = new VirtualSwitch("br-policy", new SwitchOptions { AgeingTime = TimeSpan.FromSeconds(300), Clock = clock });

    public void Dispose() => sw.Dispose();

    private static byte[] Frame(MacAddress to, MacAddress from, int tag)
    {
        var f = new byte[64];
        to.Write(f);
        from.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x88B5);
        BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(14), tag);
        return f;
    }

    /// <summary>An IPv4/UDP frame from <paramref name="source"/> (sport → dport).</summary>
    private static byte[] Udp(MacAddress to, MacAddress from, string source, ushort sport, ushort dport, ushort etherType = 0x0800)
    {
        var f = new byte[14 + 20 + 8 + 4];
        to.Write(f);
        from.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), etherType);
        var ip = f.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 32);
        ip[8] = 64;
        ip[9] = 17;
        IPAddress.Parse(source).GetAddressBytes().CopyTo(ip[12..]);
        IPAddress.Parse("10.0.0.254").GetAddressBytes().CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[20..], sport);
        BinaryPrimitives.WriteUInt16BigEndian(ip[22..], dport);
        BinaryPrimitives.WriteUInt16BigEndian(ip[24..], 12);
        return f;
    }

    private static int Count(SwitchHostPort port)
    {
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        var n = 0;
        while (port.TryReceive(buffer, out _))
        {
            n++;
        }

        return n;
    }

    [Fact]
    public void A_Learned_Address_Ages_Out_After_The_Ageing_Time_And_Frames_To_It_Flood_Again()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        using var c = sw.ConnectHost(C);
        b.Send(Frame(Broadcast, B, 1));
        Count(a).Should().Be(1);
        Count(c).Should().Be(1);

        clock.Advance(TimeSpan.FromSeconds(299));
        sw.PortOf(B).Should().BeSameAs(b, "299 s is within the ageing time");
        a.Send(Frame(B, A, 2));
        Count(b).Should().Be(1);
        Count(c).Should().Be(0, "B is still learned: unicast goes to its port alone");

        clock.Advance(TimeSpan.FromSeconds(2));
        sw.PortOf(B).Should().BeNull("nothing came from B for 301 s");
        sw.LearnedAddresses.Should().Be(1, "A was heard 2 s ago; B has aged");
        a.Send(Frame(B, A, 3));
        Count(b).Should().Be(1);
        Count(c).Should().Be(1, "an aged destination is unknown: the frame floods");

        b.Send(Frame(A, B, 4));
        sw.PortOf(B).Should().BeSameAs(b, "B is learned again when heard");
        Count(a).Should().Be(1);
    }

    [Fact]
    public void Traffic_From_An_Address_Keeps_It_Learned()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        for (var i = 0; i < 5; i++)
        {
            b.Send(Frame(A, B, i));
            clock.Advance(TimeSpan.FromSeconds(200));
        }

        sw.PortOf(B).Should().BeSameAs(b, "B sent every 200 s: each frame refreshed it");
        sw.PortOf(A).Should().BeNull("A never sent");
    }

    [Fact]
    public void A_Port_At_Its_Quota_Learns_New_Addresses_Once_Its_Old_Ones_Have_Aged()
    {
        using var quota = new VirtualSwitch("br-quota", new SwitchOptions { MaxMacsPerPort = 2, AgeingTime = TimeSpan.FromSeconds(10), Clock = clock });
        using var host = quota.ConnectHost(A);
        using var other = quota.ConnectHost(B);
        host.Send(Frame(Broadcast, MacAddress.Parse("02:00:00:00:01:01"), 1));
        host.Send(Frame(Broadcast, MacAddress.Parse("02:00:00:00:01:02"), 2));
        host.Send(Frame(Broadcast, MacAddress.Parse("02:00:00:00:01:03"), 3));
        host.Stats.NotLearned.Should().Be(1, "the third address is over the quota of 2");
        quota.PortOf(MacAddress.Parse("02:00:00:00:01:03")).Should().BeNull();

        clock.Advance(TimeSpan.FromSeconds(11));
        host.Send(Frame(Broadcast, MacAddress.Parse("02:00:00:00:01:03"), 4));
        quota.PortOf(MacAddress.Parse("02:00:00:00:01:03")).Should().BeSameAs(host, "the aged two made room");
        host.Stats.NotLearned.Should().Be(1);
        quota.LearnedAddresses.Should().Be(1);
    }

    [Fact]
    public void Ageing_Can_Be_Switched_Off_And_Must_Be_Positive()
    {
        using var forever = new VirtualSwitch("br-forever", new SwitchOptions { AgeingTime = Timeout.InfiniteTimeSpan, Clock = clock });
        using var b = forever.ConnectHost(B);
        b.Send(Frame(Broadcast, B, 1));
        clock.Advance(TimeSpan.FromDays(365));
        forever.PortOf(B).Should().BeSameAs(b);

        var zero = () => new VirtualSwitch("br-zero", new SwitchOptions { AgeingTime = TimeSpan.Zero });
        zero.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*AgeingTime*");
    }

    [Fact]
    public void A_Port_With_A_Source_Policy_Sends_Only_From_Its_Own_Mac()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        a.Source = new SourcePolicy(A, null);
        a.Send(Frame(Broadcast, C, 1));
        a.Send(Frame(B, C, 2));
        Count(b).Should().Be(0, "frames from C's address through A's port are spoofed");
        a.Stats.Spoofed.Should().Be(2);
        a.Stats.FramesIn.Should().Be(0);
        sw.PortOf(C).Should().BeNull("a spoofed source is never learned (it cannot steal C's traffic)");

        a.Send(Frame(B, A, 3));
        Count(b).Should().Be(1);
        a.Stats.Spoofed.Should().Be(2);
    }

    [Fact]
    public void An_Ip_List_Admits_Ipv4_From_Those_Addresses_Dhcp_Requests_And_Frames_That_Are_Not_Ipv4()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        a.Source = new SourcePolicy(A, [IPAddress.Parse("10.0.0.1"), IPAddress.Parse("10.0.0.7")]);

        a.Send(Udp(Broadcast, A, "10.0.0.1", 5000, 6000));
        a.Send(Udp(Broadcast, A, "10.0.0.7", 5000, 6000));
        a.Send(Udp(Broadcast, A, "0.0.0.0", 68, 67)); // DHCPDISCOVER
        a.Send(Frame(Broadcast, A, 9)); // not IPv4 (an ARP or IPv6 frame passes iptables' IPv4 rules too)
        Count(b).Should().Be(4);

        a.Send(Udp(Broadcast, A, "10.0.0.2", 5000, 6000));
        a.Send(Udp(Broadcast, A, "0.0.0.0", 67, 68)); // a DHCP server's reply is not a request
        a.Send(Udp(Broadcast, A, "10.0.0.9", 68, 67, etherType: 0x0800)[..20]); // IPv4 ethertype, truncated header
        Count(b).Should().Be(0);
        a.Stats.Spoofed.Should().Be(3);

        var v6 = () => new SourcePolicy(A, [IPAddress.Parse("fe80::1")]);
        v6.Should().Throw<ArgumentException>().WithMessage("*IPv4*");
    }

    [Fact]
    public async Task A_Guest_Cannot_Send_From_Another_Mac_Through_Its_Vif()
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var guestMac = MacAddress.Parse("00:16:3e:00:00:01");
        var network = hv.Switch("br-spoof");
        using var sink = network.ConnectHost(B);
        var d = hv.CreateDomain(new DomainConfig { Name = "spoofer", MemoryMiB = 8 });
        await using var vif = d.AttachNic(network, new NicOptions { Mac = guestMac });
        await TestNetFront.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.Fill(0, 0, Frame(B, C, 1));
            f.Fill(1, 0, Frame(B, guestMac, 2));
            f.Transmit(new netif_tx_request { gref = f.GrantPage(0, readOnly: true), size = 64, id = 0 }).Single().status.Should().Be((short)Netif.NETIF_RSP_OKAY, "netback takes the frame; the switch drops it, as a bridge's filter would");
            f.Transmit(new netif_tx_request { gref = f.GrantPage(1, readOnly: true), size = 64, id = 1 }).Single().status.Should().Be((short)Netif.NETIF_RSP_OKAY);
        });

        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        sink.TryReceive(buffer, out _).Should().BeTrue();
        BinaryPrimitives.ReadInt32BigEndian(buffer.AsSpan(14)).Should().Be(2, "only the frame from the guest's own MAC arrives");
        sink.TryReceive(buffer, out _).Should().BeFalse();
        network.PortOf(C).Should().BeNull();
        d.Destroy();
    }
}
