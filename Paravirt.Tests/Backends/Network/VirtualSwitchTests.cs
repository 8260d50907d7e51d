using System.Buffers.Binary;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;

namespace Paravirt.Tests.Backends.Network;

/// <summary>The learning bridge, driven through host endpoints.</summary>
public sealed class VirtualSwitchTests : IDisposable
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");
    private static readonly MacAddress C = MacAddress.Parse("02:00:00:00:00:0c");
    private static readonly MacAddress Unknown = MacAddress.Parse("02:00:00:00:00:ee");
    private readonly VirtualSwitch sw = new("br-test");

    public void Dispose() => sw.Dispose();

    private static byte[] Frame(MacAddress to, MacAddress from, int tag, int length = 64)
    {
        var f = new byte[length];
        to.Write(f);
        from.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x88B5);
        BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(14), tag);
        return f;
    }

    private static List<int> Drain(SwitchHostPort port)
    {
        var tags = new List<int>();
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        while (port.TryReceive(buffer, out var n))
        {
            n.Should().BeGreaterThanOrEqualTo(18);
            tags.Add(BinaryPrimitives.ReadInt32BigEndian(buffer.AsSpan(14)));
        }

        return tags;
    }

    [Fact]
    public void An_Unknown_Destination_Floods_To_Every_Other_Port_But_Never_Back_To_The_Sender()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        using var c = sw.ConnectHost(C);
        a.Send(Frame(Unknown, A, 1));
        Drain(a).Should().BeEmpty("a frame never goes back out of its ingress port");
        Drain(b).Should().Equal(1);
        Drain(c).Should().Equal(1);
        a.Stats.FramesIn.Should().Be(1);
        b.Stats.FramesOut.Should().Be(1);
    }

    [Fact]
    public void A_Learned_Destination_Gets_The_Frame_Alone()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        using var c = sw.ConnectHost(C);
        b.Send(Frame(Unknown, B, 1)); // teaches the switch where B is (flooded to a and c)
        Drain(a).Should().Equal(1);
        Drain(c).Should().Equal(1);
        sw.PortOf(B).Should().BeSameAs(b);

        a.Send(Frame(B, A, 2));
        Drain(b).Should().Equal(2);
        Drain(c).Should().BeEmpty("B was learned on its own port: unicast goes there only");
        sw.PortOf(A).Should().BeSameAs(a);

        b.Send(Frame(A, B, 3));
        Drain(a).Should().Equal(3);
        Drain(c).Should().BeEmpty();
        sw.LearnedAddresses.Should().Be(2);
    }

    [Fact]
    public void Broadcast_And_Multicast_Flood_Even_When_Learned()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        using var c = sw.ConnectHost(C);
        b.Send(Frame(A, B, 0));
        c.Send(Frame(A, C, 0));
        Drain(a);
        Drain(b);
        Drain(c);
        a.Send(Frame(MacAddress.Broadcast, A, 1));
        a.Send(Frame(MacAddress.Parse("01:00:5e:00:00:01"), A, 2));
        a.Send(Frame(MacAddress.Parse("33:33:00:00:00:01"), A, 3));
        Drain(b).Should().Equal(1, 2, 3);
        Drain(c).Should().Equal(1, 2, 3);
        Drain(a).Should().BeEmpty();
    }

    [Fact]
    public void A_Group_Source_Address_Is_Never_Learned()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        a.Send(Frame(B, MacAddress.Broadcast, 1));
        sw.LearnedAddresses.Should().Be(0);
        sw.PortOf(MacAddress.Broadcast).Should().BeNull();
        Drain(b).Should().Equal(1);
    }

    [Fact]
    public void A_Frame_For_An_Address_Learned_On_Its_Own_Port_Is_Filtered()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        a.Send(Frame(B, A, 1)); // A learned on a; flooded to b
        Drain(b).Should().Equal(1);
        b.Send(Frame(A, A, 2)); // spoofs A as source: A moves to b, so the frame's destination is b itself
        sw.PortOf(A).Should().BeSameAs(b);
        b.Send(Frame(A, B, 3));
        Drain(a).Should().BeEmpty("both frames were for an address on their own ingress port");
        b.Stats.Filtered.Should().Be(2);
        a.Send(Frame(B, A, 4)); // A comes back to a
        sw.PortOf(A).Should().BeSameAs(a);
        Drain(b).Should().Equal(4);
    }

    [Fact]
    public void A_Detached_Port_Is_Forgotten_And_Its_Traffic_Floods_Again()
    {
        using var a = sw.ConnectHost(A);
        var b = sw.ConnectHost(B);
        using var c = sw.ConnectHost(C);
        b.Send(Frame(A, B, 1));
        sw.PortOf(B).Should().BeSameAs(b);
        Drain(c).Should().Equal(1);
        b.Dispose();
        b.IsAttached.Should().BeFalse();
        sw.PortOf(B).Should().BeNull("a detached port's addresses are forgotten");
        sw.Ports.Should().HaveCount(2);
        Drain(a);
        a.Send(Frame(B, A, 2));
        Drain(c).Should().Equal(2);
        b.Stats.FramesOut.Should().Be(0);
        FluentActions.Invoking(() => b.Send(Frame(A, B, 3))).Should().Throw<InvalidOperationException>().WithMessage("*detached*");
    }

    [Fact]
    public void A_Full_Queue_Drops_And_Counts_Without_Holding_Up_Other_Ports()
    {
        using var a = sw.ConnectHost(A);
        using var slow = sw.ConnectHost(B, queueFrames: 4);
        using var c = sw.ConnectHost(C);
        for (var i = 0; i < 10; i++)
        {
            a.Send(Frame(MacAddress.Broadcast, A, i));
        }

        slow.Stats.Dropped.Should().Be(6);
        slow.Stats.FramesOut.Should().Be(4);
        Drain(slow).Should().Equal(0, 1, 2, 3);
        Drain(c).Should().Equal(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        c.Stats.Dropped.Should().Be(0);
        a.Send(Frame(MacAddress.Broadcast, A, 10));
        Drain(slow).Should().Equal([10], "once read, the queue takes frames again");
    }

    [Fact]
    public void Frames_Are_Copied_Whole_And_Invalid_Lengths_Are_Refused()
    {
        using var a = sw.ConnectHost(A);
        using var b = sw.ConnectHost(B);
        var big = Frame(B, A, 7, VirtualSwitch.MaxFrameBytes);
        new Random(3).NextBytes(big.AsSpan(18));
        a.Send(big);
        var got = new byte[2000];
        b.TryReceive(got, out var n).Should().BeTrue();
        got.AsSpan(0, n).ToArray().Should().Equal(big);
        FluentActions.Invoking(() => a.Send(new byte[13])).Should().Throw<ArgumentException>().WithMessage("*14 to 1514*");
        FluentActions.Invoking(() => a.Send(new byte[1515])).Should().Throw<ArgumentException>();
        sw.Forward(a, new byte[1515]).Should().BeFalse();
        sw.Forward(a, new byte[10]).Should().BeFalse();
        a.Stats.Invalid.Should().Be(2);
        a.Send(B, 0x0800, new byte[3]);
        FluentActions.Invoking(() => b.TryReceive(new byte[16], out _)).Should().Throw<ArgumentException>("the buffer is smaller than the frame");
        b.TryReceive(got, out n).Should().BeTrue("the frame stayed queued");
        n.Should().Be(17);
        MacAddress.Read(got.AsSpan(6)).Should().Be(A);
    }

    [Fact]
    public void A_Port_Learns_At_Most_Its_Quota_Of_Source_Addresses()
    {
        using var small = new VirtualSwitch("br-quota", new SwitchOptions { MaxMacsPerPort = 3 });
        using var a = small.ConnectHost(A);
        using var b = small.ConnectHost(B);
        for (var i = 0; i < 10; i++)
        {
            a.Send(Frame(B, MacAddress.FromValue(0x0200_0000_1000UL + (ulong)i), i));
        }

        small.LearnedAddresses.Should().Be(3);
        a.Stats.NotLearned.Should().Be(7);
        Drain(b).Should().HaveCount(10, "frames are still forwarded");
    }

    [Fact]
    public async Task ReceiveAsync_Waits_For_A_Frame_And_Ends_When_The_Port_Detaches()
    {
        using var a = sw.ConnectHost(A);
        var b = sw.ConnectHost(B);
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        var pending = b.ReceiveAsync(buffer, TestContext.Current.CancellationToken);
        pending.IsCompleted.Should().BeFalse();
        await a.SendAsync(Frame(B, A, 5), TestContext.Current.CancellationToken);
        (await pending.AsTask().WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)).Should().Be(64);
        BinaryPrimitives.ReadInt32BigEndian(buffer.AsSpan(14)).Should().Be(5);

        var waiting = b.ReceiveAsync(buffer, TestContext.Current.CancellationToken);
        b.Dispose();
        await FluentActions.Awaiting(async () => await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken))
            .Should().ThrowAsync<InvalidOperationException>().WithMessage("*detached*");
    }

    [Fact]
    public void The_Hypervisor_Owns_Its_Named_Switches_And_Disposes_Them()
    {
        var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 8 });
        var br0 = hv.Switch("br0");
        hv.Switch("br0").Should().BeSameAs(br0);
        hv.Switch("br1").Should().NotBeSameAs(br0);
        var port = br0.ConnectHost(A);
        hv.Dispose();
        port.IsAttached.Should().BeFalse();
        FluentActions.Invoking(() => br0.ConnectHost(B)).Should().Throw<ObjectDisposedException>();
        FluentActions.Invoking(() => hv.Switch("br2")).Should().Throw<ObjectDisposedException>();
    }

    [Fact]
    public void Mac_Addresses_Parse_And_Print_As_Libxl_Writes_Them()
    {
        var m = MacAddress.Parse("00:16:3E:0a:0B:ff");
        m.ToString().Should().Be("00:16:3e:0a:0b:ff");
        m.Value.Should().Be(0x00163E0A0BFFUL);
        m.IsMulticast.Should().BeFalse();
        MacAddress.Broadcast.IsMulticast.Should().BeTrue();
        MacAddress.TryParse("00:16:3e:0a:0b", out _).Should().BeFalse();
        MacAddress.TryParse("00-16-3e-0a-0b-ff", out _).Should().BeFalse();
        MacAddress.TryParse("00:16:3e:0a:0b:fg", out _).Should().BeFalse();
        MacAddress.RandomXen().ToString().Should().StartWith("00:16:3e:");
    }
}
