using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Backends.Network;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Guest.Network;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// Hostile network frontends: every malformed transmit packet is answered (NETIF_RSP_ERROR or
/// DROPPED) and nothing of it reaches the switch; bad receive grants are answered ERROR; a ring
/// overrun or a packet that runs past what was published crashes only the domain that did it.
/// </summary>
public sealed class NetBackAttackTests : IDisposable
{
    private static readonly MacAddress SinkMac = MacAddress.Parse("02:00:00:00:00:99");
    private static readonly MacAddress GuestMac = MacAddress.Parse("00:16:3e:00:00:66");
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });
    private readonly VirtualSwitch sw;
    private readonly SwitchHostPort sink;

    public NetBackAttackTests()
    {
        sw = hv.Switch("br-hostile");
        sink = sw.ConnectHost(SinkMac);
    }

    public void Dispose() => hv.Dispose();

    private static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 8 };

    /// <summary>Writes a frame to the sink into data page <paramref name="page"/> at <paramref name="offset"/>: header, a tag, then a pattern up to <paramref name="length"/>.</summary>
    private static byte[] FrameBytes(int length, int tag)
    {
        var f = new byte[length];
        SinkMac.Write(f);
        GuestMac.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), NetKernel.EtherType);
        if (length >= 18)
        {
            BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(14), tag);
        }

        for (var i = 18; i < length; i++)
        {
            f[i] = (byte)(i * 31 + tag);
        }

        return f;
    }

    private static netif_tx_request Req(uint gref, int offset, int size, int flags = 0, int id = 0) =>
        new() { gref = gref, offset = (ushort)offset, size = (ushort)size, flags = (ushort)flags, id = (ushort)id };

    private List<byte[]> SinkFrames()
    {
        var frames = new List<byte[]>();
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        while (sink.TryReceive(buffer, out var n))
        {
            frames.Add(buffer.AsSpan(0, n).ToArray());
        }

        return frames;
    }

    /// <summary>
    /// Runs hostile packets from a raw frontend (pages 0..39 granted read-only, each holding a
    /// 1514-byte frame tagged with its page number), then one good frame (tag 999, which must be
    /// answered OKAY and reach the sink). Returns the responses and what reached the sink.
    /// </summary>
    private async Task<(List<List<netif_tx_response>> Responses, NetBack Vif, List<byte[]> Sink)> Attack(Func<TestNetFront, IEnumerable<netif_tx_request[]>> packets)
    {
        var d = hv.CreateDomain(Config("hostile"));
        var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        var responses = new List<List<netif_tx_response>>();
        await TestNetFront.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var p = 0; p < 40; p++)
            {
                f.Fill(p, 0, FrameBytes(VirtualSwitch.MaxFrameBytes, p));
                f.GrantPage(p, readOnly: true);
            }

            foreach (var packet in packets(f))
            {
                responses.Add(f.Transmit(packet));
            }

            f.Fill(40, 100, FrameBytes(200, 999));
            f.GrantPage(40, readOnly: true);
            f.Transmit(Req(TestNetFront.DataRef(40), 100, 200, id: 4040)).Single().status.Should().Be((short)Netif.NETIF_RSP_OKAY, "the ring still serves good packets");
        });

        var frames = SinkFrames();
        frames.Should().NotBeEmpty();
        frames[^1].Should().Equal(FrameBytes(200, 999));
        d.Destroy();
        await vif.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
        return (responses, vif, frames[..^1]);
    }

    private static short[] Statuses(List<netif_tx_response> r) => [.. r.Select(x => x.status)];

    private const short Okay = Netif.NETIF_RSP_OKAY, Error = Netif.NETIF_RSP_ERROR, Dropped = Netif.NETIF_RSP_DROPPED, Null = Netif.NETIF_RSP_NULL;

    [Fact]
    public async Task PacketsShorterThanAnEthernetHeader_AreAnError()
    {
        var (rsp, vif, sink) = await Attack(f =>
        [
            [Req(TestNetFront.DataRef(0), 0, 0, id: 1)],
            [Req(TestNetFront.DataRef(1), 0, 13, id: 2)],
            [Req(TestNetFront.DataRef(2), 0, 14, id: 3)], // exactly a header: fine
        ]);

        rsp.Select(Statuses).Should().BeEquivalentTo(new[] { new[] { Error }, [Error], [Okay] }, o => o.WithStrictOrdering());
        rsp.Select(r => r[0].id).Should().Equal(1, 2, 3);
        sink.Should().ContainSingle().Which.Should().Equal(FrameBytes(VirtualSwitch.MaxFrameBytes, 2).AsSpan(0, 14).ToArray());
        vif.Stats.TxErrors.Should().Be(2);
    }

    [Fact]
    public async Task FragmentsAddingUpToMoreThanThePacket_AreAnError()
    {
        var (rsp, _, sink) = await Attack(f =>
        [
            [Req(TestNetFront.DataRef(0), 0, 100, Netif.NETTXF_more_data, 1), Req(TestNetFront.DataRef(1), 0, 200, id: 2)],
            [Req(TestNetFront.DataRef(2), 0, 100, Netif.NETTXF_more_data, 3), Req(TestNetFront.DataRef(3), 0, 60, Netif.NETTXF_more_data, 4), Req(TestNetFront.DataRef(4), 0, 60, id: 5)],
        ]);

        rsp.SelectMany(Statuses).Should().OnlyContain(s => s == Error).And.HaveCount(5);
        rsp[1].Select(r => r.id).Should().Equal(3, 4, 5);
        sink.Should().BeEmpty();
    }

    private static netif_tx_request[] Chain(int slots, int each)
    {
        var r = new netif_tx_request[slots];
        for (var i = 0; i < slots; i++)
        {
            // The first slot carries the whole size; fragments come from pages 1.. at offset 100.
            r[i] = i == 0
                ? Req(TestNetFront.DataRef(0), 0, slots * each, Netif.NETTXF_more_data, 100 + i)
                : Req(TestNetFront.DataRef(i), 100, each, i == slots - 1 ? 0 : Netif.NETTXF_more_data, 100 + i);
        }

        return r;
    }

    [Fact]
    public async Task More_Than_18_Fragments_Are_An_Error_And_19_Slots_Are_Reassembled_Exactly()
    {
        // netback's xenvif_count_requests: up to XEN_NETBK_LEGACY_SLOTS_MAX (18) fragments after the
        // first slot; 19 or 20 are answered NETIF_RSP_ERROR (21 is fatal, below).
        var (rsp, vif, sink) = await Attack(f => [Chain(20, 60), Chain(21, 60), Chain(19, 60)]);

        Statuses(rsp[0]).Should().HaveCount(20).And.OnlyContain(s => s == Error);
        Statuses(rsp[1]).Should().HaveCount(21).And.OnlyContain(s => s == Error);
        Statuses(rsp[2]).Should().HaveCount(19).And.OnlyContain(s => s == Okay);
        rsp[2].Select(r => (int)r.id).Should().Equal(Enumerable.Range(100, 19));
        var expected = new List<byte>(FrameBytes(VirtualSwitch.MaxFrameBytes, 0).AsSpan(0, 60).ToArray());
        for (var i = 1; i < 19; i++)
        {
            expected.AddRange(FrameBytes(VirtualSwitch.MaxFrameBytes, i).AsSpan(100, 60).ToArray());
        }

        sink.Should().ContainSingle().Which.Should().Equal(expected, "the fragments are joined in ring order");
        vif.Stats.TxErrors.Should().Be(2);
    }

    [Fact]
    public async Task A_First_Slot_Holding_Less_Than_An_Ethernet_Header_Is_An_Error()
    {
        // netback checks the first slot's own bytes (its size less the fragments') against ETH_HLEN.
        var (rsp, vif, sink) = await Attack(f =>
        [
            [Req(TestNetFront.DataRef(0), 0, 100, Netif.NETTXF_more_data, 1), Req(TestNetFront.DataRef(1), 0, 90, id: 2)],
            [Req(TestNetFront.DataRef(2), 0, 100, Netif.NETTXF_more_data, 3), Req(TestNetFront.DataRef(3), 0, 86, id: 4)],
        ]);

        Statuses(rsp[0]).Should().Equal(Error, Error);
        Statuses(rsp[1]).Should().Equal([Okay, Okay], "14 bytes in the first slot is a whole header");
        sink.Should().ContainSingle().Which.Should().HaveCount(100);
        vif.Stats.TxErrors.Should().Be(1);
    }

    [Fact]
    public async Task WellFormedFramesLongerThanTheMtu_AreDropped()
    {
        var (rsp, vif, sink) = await Attack(f =>
        [
            [Req(TestNetFront.DataRef(0), 0, 1515, id: 1)],
            [Req(TestNetFront.DataRef(1), 0, 3000, Netif.NETTXF_more_data, 2), Req(TestNetFront.DataRef(2), 0, 1500, id: 3)],
            [
                Req(TestNetFront.DataRef(3), 0, ushort.MaxValue, Netif.NETTXF_more_data, 4), // 65535 = 1535 here + 16 × 4000
                .. Enumerable.Range(0, 16).Select(i => Req(TestNetFront.DataRef(4 + i), 0, 4000, i == 15 ? 0 : Netif.NETTXF_more_data, 5 + i)),
            ],
        ]);

        rsp.SelectMany(Statuses).Should().OnlyContain(s => s == Dropped).And.HaveCount(20);
        sink.Should().BeEmpty();
        vif.Stats.TxDropped.Should().Be(3);
        vif.Stats.TxErrors.Should().Be(0);
    }

    [Fact]
    public async Task Multicast_Filter_Requests_Are_Answered_With_Their_Extra_Slots_And_Reach_Nobody()
    {
        var (rsp, vif, sink) = await Attack(f =>
        {
            static netif_extra_info Mcast(int type, int flags = 0)
            {
                var e = new netif_extra_info { type = (byte)type, flags = (byte)flags };
                var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<netif_extra_info>(ref e));
                byte[] group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
                group.CopyTo(bytes[2..]);
                return e;
            }

            // A dummy request carrying MCAST_ADD; then one carrying MCAST_DEL after a (later ignored) GSO slot.
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 0, Netif.NETTXF_extra_info, 1));
            f.QueueExtra(Mcast(Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD));
            f.Push();
            Statuses(f.WaitTx(2)).Should().Equal(Okay, Null);
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 0, Netif.NETTXF_extra_info, 2));
            f.QueueExtra(new netif_extra_info { type = Netif.XEN_NETIF_EXTRA_TYPE_GSO, flags = Netif.XEN_NETIF_EXTRA_FLAG_MORE, u = new netif_extra_info.U { gso = new netif_extra_info.Gso { size = 1448, type = Netif.XEN_NETIF_GSO_TYPE_TCPV4 } } });
            f.QueueExtra(Mcast(Netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL));
            f.Push();
            var second = f.WaitTx(3);
            Statuses(second).Should().Equal(Okay, Null, Null);
            second[0].id.Should().Be(2);
            return [];
        });

        rsp.Should().BeEmpty();
        sink.Should().BeEmpty();
        vif.Stats.TxMulticastRequests.Should().Be(2);
        vif.Stats.TxPackets.Should().Be(1, "only the final good frame");
    }

    [Fact]
    public async Task GrantsNotGivenToDomain0_AreAnError_And_Nothing_Reaches_The_Switch()
    {
        var (rsp, vif, sink) = await Attack(f =>
        {
            GuestGrants.GrantV1(f.G, f.GrantTable, 301, 7, f.DataAddress(5) >> 12); // granted, but to domain 7
            return
            [
                [Req(300, 0, 100, id: 1)], // never granted
                [Req(301, 0, 100, id: 2)],
                [Req(5000, 0, 100, id: 3)], // beyond the table
                [Req(uint.MaxValue, 0, 100, id: 4)],
                [Req(TestNetFront.DataRef(0), 0, 100, Netif.NETTXF_more_data, 5), Req(300, 0, 50, id: 6)], // a good slot, then a bad one
            ];
        });

        rsp.SelectMany(Statuses).Should().OnlyContain(s => s == Error).And.HaveCount(6);
        sink.Should().BeEmpty();
        vif.Stats.TxErrors.Should().Be(5);
    }

    [Fact]
    public async Task ReceiveBuffersWithBadGrants_AreAnsweredError_And_The_Next_Buffer_Gets_The_Next_Frame()
    {
        var d = hv.CreateDomain(Config("rx-hostile"));
        var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        using var ready = new SemaphoreSlim(0);
        using var sent = new SemaphoreSlim(0);
        List<netif_rx_response>? rx = null;
        byte[]? second = null;
        var run = TestNetFront.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            GuestGrants.GrantV1(f.G, f.GrantTable, TestNetFront.DataRef(1), 0, f.DataAddress(1) >> 12, readOnly: true);
            f.PostRx(10, 300); // never granted
            f.PostRx(11, TestNetFront.DataRef(1)); // read-only: the backend may not write it
            f.PostRx(12, f.GrantPage(2));
            f.Push();
            ready.Release();
            rx = f.WaitRx(3);
            second = f.ReadData(2, 0, rx[2].status > 0 ? rx[2].status : 0);
        });
        (await ready.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        for (var i = 0; i < 3; i++)
        {
            sink.Send(GuestMac, NetKernel.EtherType, FrameBytes(100 + i, i).AsSpan(14));
        }

        await d.ExitWithinAsync();
        (await run).Should().BeNull();
        rx!.Select(r => (int)r.id).Should().Equal([10, 11, 12], "each answer is in its request's slot");
        rx!.Select(r => r.status).Should().Equal(Error, Error, 102);
        second!.AsSpan(14).ToArray().Should().Equal(FrameBytes(102, 2).AsSpan(14).ToArray(), "the third frame landed whole in the good buffer");
        vif.Stats.RxErrors.Should().Be(2);
        vif.Stats.RxPackets.Should().Be(1);
        d.Meter.NetPacketsReceived.Should().Be(1);
        d.Destroy();
        await vif.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
    }

    /// <summary>A well-behaved neighbour: a managed netfront guest that echoes frames back to the sink until "bye".</summary>
    private static Action<Paravirt.Guest.GuestRuntime> Echo => rt =>
    {
        using var fe = NetFrontend.Connect(rt);
        var frame = new byte[NetFrontend.MaxFrameBytes];
        while (true)
        {
            var n = fe.Receive(frame);
            if (BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) != NetKernel.EtherType)
            {
                continue; // not for the echo (a flooded frame meant for someone else)
            }

            var bye = frame.AsSpan(14, n - 14).SequenceEqual("bye"u8);
            frame.AsSpan(6, 6).CopyTo(frame);
            fe.Mac.CopyTo(frame.AsSpan(6));
            fe.Send(frame.AsSpan(0, n));
            if (bye)
            {
                fe.Flush();
                return;
            }
        }
    };

    private async Task EchoRoundTrip(MacAddress neighbour, string text)
    {
        sink.Send(neighbour, NetKernel.EtherType, System.Text.Encoding.ASCII.GetBytes(text));
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        var n = await sink.ReceiveAsync(buffer, TestContext.Current.CancellationToken).AsTask().WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        System.Text.Encoding.ASCII.GetString(buffer, 14, n - 14).Should().Be(text);
        MacAddress.Read(buffer.AsSpan(6)).Should().Be(neighbour);
    }

    private async Task OverrunCrashesOnlyTheAttacker(Action<TestNetFront> attack, string reason, bool sendToAttacker = false)
    {
        var before = hv.FreeFrames;
        var neighbourMac = MacAddress.Parse("00:16:3e:00:00:77");
        var neighbour = hv.CreateDomain(Config("neighbour"));
        var neighbourVif = neighbour.AttachNic(sw, new NicOptions { Mac = neighbourMac });
        var echo = NetKernel.Start(neighbour, Echo);
        await neighbourVif.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        await EchoRoundTrip(neighbourMac, "before");

        var attacker = hv.CreateDomain(Config("overrun"));
        var attackerVif = attacker.AttachNic(sw, new NicOptions { Mac = GuestMac });
        _ = TestNetFront.Start(attacker, f =>
        {
            f.Connect().Should().BeTrue();
            attack(f);
            f.WaitTx(1); // the domain is crashed under it
        });
        if (sendToAttacker)
        {
            // A frame for the attacker makes netback take from its receive ring (before or after the
            // overrun: without buffers posted the frame waits in the port's queue).
            await attackerVif.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
            sink.Send(GuestMac, NetKernel.EtherType + 1, "knock"u8); // flooded (the attacker never sent): the neighbour ignores it
        }

        var exit = await attacker.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain($"netback vif{attacker.Id}.0").And.Contain(reason);
        await attackerVif.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        attackerVif.Stats.ProtocolErrors.Should().Be(1);
        attackerVif.Stats.TxPackets.Should().Be(0);
        sw.Ports.Should().HaveCount(2, "the attacker's port left the switch; the sink and the neighbour remain");
        hv.HostGrants.MappingCount.Should().Be(2, "only the neighbour's two rings are still mapped");

        await EchoRoundTrip(neighbourMac, "after");
        sink.Send(neighbourMac, NetKernel.EtherType, "bye"u8);
        await echo.WaitAsync(neighbour);
        neighbourVif.Stats.ProtocolErrors.Should().Be(0);
        attacker.Destroy();
        neighbour.Destroy();
        await attackerVif.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        await neighbourVif.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
        hv.FreeFrames.Should().Be(before);
    }

    [Fact]
    public Task TransmitProducerFarAhead_CrashesOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.SetTxProducer(TestNetFront.RingSize + 1);
            f.Notify();
        }, "transmit request producer is more than a ring");

    [Fact]
    public Task ReceiveProducerFarAhead_CrashesOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.SetRxProducer(0x8000_0000);
            f.Notify();
        }, "receive request producer is more than a ring", sendToAttacker: true);

    [Fact]
    public Task APacketContinuingPastThePublishedRequests_CrashesOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.GrantPage(0, readOnly: true);
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 200, Netif.NETTXF_more_data, 1));
            f.Push();
        }, "continues");

    [Fact]
    public Task A_First_Slot_Crossing_The_End_Of_Its_Page_CrashesOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.GrantPage(0, readOnly: true);
            f.QueueTx(Req(TestNetFront.DataRef(0), 4000, 200, id: 1));
            f.Push();
        }, "crosses the end of its page");

    [Fact]
    public Task A_Fragment_Crossing_The_End_Of_Its_Page_CrashesOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.GrantPage(0, readOnly: true);
            f.GrantPage(1, readOnly: true);
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 300, Netif.NETTXF_more_data, 1));
            f.QueueTx(Req(TestNetFront.DataRef(1), 4000, 200, id: 2));
            f.Push();
        }, "crosses the end of its page");

    [Fact]
    public Task Twenty_One_Fragments_CrashOnlyThatDomain() =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            for (var p = 0; p < 22; p++)
            {
                f.GrantPage(p, readOnly: true);
            }

            f.Transmit(Chain(22, 60));
        }, "fatal_skb_slots");

    [Theory]
    [InlineData(0, Netif.XEN_NETIF_GSO_TYPE_TCPV4, "GSO size 0")]
    [InlineData(1448, 3, "GSO type 3")]
    [InlineData(1448, Netif.XEN_NETIF_GSO_TYPE_NONE, "GSO type 0")]
    public Task A_Gso_Slot_Without_A_Size_Or_With_An_Unknown_Type_CrashesOnlyThatDomain(int size, int type, string reason) =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.GrantPage(0, readOnly: true);
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 200, Netif.NETTXF_extra_info, 1));
            f.QueueExtra(new netif_extra_info { type = Netif.XEN_NETIF_EXTRA_TYPE_GSO, u = new netif_extra_info.U { gso = new netif_extra_info.Gso { size = (ushort)size, type = (byte)type } } });
            f.Push();
        }, reason);

    [Theory]
    [InlineData(Netif.XEN_NETIF_EXTRA_TYPE_NONE)]
    [InlineData(Netif.XEN_NETIF_EXTRA_TYPE_MAX)]
    [InlineData(200)]
    public Task An_Extra_Info_Slot_Of_An_Unknown_Type_CrashesOnlyThatDomain(int type) =>
        OverrunCrashesOnlyTheAttacker(f =>
        {
            f.GrantPage(0, readOnly: true);
            f.QueueTx(Req(TestNetFront.DataRef(0), 0, 200, Netif.NETTXF_extra_info, 1));
            f.QueueExtra(new netif_extra_info { type = (byte)type });
            f.Push();
        }, $"extra-info slot of type {type}");

    [Fact]
    public async Task MissingOrBadConnectionKeys_RefuseTheConnection()
    {
        var d = hv.CreateDomain(Config("badkeys"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = GuestMac });
        var outcomes = new List<(bool Connected, string? Error)>();
        await TestNetFront.RunAsync(d, f =>
        {
            void Try(Action<TestNetFront> change)
            {
                var ok = f.Connect(change);
                outcomes.Add((ok, f.ReadBackend("error")));
                f.SwitchState(XenbusState.Closed);
                f.WaitBackend(s => s == XenbusState.Closed);
                f.SwitchState(XenbusState.Initialising);
            }

            Try(x => x.WriteFrontend("request-rx-copy", "0"));
            Try(x => x.WriteFrontend("tx-ring-ref", "400"));
            Try(x => x.WriteFrontend("event-channel", "1000"));
            Try(x => x.WriteFrontend("rx-ring-ref", "-1"));
            Try(x => x.WriteFrontend("multi-queue-num-queues", "2"));
        });

        outcomes.Should().OnlyContain(o => !o.Connected);
        outcomes[0].Error.Should().Contain("request-rx-copy");
        outcomes[1].Error.Should().Contain("grant 400");
        outcomes[2].Error.Should().Contain("event channel 1000");
        outcomes[3].Error.Should().Contain("rx-ring-ref");
        outcomes[4].Error.Should().Contain("multi-queue");
        vif.Stats.Connects.Should().Be(0);
        sw.Ports.Should().HaveCount(1, "no refused connection joined the switch");
        hv.HostGrants.MappingCount.Should().Be(0, "a refused connection leaves no mapping behind");
        d.Destroy();
    }
}
