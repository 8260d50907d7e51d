using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Paravirt.Tests.Backends.Network.TestPackets;

namespace Paravirt.Tests.Backends.Network;

/// <summary>
/// GSO and checksum offload through netback and the switch: a frame a test frontend sends reaches
/// frontends and the host port in the form each can take (whole with its GSO slot, or as
/// segments; with its checksum left blank, or computed), and requests whose headers do not fit
/// what they ask for are refused as netback refuses them.
/// </summary>
public sealed class NetBackOffloadTests : IDisposable
{
    private static readonly MacAddress SinkMac = MacAddress.Parse("02:00:00:00:00:99");
    private static readonly MacAddress SenderMac = MacAddress.Parse("00:16:3e:00:00:a1");
    private static readonly MacAddress Nobody = MacAddress.Parse("02:00:00:00:00:77"); // never learned: frames to it flood
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 192 });

    public void Dispose() => hv.Dispose();

    private static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 16 };

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A receiving frontend: writes <paramref name="features"/>, posts <paramref name="buffers"/> buffers, says it is ready, then collects <paramref name="responses"/> responses into packets.</summary>
    private sealed class Receiver
    {
        private List<TestNetFront.RxPacket>? _packets;

        public Receiver(Hypervisor hv, VirtualSwitch sw, string name, string[] features, int buffers, int responses, SemaphoreSlim ready, int mtu = 1500)
        {
            Domain = hv.CreateDomain(Config(name));
            Vif = Domain.AttachNic(sw, new NicOptions { Mtu = mtu });
            Run = TestNetFront.Start(Domain, f =>
            {
                f.Connect(x => x.WriteFeatures(features)).Should().BeTrue();
                f.PostRxPages(0, buffers);
                f.Push();
                ready.Release();
                _packets = f.Packets(f.WaitRx(responses).Select(r => (0, r)));
            });
        }

        public Domain Domain { get; }

        public NetBack Vif { get; }

        public Task<Exception?> Run { get; }

        public List<TestNetFront.RxPacket> Packets => _packets ?? throw new InvalidOperationException("the receiver did not finish");

        public async Task FinishAsync()
        {
            await Domain.ExitWithinAsync();
            (await Run).Should().BeNull();
        }
    }

    private static async Task ReadyAsync(SemaphoreSlim ready, int count)
    {
        for (var i = 0; i < count; i++)
        {
            (await ready.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue("every receiver connected and posted its buffers");
        }
    }

    private static List<byte[]> Drain(SwitchHostPort port)
    {
        var frames = new List<byte[]>();
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        while (port.TryReceive(buffer, out var n))
        {
            frames.Add(buffer[..n]);
        }

        return frames;
    }

    private async Task<(List<netif_tx_response> Responses, NetBack Vif)> SendAsync(VirtualSwitch sw, Action<TestNetFront, List<List<netif_tx_response>>> body, int mtu = 1500)
    {
        var d = hv.CreateDomain(Config("sender"));
        var vif = d.AttachNic(sw, new NicOptions { Mac = SenderMac, Mtu = mtu });
        var all = new List<List<netif_tx_response>>();
        await TestNetFront.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            body(f, all);
        });
        return ([.. all.SelectMany(r => r)], vif);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_Gso_Frame_Reaches_A_Gso_Frontend_Whole_And_Everyone_Else_As_Segments_With_Their_Checksums(bool ipv6)
    {
        const int Payload = 64000;
        var Mss = ipv6 ? 1428 : 1448; // what Linux's TCP sends with timestamps over a 1500-byte MTU
        var gso = Tcp(Nobody, SenderMac, ipv6, 40000, 5001, 0x7FFF_FF00, Ack | Psh | Cwr, Payload, seed: 5);
        var segments = (Payload + Mss - 1) / Mss;
        var dataSlots = (gso.Length + 4095) / 4096;
        var sw = hv.Switch("br-gso");
        using var sink = sw.ConnectHost(SinkMac);
        using var ready = new SemaphoreSlim(0);
        var whole = new Receiver(hv, sw, "gso", ["feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-ipv6-csum-offload"], dataSlots + 1, dataSlots + 1, ready);
        var full = new Receiver(hv, sw, "no-csum", ["feature-no-csum-offload"], segments, segments, ready);
        var blank = new Receiver(hv, sw, "blank", ["feature-ipv6-csum-offload"], segments, segments, ready);
        await ReadyAsync(ready, 3);

        var type = ipv6 ? Netif.XEN_NETIF_GSO_TYPE_TCPV6 : Netif.XEN_NETIF_GSO_TYPE_TCPV4;
        var (tx, sender) = await SendAsync(sw, (f, all) => all.Add(f.SendFrame(gso, 0, Netif.NETTXF_csum_blank | Netif.NETTXF_data_validated, TestNetFront.Gso(Mss, type))));
        foreach (var r in new[] { whole, full, blank })
        {
            await r.FinishAsync();
        }

        tx.Select(r => r.status).Should().Equal([Netif.NETIF_RSP_OKAY, Netif.NETIF_RSP_NULL, .. Enumerable.Repeat((short)Netif.NETIF_RSP_OKAY, dataSlots - 1)]);
        sender.Stats.TxGsoPackets.Should().Be(1);
        sender.Stats.TxPackets.Should().Be(1);
        sender.Stats.TxBytes.Should().Be(gso.Length);

        // The GSO frontend: one packet in many slots, its GSO slot after the first, the bytes as sent.
        var p = whole.Packets.Should().ContainSingle().Subject;
        p.Data.Should().Equal(gso);
        p.Slots.Should().Be(dataSlots + 1);
        p.Flags.Should().Be(Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated | Netif.NETRXF_extra_info | Netif.NETRXF_more_data);
        var extra = p.Extras.Should().ContainSingle().Subject;
        extra.type.Should().Be(Netif.XEN_NETIF_EXTRA_TYPE_GSO);
        ((int)extra.u.gso.size, extra.u.gso.type).Should().Be((Mss, (byte)type));
        whole.Vif.Stats.RxGsoPackets.Should().Be(1);
        whole.Vif.Stats.RxSegmented.Should().Be(0);

        // Without GSO and without checksum offload: segments with every checksum computed.
        full.Packets.Should().OnlyContain(x => x.Slots == 1 && x.Flags == 0 && x.Extras.Count == 0);
        TcpSegmenterTests.ShouldBeSegmentsOf([.. full.Packets.Select(x => x.Data)], gso, Mss, fullChecksums: true);
        full.Vif.Stats.RxSegmented.Should().Be(1);
        full.Vif.Stats.RxChecksumsCompleted.Should().Be(segments);
        full.Vif.Stats.RxPackets.Should().Be(segments);

        // Without GSO, with checksum offload: segments whose checksums are left blank, and flagged so.
        blank.Packets.Should().OnlyContain(x => x.Slots == 1 && x.Flags == (Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated));
        TcpSegmenterTests.ShouldBeSegmentsOf([.. blank.Packets.Select(x => x.Data)], gso, Mss, fullChecksums: false);
        blank.Vif.Stats.RxChecksumsCompleted.Should().Be(0);

        // The host port takes no offloads: segments with checksums.
        TcpSegmenterTests.ShouldBeSegmentsOf(Drain(sink), gso, Mss, fullChecksums: true);
        sink.Stats.Segmented.Should().Be(1);
        sink.Stats.ChecksumsCompleted.Should().Be(segments);
        sink.Stats.FramesOut.Should().Be(1, "the port queued one GSO frame");
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public async Task A_Blank_Checksum_Is_Computed_For_Whoever_Cannot_Finish_It(bool ipv6, bool tcp)
    {
        var blankFrame = tcp ? Tcp(Nobody, SenderMac, ipv6, 1234, 80, 99, Ack | Psh, 1001, seed: 3) : Udp(Nobody, SenderMac, ipv6, 5000, 53, 777, seed: 4);
        var validated = tcp ? Tcp(Nobody, SenderMac, ipv6, 1234, 80, 2000, Ack, 10, csum: Csum.Full) : Udp(Nobody, SenderMac, ipv6, 5000, 53, 10, csum: Csum.Full);
        var sw = hv.Switch("br-csum");
        using var sink = sw.ConnectHost(SinkMac);
        using var ready = new SemaphoreSlim(0);
        var noOffload = new Receiver(hv, sw, "no-offload", ["feature-no-csum-offload"], 2, 2, ready);
        var v4Only = new Receiver(hv, sw, "v4-only", [], 2, 2, ready);
        var both = new Receiver(hv, sw, "both", ["feature-ipv6-csum-offload"], 2, 2, ready);
        await ReadyAsync(ready, 3);
        var (tx, _) = await SendAsync(sw, (f, all) =>
        {
            all.Add(f.SendFrame(blankFrame, 0, Netif.NETTXF_csum_blank | Netif.NETTXF_data_validated));
            all.Add(f.SendFrame(validated, 2, Netif.NETTXF_data_validated));
        });
        foreach (var r in new[] { noOffload, v4Only, both })
        {
            await r.FinishAsync();
        }

        tx.Should().OnlyContain(r => r.status == Netif.NETIF_RSP_OKAY);
        var completed = (byte[])blankFrame.Clone();
        SetChecksum(completed, Csum.Full);
        TransportChecksumOk(completed).Should().BeTrue();

        var takesBlank = new[] { (noOffload, false), (v4Only, !ipv6), (both, true) };
        foreach (var (r, blank) in takesBlank)
        {
            r.Packets.Should().HaveCount(2);
            var (first, second) = (r.Packets[0], r.Packets[1]);
            if (blank)
            {
                first.Flags.Should().Be(Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated);
                first.Data.Should().Equal(blankFrame, "a receiver that finishes checksums gets the frame as sent");
                r.Vif.Stats.RxChecksumsCompleted.Should().Be(0);
            }
            else
            {
                first.Flags.Should().Be(0);
                first.Data.Should().Equal(completed, "the checksum is computed, nothing else changes");
                TransportChecksumOk(first.Data).Should().BeTrue();
                r.Vif.Stats.RxChecksumsCompleted.Should().Be(1);
            }

            second.Flags.Should().Be(Netif.NETRXF_data_validated);
            second.Data.Should().Equal(validated);
        }

        var host = Drain(sink);
        host.Should().HaveCount(2);
        host[0].Should().Equal(completed);
        host[1].Should().Equal(validated);
        sink.Stats.ChecksumsCompleted.Should().Be(1);
    }

    [Fact]
    public async Task Offload_Requests_Their_Headers_Do_Not_Fit_Are_Answered_Okay_And_Dropped_As_Netback_Does()
    {
        var sw = hv.Switch("br-bad-offload");
        using var sink = sw.ConnectHost(SinkMac);
        var tcp4 = Tcp(SinkMac, SenderMac, false, 1, 2, 3, Ack, 3000);
        var arp = Tcp(SinkMac, SenderMac, false, 1, 2, 3, Ack, 20);
        arp[12] = 0x08;
        arp[13] = 0x06;
        var small = Tcp(SinkMac, SenderMac, false, 1, 2, 3, Ack, 1000);
        var icmp = (byte[])small.Clone();
        icmp[23] = 1;
        var truncated = small[..100];
        var fragment = (byte[])small.Clone();
        fragment[20] |= 0x20;
        var udp4 = Udp(SinkMac, SenderMac, false, 1, 2, 3000);
        var tcp6 = Tcp(SinkMac, SenderMac, true, 1, 2, 3, Ack, 3000);
        var noBlank = Tcp(SinkMac, SenderMac, false, 7, 8, 1000, Ack, 2000, csum: Csum.Zero);
        var good = Tcp(SinkMac, SenderMac, false, 9, 9, 9, Ack, 10, csum: Csum.Full);
        const int Blank = Netif.NETTXF_csum_blank;
        var (tx, vif) = await SendAsync(sw, (f, all) =>
        {
            all.Add(f.SendFrame(arp, 0, Blank));
            all.Add(f.SendFrame(icmp, 0, Blank));
            all.Add(f.SendFrame(truncated, 0, Blank));
            all.Add(f.SendFrame(fragment, 0, Blank));
            all.Add(f.SendFrame(tcp6, 0, Blank, TestNetFront.Gso(1000, Netif.XEN_NETIF_GSO_TYPE_TCPV4))); // IPv6 under a TCPv4 type
            all.Add(f.SendFrame(tcp4, 0, Blank, TestNetFront.Gso(1000, Netif.XEN_NETIF_GSO_TYPE_TCPV6))); // and the other way
            all.Add(f.SendFrame(udp4, 0, Blank, TestNetFront.Gso(1000, Netif.XEN_NETIF_GSO_TYPE_TCPV4))); // not TCP
            all.Add(f.SendFrame(tcp4, 0, Blank, TestNetFront.Gso(47, Netif.XEN_NETIF_GSO_TYPE_TCPV4))); // an MSS below 48
            f.SendFrame(tcp4, 0, Blank, TestNetFront.Gso(1449, Netif.XEN_NETIF_GSO_TYPE_TCPV4)).Select(r => r.status).Should().Equal(
                [Netif.NETIF_RSP_DROPPED, Netif.NETIF_RSP_NULL], "segments of 66 + 1449 bytes would not fit the MTU");
            f.SendFrame(noBlank, 0, 0, TestNetFront.Gso(1000, Netif.XEN_NETIF_GSO_TYPE_TCPV4)).Select(r => r.status).Should().Equal(
                [Netif.NETIF_RSP_OKAY, Netif.NETIF_RSP_NULL], "a GSO frame without csum_blank gets its partial checksum written (checksum fixup)");
            f.SendFrame(good, 0).Single().status.Should().Be((short)Netif.NETIF_RSP_OKAY);
        });

        tx.Where(r => r.status != Netif.NETIF_RSP_NULL).Should().OnlyContain(r => r.status == Netif.NETIF_RSP_OKAY, "netback answers before its checksum setup refuses the packet");
        vif.Stats.TxOffloadDropped.Should().Be(8);
        vif.Stats.TxDropped.Should().Be(1);
        vif.Stats.TxChecksumFixups.Should().Be(1);
        vif.Stats.TxPackets.Should().Be(2);
        var frames = Drain(sink);
        frames.Should().HaveCount(3);
        var fixedUp = (byte[])noBlank.Clone();
        SetChecksum(fixedUp, Csum.Partial);
        TcpSegmenterTests.ShouldBeSegmentsOf(frames[..2], fixedUp, 1000, fullChecksums: true);
        frames[2].Should().Equal(good);
    }

    [Fact]
    public async Task Frames_Larger_Than_A_Page_Take_Several_Buffers_With_Feature_Sg_And_Are_Dropped_Without()
    {
        // Jumbo frames: every vif on the switch has an MTU of 9000; the host port keeps 1500.
        var sw = hv.Switch("br-jumbo");
        using var sink = sw.ConnectHost(SinkMac);
        using var ready = new SemaphoreSlim(0);
        var jumbo = Udp(Nobody, SenderMac, false, 1, 2, 9000 - 28, seed: 9, csum: Csum.Full);
        var small = Udp(Nobody, SenderMac, false, 1, 2, 100, csum: Csum.Full);
        jumbo.Length.Should().Be(9014);
        var sg = new Receiver(hv, sw, "sg", ["feature-sg"], 4, 4, ready, mtu: 9000);
        var noSg = new Receiver(hv, sw, "no-sg", [], 4, 1, ready, mtu: 9000);
        await ReadyAsync(ready, 2);
        var (tx, _) = await SendAsync(
            sw,
            (f, all) =>
            {
                all.Add(f.SendFrame(jumbo, 0));
                f.SendFrame([.. jumbo, 0], 0).Should().OnlyContain(r => r.status == Netif.NETIF_RSP_DROPPED, "9015 bytes is over the MTU");
                all.Add(f.SendFrame(small, 0));
            },
            mtu: 9000);
        await sg.FinishAsync();
        await noSg.FinishAsync();

        tx.Should().OnlyContain(r => r.status == Netif.NETIF_RSP_OKAY);
        sg.Packets.Should().HaveCount(2);
        sg.Packets[0].Data.Should().Equal(jumbo);
        sg.Packets[0].Slots.Should().Be(3);
        sg.Packets[1].Data.Should().Equal(small);
        noSg.Packets.Should().ContainSingle().Which.Data.Should().Equal(small);
        noSg.Vif.Stats.RxDropped.Should().Be(1, "a frame that needs three buffers cannot go to a frontend without feature-sg");
        Drain(sink).Should().ContainSingle().Which.Should().Equal(small);
        sink.Stats.TooLong.Should().Be(1, "the host port's MTU is 1500");
    }

    [Fact]
    public async Task With_Multicast_Control_Only_Added_Groups_Reach_The_Frontend()
    {
        var sw = hv.Switch("br-mcast");
        using var host = sw.ConnectHost(SinkMac);
        var d = hv.CreateDomain(Config("mcast"));
        var guestMac = MacAddress.Parse("00:16:3e:00:00:55");
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = guestMac });
        hv.XenStore.Read(vif.BackendPath + "/feature-multicast-control").Should().Be("1");
        hv.XenStore.Read(vif.BackendPath + "/feature-dynamic-multicast-control").Should().Be("1");
        var joined = MacAddress.Parse("01:00:5e:00:00:01");
        var other = MacAddress.Parse("01:00:5e:00:00:02");
        using var ready = new SemaphoreSlim(0);
        List<TestNetFront.RxPacket>? got = null;
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect(x => x.WriteFeatures("request-multicast-control")).Should().BeTrue();
            var add = new netif_extra_info { type = Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD };
            joined.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<netif_extra_info>(ref add))[2..]);
            f.QueueTx(new netif_tx_request { id = 1, flags = Netif.NETTXF_extra_info });
            f.QueueExtra(add);
            f.PostRxPages(0, 8);
            f.Push();
            f.WaitTx(2).Select(r => r.status).Should().Equal(Netif.NETIF_RSP_OKAY, Netif.NETIF_RSP_NULL);
            ready.Release();
            got = f.Packets(f.WaitRx(3).Select(r => (0, r)));
        });
        (await ready.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue();
        host.Send(other, 0x88B5, "other"u8);
        host.Send(joined, 0x88B5, "joined"u8);
        host.Send(MacAddress.Broadcast, 0x88B5, "broadcast"u8);
        host.Send(guestMac, 0x88B5, "unicast"u8);
        await d.ExitWithinAsync();
        (await run).Should().BeNull();

        got!.Select(p => System.Text.Encoding.ASCII.GetString(p.Data, 14, p.Data.Length - 14)).Should().Equal("joined", "broadcast", "unicast");
        vif.Stats.RxFiltered.Should().Be(1);
        vif.Stats.TxMulticastRequests.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task Without_Feature_Rx_Notify_A_Frame_Waits_At_Most_The_Short_Drain_Timeout()
    {
        var sw = hv.Switch("br-rx-notify");
        using var host = sw.ConnectHost(SinkMac);
        var d = hv.CreateDomain(Config("no-notify"));
        var guestMac = MacAddress.Parse("00:16:3e:00:00:56");
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = guestMac });
        using var connected = new SemaphoreSlim(0);
        using var expired = new SemaphoreSlim(0);
        using var posted = new SemaphoreSlim(0);
        List<TestNetFront.RxPacket>? got = null;
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect(x => x.WriteFrontend("feature-rx-notify", "0")).Should().BeTrue();
            connected.Release();
            expired.Wait(GuestRunner.Timeout).Should().BeTrue();
            f.PostRxPages(0, 2);
            f.Push();
            posted.Release();
            got = f.Packets(f.WaitRx(1).Select(r => (0, r)));
        });
        (await connected.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue();
        host.Send(guestMac, 0x88B5, "early"u8); // no buffers: it waits, then expires
        var deadline = DateTime.UtcNow + GuestRunner.Timeout;
        while (vif.Stats.RxExpired == 0)
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "netback drops a frame a frontend without feature-rx-notify leaves waiting (30 ms)");
            await Task.Delay(10, Ct);
        }

        expired.Release();
        (await posted.WaitAsync(GuestRunner.Timeout, Ct)).Should().BeTrue();
        host.Send(guestMac, 0x88B5, "late"u8);
        await d.ExitWithinAsync();
        (await run).Should().BeNull();
        System.Text.Encoding.ASCII.GetString(got!.Single().Data, 14, 4).Should().Be("late");
        vif.Stats.RxExpired.Should().Be(1);
        d.Destroy();
    }
}
