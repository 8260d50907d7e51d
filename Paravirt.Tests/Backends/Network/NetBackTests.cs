using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Network;

/// <summary>netback's attach rules, split event channels, reconnects and detach.</summary>
public sealed class NetBackTests : IDisposable
{
    private static readonly MacAddress SinkMac = MacAddress.Parse("02:00:00:00:00:99");
    private static readonly MacAddress GuestMac = MacAddress.Parse("00:16:3e:00:00:42");
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => hv.Dispose();

    private static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 8 };

    private static byte[] Frame(MacAddress to, MacAddress from, byte fill, int length = 100)
    {
        var f = new byte[length];
        Array.Fill(f, fill);
        to.Write(f);
        from.Write(f.AsSpan(6));
        return f;
    }

    [Fact]
    public async Task Attach_Picks_Free_Devids_And_Refuses_Bad_Options()
    {
        var sw = hv.Switch("br0");
        var d = hv.CreateDomain(Config("attach"));
        await using var first = d.AttachNic(sw);
        await using var second = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        first.DevId.Should().Be(0);
        second.DevId.Should().Be(1);
        first.Mac.ToString().Should().StartWith("00:16:3e:");
        hv.XenStore.Read($"/local/domain/{d.Id}/device/vif/1/mac").Should().Be("00:16:3e:00:00:42");
        hv.XenStore.Read(first.BackendPath + "/rate").Should().BeNull("no rate, no node");
        FluentActions.Invoking(() => d.AttachNic(sw, new NicOptions { DevId = 1 })).Should().Throw<InvalidOperationException>().WithMessage("*already has a vif 1*");
        FluentActions.Invoking(() => d.AttachNic(sw, new NicOptions { Mac = MacAddress.Broadcast })).Should().Throw<ArgumentException>().WithMessage("*group address*");
        FluentActions.Invoking(() => d.AttachNic(sw, new NicOptions { RateBytesPerSecond = 0 })).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => d.AttachNic(sw, new NicOptions { RateBytesPerSecond = 10, RateInterval = TimeSpan.FromMilliseconds(1) })).Should().Throw<ArgumentException>().WithMessage("*no whole byte*");
        FluentActions.Invoking(() => d.AttachNic(sw, new NicOptions { QueueFrames = 0 })).Should().Throw<ArgumentException>();
        d.Destroy();
        FluentActions.Invoking(() => d.AttachNic(sw)).Should().Throw<InvalidOperationException>().WithMessage("*live domain*");
        await first.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        await second.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.XenStore.Read(first.BackendPath + "/state").Should().BeNull("the domain's death detached the vif");
    }

    [Fact]
    public async Task Split_Event_Channels_Carry_Transmit_And_Receive_Notifications_Separately()
    {
        var sw = hv.Switch("br-split");
        using var sink = sw.ConnectHost(SinkMac);
        var d = hv.CreateDomain(Config("split"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        using var posted = new SemaphoreSlim(0);
        List<netif_tx_response>? tx = null;
        List<netif_rx_response>? rx = null;
        byte[]? got = null;
        uint txPort = 0, rxPort = 0;
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect(splitChannels: true).Should().BeTrue();
            (txPort, rxPort) = (f.Port, f.RxPort);
            f.Fill(0, 0, Frame(SinkMac, GuestMac, 0xA1));
            tx = f.Transmit(new netif_tx_request { gref = f.GrantPage(0, readOnly: true), size = 100, id = 7 });
            f.PostRx(3, f.GrantPage(1));
            f.Push();
            posted.Release();
            rx = f.WaitRx(1);
            got = f.ReadData(1, 0, 100);
        });
        (await posted.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        sink.Send(Frame(GuestMac, SinkMac, 0xB2));
        await d.ExitWithinAsync();
        (await run).Should().BeNull();

        txPort.Should().NotBe(rxPort);
        tx!.Single().Should().Be(new netif_tx_response { id = 7, status = Netif.NETIF_RSP_OKAY });
        rx!.Single().id.Should().Be(3);
        rx!.Single().status.Should().Be(100);
        got.Should().Equal(Frame(GuestMac, SinkMac, 0xB2));
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        sink.TryReceive(buffer, out var n).Should().BeTrue();
        buffer.AsSpan(0, n).ToArray().Should().Equal(Frame(SinkMac, GuestMac, 0xA1));
        vif.Stats.Connects.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task Only_One_Split_Channel_Refuses_The_Connection()
    {
        var d = hv.CreateDomain(Config("half-split"));
        await using var vif = d.AttachNic(hv.Switch("br0"), new NicOptions { Mac = GuestMac });
        string? error = null;
        var connected = true;
        await TestNetFront.RunAsync(d, f =>
        {
            connected = f.Connect(x => x.WriteFrontend("event-channel-tx", x.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            error = f.ReadBackend("error");
        });

        connected.Should().BeFalse();
        error.Should().Contain("event-channel-tx and event-channel-rx");
        d.Destroy();
    }

    [Fact]
    public async Task A_Frontend_That_Reconnects_Gets_A_New_Port_On_The_Switch()
    {
        var sw = hv.Switch("br-reconnect");
        using var sink = sw.ConnectHost(SinkMac);
        var d = hv.CreateDomain(Config("reconnect"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        var ports = new List<int>();
        await TestNetFront.RunAsync(d, f =>
        {
            for (var round = 0; round < 2; round++)
            {
                f.Connect().Should().BeTrue();
                ports.Add(sw.Ports.Count);
                f.Fill(round, 0, Frame(SinkMac, GuestMac, (byte)round));
                f.Transmit(new netif_tx_request { gref = f.GrantPage(round, readOnly: true), size = 100, id = (ushort)round }).Single().status.Should().Be((short)Netif.NETIF_RSP_OKAY);
                f.SwitchState(XenbusState.Closing);
                f.WaitBackend(s => s == XenbusState.Closing);
                f.SwitchState(XenbusState.Closed);
                f.WaitBackend(s => s == XenbusState.Closed);
                f.SwitchState(XenbusState.Initialising);
            }
        });

        ports.Should().Equal(2, 2);
        vif.Stats.Connects.Should().Be(2);
        vif.Stats.Disconnects.Should().Be(2);
        vif.Stats.TxPackets.Should().Be(2);
        sink.Stats.FramesOut.Should().Be(2);
        sw.PortOf(GuestMac).Should().BeNull("the vif's address was forgotten when it left");
        hv.HostGrants.MappingCount.Should().Be(0);
        d.Destroy();
    }
}
