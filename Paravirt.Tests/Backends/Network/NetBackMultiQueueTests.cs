using System.Buffers.Binary;
using System.Globalization;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Paravirt.Tests.Backends.Network.TestPackets;

namespace Paravirt.Tests.Backends.Network;

/// <summary>Several queues per vif (io/netif.h multi-queue) and the control ring's receive hashing.</summary>
public sealed class NetBackMultiQueueTests : IDisposable
{
    private static readonly MacAddress HostMac = MacAddress.Parse("02:00:00:00:00:99");
    private static readonly MacAddress GuestMac = MacAddress.Parse("00:16:3e:00:00:4d");
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    private static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 16 };

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A TCP frame of flow <paramref name="flow"/> (its source port) from the host to the guest, with a full checksum.</summary>
    private static byte[] FlowFrame(int flow, int n) => Tcp(GuestMac, HostMac, false, (ushort)(20000 + flow), 80, (uint)(n * 100), Ack, 20 + n, seed: flow, csum: Csum.Full);

    [Theory]
    [InlineData(2, false)]
    [InlineData(4, true)]
    public async Task Each_Flow_Stays_On_One_Queue_And_Every_Queue_Transmits_Through_The_One_Port(int queues, bool split)
    {
        const int Flows = 32, PerFlow = 3;
        var sw = hv.Switch("br-mq");
        using var host = sw.ConnectHost(HostMac);
        var d = hv.CreateDomain(Config("mq"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac, MaxQueues = 4 });
        hv.XenStore.Read(vif.BackendPath + "/multi-queue-max-queues").Should().Be("4");
        using var ready = new SemaphoreSlim(0);
        List<(int Queue, netif_rx_response Response)>? rx = null;
        List<TestNetFront.RxPacket>? packets = null;
        var txStatuses = new List<short>();
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect(splitChannels: split, queues: queues).Should().BeTrue();
            for (var q = 0; q < queues; q++)
            {
                f.PostRxPages(q * 100, Flows * PerFlow, q); // any queue could get every frame
            }

            f.Push();
            ready.Release();
            rx = f.WaitRxAnyQueue(Flows * PerFlow);
            packets = f.Packets(rx);
            for (var q = 0; q < queues; q++)
            {
                var frame = Tcp(HostMac, GuestMac, false, 80, (ushort)(100 + q), 1, Ack, 30, seed: q, csum: Csum.Full);
                f.Fill(450 + q, 0, frame);
                f.GrantPage(450 + q, readOnly: true);
                f.QueueTx(new netif_tx_request { gref = TestNetFront.DataRef(450 + q), size = (ushort)frame.Length, id = (ushort)q }, q);
                f.Publish(q);
                f.Notify(q);
                txStatuses.Add(f.WaitTx(1, q).Single().status);
            }
        });
        (await ready.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue();
        vif.Queues.Should().Be(queues);
        sw.Ports.Should().HaveCount(2, "one port for the vif, whatever its queues");
        for (var n = 0; n < PerFlow; n++)
        {
            for (var flow = 0; flow < Flows; flow++)
            {
                host.Send(FlowFrame(flow, n));
            }
        }

        await d.ExitWithinAsync();
        (await run).Should().BeNull();

        packets.Should().HaveCount(Flows * PerFlow);
        packets!.Should().OnlyContain(p => TransportChecksumOk(p.Data));
        var byFlow = packets!.GroupBy(p => BinaryPrimitives.ReadUInt16BigEndian(p.Data.AsSpan(34)) - 20000).ToList();
        byFlow.Should().HaveCount(Flows);
        foreach (var flow in byFlow)
        {
            flow.Select(p => p.Queue).Distinct().Should().ContainSingle($"flow {flow.Key} stays on one queue");
            flow.Select(p => p.Data).Should().Equal(Enumerable.Range(0, PerFlow).Select(n => FlowFrame(flow.Key, n)), (a, b) => a.AsSpan().SequenceEqual(b), "in order");
        }

        packets!.Select(p => p.Queue).Distinct().Count().Should().BeGreaterThan(1, $"{Flows} flows spread over {queues} queues");
        txStatuses.Should().OnlyContain(s => s == Netif.NETIF_RSP_OKAY);
        var sent = new List<int>();
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        while (host.TryReceive(buffer, out var len))
        {
            sent.Add(BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(36)) - 100);
        }

        sent.Should().Equal(Enumerable.Range(0, queues), "each queue's transmit reached the host through the vif's port");
        vif.Stats.TxPackets.Should().Be(queues);
        vif.Stats.RxPackets.Should().Be(Flows * PerFlow);
        d.Destroy();
    }

    [Fact]
    public async Task Bad_Queue_Keys_Refuse_The_Connection()
    {
        var d = hv.CreateDomain(Config("mq-bad"));
        await using var vif = d.AttachNic(hv.Switch("br-mq-bad"), new NicOptions { Mac = GuestMac, MaxQueues = 3 });
        var outcomes = new List<(bool Connected, string? Error)>();
        await TestNetFront.RunAsync(d, f =>
        {
            void Try(int queues, string key, string value)
            {
                var ok = f.Connect(x => x.WriteFrontend(key, value), queues: queues);
                outcomes.Add((ok, f.ReadBackend("error")));
                f.SwitchState(XenbusState.Closed);
                f.WaitBackend(s => s == XenbusState.Closed);
                f.RemoveFrontend(key); // the next try starts from good keys
                f.SwitchState(XenbusState.Initialising);
            }

            Try(2, "multi-queue-num-queues", "0");
            Try(2, "multi-queue-num-queues", "4");
            Try(2, "multi-queue-num-queues", "two");
            Try(2, "multi-queue-num-queues", "3"); // queue-2 has no keys
            Try(2, "queue-1/rx-ring-ref", "x");
            Try(2, "queue-1/event-channel-tx", "5");
            Try(2, "queue-1/tx-ring-ref", "777");
            Try(1, "ctrl-ring-ref", "500");
            Try(2, "feature-sg", "1");
        });

        outcomes[0].Error.Should().Contain("multi-queue-num-queues 0: expected 1 to 3");
        outcomes[1].Error.Should().Contain("multi-queue-num-queues 4: expected 1 to 3");
        outcomes[2].Error.Should().Contain("multi-queue-num-queues 'two' is not a decimal number");
        outcomes[3].Error.Should().Contain("queue-2/tx-ring-ref is missing");
        outcomes[4].Error.Should().Contain("queue-1/rx-ring-ref 'x'");
        outcomes[5].Error.Should().Contain("queue-1/split event channels need both");
        outcomes[6].Error.Should().Contain("queue 1 tx ring: grant 777");
        outcomes[7].Error.Should().Contain("ctrl-ring-ref without event-channel-ctrl");
        outcomes.Take(8).Should().OnlyContain(o => !o.Connected);
        outcomes[8].Connected.Should().BeTrue("two queues with their keys connect");
        vif.Stats.Connects.Should().Be(1);
        d.Destroy();
        await vif.Detached.WaitAsync(GuestRunner.Timeout, Ct);
        hv.HostGrants.MappingCount.Should().Be(0, "refused connections leave no mapping behind");
    }

    [Fact]
    public async Task The_Control_Ring_Sets_Toeplitz_Hashing_With_Netbacks_Statuses_And_Frames_Follow_The_Mapping()
    {
        const int Queues = 4;
        var sw = hv.Switch("br-ctrl");
        using var host = sw.ConnectHost(HostMac);
        var d = hv.CreateDomain(Config("ctrl"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac, MaxQueues = Queues });
        hv.XenStore.Read(vif.BackendPath + "/feature-ctrl-ring").Should().Be("1");
        var key = RxQueueSelectorTests.RssKey;
        uint[] mapping = [3, 2, 1, 0, 3, 3, 1, 2];
        using var ready = new SemaphoreSlim(0);
        var answers = new List<(string What, xen_netif_ctrl_response Response)>();
        List<TestNetFront.RxPacket>? packets = null;
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect(queues: Queues, controlRing: true).Should().BeTrue();
            const int KeyPage = 300, MapPage = 301, BadMapPage = 302;
            f.Fill(KeyPage, 0, key);
            var keyRef = f.GrantPage(KeyPage, readOnly: true);
            f.Fill(MapPage, 0, [.. mapping.SelectMany(BitConverter.GetBytes)]);
            var mapRef = f.GrantPage(MapPage, readOnly: true);
            f.Fill(BadMapPage, 0, [.. new uint[] { 0, 1, 2, 4 }.SelectMany(BitConverter.GetBytes)]);
            var badMapRef = f.GrantPage(BadMapPage, readOnly: true);
            ushort id = 0;
            void Ask(string what, int type, uint a = 0, uint b = 0, uint c = 0) => answers.Add((what, f.Control(type, a, b, c, ++id)));

            Ask("flags without an algorithm", Netif.XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
            Ask("set flags without an algorithm", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4);
            Ask("unknown algorithm", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, 2);
            Ask("toeplitz", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
            Ask("flags", Netif.XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
            Ask("unknown flag", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, 0x10);
            Ask("set flags", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4 | Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
            Ask("key too long", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, keyRef, 41);
            Ask("key from a bad grant", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, 400, 40);
            Ask("key", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, keyRef, 40);
            Ask("mapping size", Netif.XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
            Ask("mapping too large", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 129);
            Ask("set mapping size", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 8);
            Ask("mapping past its size", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, mapRef, 8, 1);
            Ask("mapping offset wrapping", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, mapRef, 8, uint.MaxValue - 2);
            Ask("mapping to a queue that does not exist", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, badMapRef, 4, 0);
            Ask("mapping", Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, mapRef, 8, 0);
            Ask("grant mapping", Netif.XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING, 1, 1);
            Ask("invalid", Netif.XEN_NETIF_CTRL_TYPE_INVALID);
            Ask("unknown", 99);
            for (var q = 0; q < Queues; q++)
            {
                f.PostRxPages(q * 70, 66, q); // any queue could get every frame
            }

            f.Push();
            ready.Release();
            packets = f.Packets(f.WaitRxAnyQueue(16 * 2 * 2 + 2));
        });
        (await ready.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue();
        for (var flow = 0; flow < 16; flow++)
        {
            host.Send(FlowFrame(flow, 0));
            host.Send(FlowFrame(flow, 1));
        }

        host.Send(Udp(GuestMac, HostMac, false, 5, 6, 10, csum: Csum.Full));
        await d.ExitWithinAsync();
        (await run).Should().BeNull();

        const uint Success = Netif.XEN_NETIF_CTRL_STATUS_SUCCESS, Invalid = Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, NotSupported = Netif.XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;
        answers.Select(a => (a.What, a.Response.status)).Should().Equal(
            ("flags without an algorithm", NotSupported),
            ("set flags without an algorithm", Invalid),
            ("unknown algorithm", Invalid),
            ("toeplitz", Success),
            ("flags", Success),
            ("unknown flag", Invalid),
            ("set flags", Success),
            ("key too long", Invalid),
            ("key from a bad grant", Invalid),
            ("key", Success),
            ("mapping size", Success),
            ("mapping too large", Invalid),
            ("set mapping size", Success),
            ("mapping past its size", Invalid),
            ("mapping offset wrapping", Invalid),
            ("mapping to a queue that does not exist", Invalid),
            ("mapping", Success),
            ("grant mapping", NotSupported),
            ("invalid", NotSupported),
            ("unknown", NotSupported));
        answers.Select((a, i) => (int)a.Response.id).Should().Equal(Enumerable.Range(1, answers.Count), "each response echoes its request's id");
        answers.Single(a => a.What == "flags").Response.data.Should().Be(0xF, "netback hashes IPv4, IPv4+TCP, IPv6 and IPv6+TCP");
        answers.Single(a => a.What == "mapping size").Response.data.Should().Be(128);
        answers.Single(a => a.What == "unknown").Response.type.Should().Be(99);
        vif.Stats.ControlRequests.Should().Be(answers.Count);

        // Every frame: on the queue the mapping gives for its Toeplitz hash, with a hash extra slot saying so.
        packets.Should().HaveCount(33);
        foreach (var p in packets!)
        {
            var udp = p.Data[23] == 17;
            byte[] input = udp
                ? [.. p.Data.AsSpan(26, 8)]
                : [.. p.Data.AsSpan(26, 8), .. p.Data.AsSpan(34, 4)];
            var hash = TestPackets.Toeplitz(key, input);
            p.Queue.Should().Be((int)mapping[hash % 8]);
            p.Flags.Should().Be(Netif.NETRXF_extra_info);
            var extra = p.Extras.Should().ContainSingle().Subject;
            extra.type.Should().Be(Netif.XEN_NETIF_EXTRA_TYPE_HASH);
            extra.u.hash.type.Should().Be(udp ? (byte)Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4 : (byte)Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
            extra.u.hash.algorithm.Should().Be(Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<netif_extra_info>(ref extra));
            BinaryPrimitives.ReadUInt32LittleEndian(bytes[4..]).Should().Be(hash);
            p.Slots.Should().Be(2);
        }

        packets!.Select(p => p.Queue).Distinct().Count().Should().BeGreaterThan(1);
        d.Destroy();
    }

    [Fact]
    public async Task A_Control_Ring_Overrun_Crashes_The_Domain()
    {
        var d = hv.CreateDomain(Config("ctrl-overrun"));
        await using var vif = d.AttachNic(hv.Switch("br-ctrl-overrun"), new NicOptions { Mac = GuestMac });
        _ = TestNetFront.Start(d, f =>
        {
            f.Connect(controlRing: true).Should().BeTrue();
            f.G.Cpu.Memory.WriteVolatile(f.CtrlRing, 4, 1000); // req_prod more than a ring ahead
            f.NotifyControl();
            f.WaitTx(1); // the domain is crashed under it
        });
        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("control request producer");
        vif.Stats.ProtocolErrors.Should().Be(1);
        await vif.WaitForDisconnectAsync(Ct).WaitAsync(GuestRunner.Timeout, Ct);
        d.Destroy();
        await vif.Detached.WaitAsync(GuestRunner.Timeout, Ct);
        hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public void The_Default_Queue_Limit_Is_Linux_Netbacks()
    {
        NetBack.DefaultMaxQueues.Should().Be(Math.Min(8, Environment.ProcessorCount));
        var d = hv.CreateDomain(Config("limits"));
        FluentActions.Invoking(() => d.AttachNic(hv.Switch("br0"), new NicOptions { MaxQueues = 0 })).Should().Throw<ArgumentException>().WithMessage("*MaxQueues 0*");
        FluentActions.Invoking(() => d.AttachNic(hv.Switch("br0"), new NicOptions { MaxQueues = 65 })).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => d.AttachNic(hv.Switch("br0"), new NicOptions { Mtu = 67 })).Should().Throw<ArgumentException>().WithMessage("*Mtu 67*");
        FluentActions.Invoking(() => d.AttachNic(hv.Switch("br0"), new NicOptions { Mtu = 65522 })).Should().Throw<ArgumentException>();
        var vif = d.AttachNic(hv.Switch("br0"), new NicOptions { Mtu = 9000 });
        hv.XenStore.Read(vif.FrontendPath + "/mtu").Should().Be("9000");
        hv.XenStore.Read(vif.BackendPath + "/multi-queue-max-queues").Should().Be(NetBack.DefaultMaxQueues.ToString(CultureInfo.InvariantCulture));
        d.Destroy();
    }
}
