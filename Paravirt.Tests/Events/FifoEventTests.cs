using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Events;

/// <summary>The FIFO event channel ABI, against Xen 4.17's event_fifo.c, driven by a guest consuming events as Linux does.</summary>
public sealed class FifoEventTests : IDisposable
{
    private const uint Pending = 1u << EventChannel.EVTCHN_FIFO_PENDING;
    private const uint Masked = 1u << EventChannel.EVTCHN_FIFO_MASKED;
    private const uint Linked = 1u << EventChannel.EVTCHN_FIFO_LINKED;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    private static long Op<T>(GuestContext g, int cmd, ref T arg)
        where T : unmanaged
    {
        g.Cpu.Memory.Write(g.Scratch, arg);
        var rc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, (ulong)cmd, g.Scratch);
        arg = g.Cpu.Memory.Read<T>(g.Scratch);
        return rc;
    }

    private static uint BindIpi(GuestContext g, uint vcpu = 0)
    {
        var b = new evtchn_bind_ipi { vcpu = vcpu };
        Op(g, EventChannel.EVTCHNOP_bind_ipi, ref b).Should().Be(0);
        return b.port;
    }

    private static long Send(GuestContext g, uint port)
    {
        var s = new evtchn_send { port = port };
        return Op(g, EventChannel.EVTCHNOP_send, ref s);
    }

    private static long Close(GuestContext g, uint port)
    {
        var c = new evtchn_close { port = port };
        return Op(g, EventChannel.EVTCHNOP_close, ref c);
    }

    private static long Reset(GuestContext g)
    {
        var r = new evtchn_reset { dom = Xen.DOMID_SELF };
        return Op(g, EventChannel.EVTCHNOP_reset, ref r);
    }

    /// <summary>init_control on vCPU 0 and one event array page: ports 1..1023 have words, all masked.</summary>
    private static GuestFifo StartFifo(GuestContext g)
    {
        var fifo = new GuestFifo(g, g.Scratch + 0x1000);
        fifo.InitControl().Should().Be(0);
        fifo.ExpandArray().Should().Be(0);
        return fifo;
    }

    [Fact]
    public void Init_Control_Switches_To_Fifo_And_Ipis_Are_Consumed_In_The_Order_They_Were_Sent()
    {
        byte linkBits = 0;
        List<uint> consumed = [];
        uint[] ports = [];
        uint readyAfter = 1, upcallPending = 0;
        var wordsAfter = new List<uint>();
        GuestRunner.Run(_hv, g =>
        {
            var shared = GuestEvents.MapSharedInfo(g);
            var fifo = new GuestFifo(g, g.Scratch + 0x1000);
            fifo.InitControl(0, out linkBits).Should().Be(0);
            fifo.ExpandArray().Should().Be(0);
            ports = [BindIpi(g), BindIpi(g), BindIpi(g)];
            foreach (var p in ports)
            {
                fifo.Unmask(p).Should().Be(0);
            }

            g.Cpu.Memory.WriteVolatile(GuestEvents.LegacyVcpuInfo(shared, 0), 1, 0);
            Send(g, ports[2]).Should().Be(0);
            Send(g, ports[0]).Should().Be(0);
            Send(g, ports[1]).Should().Be(0);
            Send(g, ports[0]).Should().Be(0, "a second send of a queued port changes nothing");
            upcallPending = (uint)g.Cpu.Memory.ReadVolatile(GuestEvents.LegacyVcpuInfo(shared, 0), 1);
            consumed = fifo.Consume();
            readyAfter = fifo.Ready();
            wordsAfter.AddRange(ports.Select(fifo.Word));
        });

        linkBits.Should().Be(EventChannel.EVTCHN_FIFO_LINK_BITS);
        upcallPending.Should().Be(1, "queueing the first event raised the upcall");
        consumed.Should().Equal(ports[2], ports[0], ports[1]);
        readyAfter.Should().Be(0);
        wordsAfter.Should().AllSatisfy(w => w.Should().Be(0, "consumed: no longer pending, linked or masked"));
    }

    [Fact]
    public void An_Interdomain_Send_Is_Queued_On_The_Receiving_Port()
    {
        List<uint> onBind = [], onSend = [];
        uint local = 0, remote = 0;
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            var a = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = Xen.DOMID_SELF };
            Op(g, EventChannel.EVTCHNOP_alloc_unbound, ref a).Should().Be(0);
            remote = a.port;
            var bind = new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = remote };
            Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind).Should().Be(0);
            local = bind.local_port;
            fifo.IsPending(local).Should().BeTrue("binding marks the new port pending, masked until the guest is ready");
            fifo.Unmask(remote).Should().Be(0);
            fifo.Unmask(local).Should().Be(0, "the unmask hypercall queues the pending port");
            onBind = fifo.Consume();
            Send(g, local).Should().Be(0);
            onSend = fifo.Consume();
        });

        onBind.Should().Equal(local);
        onSend.Should().Equal(remote);
    }

    [Fact]
    public void A_Higher_Priority_Port_Is_Consumed_Before_Earlier_Lower_Priority_Ones()
    {
        List<uint> consumed = [];
        uint low = 0, normal = 0, high = 0;
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            low = BindIpi(g);
            normal = BindIpi(g);
            high = BindIpi(g);
            fifo.SetPriority(low, 10).Should().Be(0);
            fifo.SetPriority(high, 2).Should().Be(0);
            foreach (var p in new[] { low, normal, high })
            {
                fifo.Unmask(p);
            }

            Send(g, low);
            Send(g, normal);
            Send(g, high);
            fifo.Ready().Should().Be((1u << 10) | (1u << EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT) | (1u << 2));
            fifo.Head(2).Should().Be(high);
            consumed = fifo.Consume();
        });

        consumed.Should().Equal(high, normal, low);
    }

    [Fact]
    public void A_Masked_Port_Stays_Pending_Unqueued_And_Is_Queued_When_Unmasked()
    {
        uint port = 0, wordWhileMasked = 0, readyWhileMasked = 1;
        List<uint> whileMasked = [], afterUnmask = [];
        long unmaskRc = -1;
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            port = BindIpi(g);
            Send(g, port).Should().Be(0);
            wordWhileMasked = fifo.Word(port);
            readyWhileMasked = fifo.Ready();
            whileMasked = fifo.Consume();
            unmaskRc = fifo.Unmask(port);
            afterUnmask = fifo.Consume();
        });

        wordWhileMasked.Should().Be(Pending | Masked, "pending, but neither linked nor announced");
        readyWhileMasked.Should().Be(0);
        whileMasked.Should().BeEmpty();
        unmaskRc.Should().Be(0);
        afterUnmask.Should().Equal(port);
    }

    [Fact]
    public void A_Port_Beyond_The_Event_Array_Keeps_Its_Event_Until_Expand_Array_Gives_It_A_Word()
    {
        uint beyond = 0;
        bool pendingBeforeExpand = true;
        List<uint> beforeExpand = [], afterExpand = [];
        long sendRc = -1;
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            for (var i = 3; i < GuestFifo.WordsPerPage; i++) // ports 1 and 2 are the store's and the console's (start_info)
            {
                BindIpi(g);
            }

            beyond = BindIpi(g);
            sendRc = Send(g, beyond);
            pendingBeforeExpand = fifo.ArrayPages > 1;
            beforeExpand = fifo.Consume();
            fifo.ExpandArray().Should().Be(0);
            fifo.IsPending(beyond).Should().BeTrue("expand_array raised the saved event");
            fifo.Unmask(beyond).Should().Be(0);
            afterExpand = fifo.Consume();
        }, new DomainConfig { Name = "wide", MemoryMiB = 4, Limits = DomainLimits.Default with { MaxEventChannels = 4095 } });

        beyond.Should().Be((uint)GuestFifo.WordsPerPage, "binding needs no event word (Xen's max_evtchns is the FIFO's 2^17)");
        sendRc.Should().Be(0);
        pendingBeforeExpand.Should().BeFalse();
        beforeExpand.Should().BeEmpty();
        afterExpand.Should().Equal(beyond);
    }

    [Fact]
    public void Fifo_Lifts_The_Two_Level_Port_Limit_Up_To_The_Domain_Limit()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "many", MemoryMiB = 4, Limits = DomainLimits.Default with { MaxEventChannels = 10_000 } });
        var e = _hv.CreateDomain(new DomainConfig { Name = "more", MemoryMiB = 4, Limits = DomainLimits.Default with { MaxEventChannels = 200_000 } });
        var twoLevel = d.Events.MaxPort;
        d.Events.InitControl(0, 0, 0).Should().Be(0);
        e.Events.InitControl(0, 0, 0).Should().Be(0);
        var (fifo, fifoCapped) = (d.Events.MaxPort, e.Events.MaxPort);
        d.Events.Reset().Should().Be(0);
        var afterReset = d.Events.MaxPort;
        d.Destroy();
        e.Destroy();

        twoLevel.Should().Be(EventChannel.EVTCHN_2L_NR_CHANNELS - 1);
        fifo.Should().Be(10_000);
        fifoCapped.Should().Be(EventChannel.EVTCHN_FIFO_NR_CHANNELS - 1);
        afterReset.Should().Be(EventChannel.EVTCHN_2L_NR_CHANNELS - 1);
    }

    [Fact]
    public void Expand_Array_Stops_At_The_Fifo_Limit_With_ENOSPC()
    {
        var rcs = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            var gfn = fifo.ArrayPageAddress(0) / 4096;
            for (var i = 1; i <= FifoEvents.MaxEventArrayPages; i++)
            {
                rcs.Add(fifo.ExpandArrayRaw(gfn)); // Xen lets one frame back several array pages
            }
        });

        rcs.Should().HaveCount(128);
        rcs.Take(127).Should().OnlyContain(rc => rc == 0);
        rcs[^1].Should().Be(-(long)Errno.ENOSPC);
        _hv.FreeFrames.Should().Be(_hv.TotalFrames, "every array page's reference went with the domain");
    }

    [Fact]
    public void Set_Priority_Follows_Xen_Rules()
    {
        var r = new Dictionary<string, long>();
        GuestRunner.Run(_hv, g =>
        {
            var fifo = new GuestFifo(g, g.Scratch + 0x1000);
            var port = BindIpi(g);
            r["2-level"] = fifo.SetPriority(port, 3);
            fifo.InitControl().Should().Be(0);
            r["max"] = fifo.SetPriority(port, EventChannel.EVTCHN_FIFO_PRIORITY_MAX);
            r["min"] = fifo.SetPriority(port, EventChannel.EVTCHN_FIFO_PRIORITY_MIN);
            r["too low"] = fifo.SetPriority(port, EventChannel.EVTCHN_FIFO_PRIORITY_MIN + 1);
            r["free port"] = fifo.SetPriority(port + 1, 3);
            r["reserved port 0"] = fifo.SetPriority(0, 3);
            r["invalid port"] = fifo.SetPriority(100_000, 3);
        });

        r["2-level"].Should().Be(-(long)Errno.ENOSYS);
        r["max"].Should().Be(0);
        r["min"].Should().Be(0);
        r["too low"].Should().Be(-(long)Errno.EINVAL);
        r["free port"].Should().Be(-(long)Errno.EACCES);
        r["reserved port 0"].Should().Be(-(long)Errno.EACCES);
        r["invalid port"].Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void A_Rebound_Port_Starts_Again_At_The_Default_Priority()
    {
        int before = 0, after = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "prio", MemoryMiB = 4 });
        d.Events.InitControl(0, 0, 0).Should().Be(0);
        var port = (uint)d.Events.BindIpi(0);
        d.Events.SetPriority(port, 1).Should().Be(0);
        before = d.Events.Fifo!.PriorityOf(port);
        d.Events.Close(port).Should().Be(0);
        d.Events.BindIpi(0).Should().Be(port);
        after = d.Events.Fifo!.PriorityOf(port);
        d.Destroy();
        before.Should().Be(1);
        after.Should().Be(EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT);
    }

    [Fact]
    public void Init_Control_And_Expand_Array_Refuse_Bad_Arguments_With_Xen_Errnos()
    {
        var r = new Dictionary<string, long>();
        GuestRunner.Run(_hv, g =>
        {
            var fifo = new GuestFifo(g, g.Scratch + 0x1000);
            var gfn = fifo.ControlBlockAddress(0) / 4096;
            var ramEnd = g.ReadStartInfo().nr_pages;
            r["expand before init"] = fifo.ExpandArrayRaw(gfn);
            r["no such vcpu"] = fifo.InitControlRaw(7, gfn, 0, out _);
            r["offset past the page"] = fifo.InitControlRaw(0, gfn, (uint)(4096 - FifoEvents.ControlBlockSize + 8), out _);
            r["offset misaligned"] = fifo.InitControlRaw(0, gfn, 4, out _);
            r["gfn beyond ram"] = fifo.InitControlRaw(0, ramEnd + 100, 0, out _);
            r["still 2-level"] = fifo.ExpandArrayRaw(gfn);
            r["last offset"] = fifo.InitControlRaw(0, gfn, (uint)(4096 - FifoEvents.ControlBlockSize), out _);
            r["twice"] = fifo.InitControl(0);
            r["expand gfn beyond ram"] = fifo.ExpandArrayRaw(ramEnd + 100);
            r["expand gfn wild"] = fifo.ExpandArrayRaw(ulong.MaxValue);
            r["init vcpu 1"] = fifo.InitControl(1);
            r["vcpu 1 twice"] = fifo.InitControl(1);
        }, new DomainConfig { Name = "args", MemoryMiB = 4, Vcpus = 2 });

        r["expand before init"].Should().Be(-(long)Errno.EOPNOTSUPP);
        r["no such vcpu"].Should().Be(-(long)Errno.ENOENT);
        r["offset past the page"].Should().Be(-(long)Errno.EINVAL);
        r["offset misaligned"].Should().Be(-(long)Errno.EINVAL);
        r["gfn beyond ram"].Should().Be(-(long)Errno.EINVAL);
        r["still 2-level"].Should().Be(-(long)Errno.EOPNOTSUPP, "a failed first init_control leaves the domain on 2-level");
        r["last offset"].Should().Be(0);
        r["twice"].Should().Be(-(long)Errno.EINVAL);
        r["expand gfn beyond ram"].Should().Be(-(long)Errno.EINVAL);
        r["expand gfn wild"].Should().Be(-(long)Errno.EINVAL);
        r["init vcpu 1"].Should().Be(0);
        r["vcpu 1 twice"].Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void A_Classic_Pv_Guest_Names_Its_Control_Block_And_Array_Pages_By_Mfn()
    {
        List<uint> consumed = [];
        uint port = 0;
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            var fifo = new GuestFifo(g, g.Scratch + 0x1000, classicPv: true);
            fifo.InitControl().Should().Be(0);
            fifo.ExpandArray().Should().Be(0);
            port = BindIpi(g);
            fifo.Unmask(port);
            Send(g, port).Should().Be(0);
            consumed = fifo.Consume();
        });

        exit.State.Should().Be(DomainState.Shutdown);
        consumed.Should().Equal(port);
    }

    [Fact]
    public void An_Ipi_To_Another_Vcpu_Is_Queued_In_That_Vcpus_Control_Block()
    {
        List<uint> onVcpu0 = [], onVcpu1 = [];
        uint port = 0;
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            fifo.InitControl(1).Should().Be(0);
            port = BindIpi(g, 1);
            fifo.Unmask(port);
            Send(g, port).Should().Be(0);
            onVcpu0 = fifo.Consume(0);
            onVcpu1 = fifo.Consume(1);
        }, new DomainConfig { Name = "smp", MemoryMiB = 4, Vcpus = 2 });

        onVcpu0.Should().BeEmpty();
        onVcpu1.Should().Equal(port);
    }

    [Fact]
    public void Switching_To_Fifo_Carries_Pending_Two_Level_Events_Across()
    {
        uint port = 0, word = 0;
        List<uint> consumed = [];
        GuestRunner.Run(_hv, g =>
        {
            port = BindIpi(g);
            Send(g, port).Should().Be(0); // pending in shared_info's 2-level bitmap
            var fifo = StartFifo(g);
            word = fifo.Word(port);
            fifo.Unmask(port);
            consumed = fifo.Consume();
        });

        word.Should().Be(Pending | Masked, "setup_ports saved the pending state; the guest's new page is masked");
        consumed.Should().Equal(port);
    }

    [Fact]
    public void A_Closed_Port_Still_Linked_Is_Not_Handed_Out_Again_Until_The_Guest_Unlinks_It()
    {
        uint first = 0, whileLinked = 0, afterConsume = 0;
        List<uint> consumed = [];
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            first = BindIpi(g);
            fifo.Unmask(first);
            Send(g, first);
            Close(g, first).Should().Be(0);
            whileLinked = BindIpi(g);
            consumed = fifo.Consume();
            Close(g, whileLinked);
            afterConsume = BindIpi(g);
        });

        whileLinked.Should().NotBe(first, "Xen's evtchn_fifo_is_busy: the port is still on a queue");
        consumed.Should().BeEmpty("closing cleared PENDING; the guest unlinks the port and skips it");
        afterConsume.Should().Be(first);
    }

    [Fact]
    public void Reset_Takes_A_Fifo_Domain_Back_To_Two_Level_And_Lets_Go_Of_Its_Frames()
    {
        var r = new Dictionary<string, long>();
        List<uint> twoLevel = [], fifoAgain = [];
        uint twoLevelPort = 0, fifoPort = 0;
        GuestRunner.Run(_hv, g =>
        {
            var shared = GuestEvents.MapSharedInfo(g);
            var fifo = StartFifo(g);
            BindIpi(g);
            r["reset"] = Reset(g);
            r["expand after reset"] = fifo.ExpandArrayRaw(fifo.ArrayPageAddress(0) / 4096);
            twoLevelPort = BindIpi(g);
            r["set_priority after reset"] = fifo.SetPriority(twoLevelPort, 1);
            Send(g, twoLevelPort);
            twoLevel = GuestEvents.Acknowledge(g.Cpu, shared, GuestEvents.LegacyVcpuInfo(shared, 0));
            Close(g, twoLevelPort);

            var again = new GuestFifo(g, g.Scratch + 0x1000);
            r["init again"] = again.InitControl();
            again.ExpandArray();
            fifoPort = BindIpi(g);
            again.Unmask(fifoPort);
            Send(g, fifoPort);
            fifoAgain = again.Consume();
        });

        r["reset"].Should().Be(0);
        r["expand after reset"].Should().Be(-(long)Errno.EOPNOTSUPP);
        r["set_priority after reset"].Should().Be(-(long)Errno.ENOSYS);
        twoLevel.Should().Equal(twoLevelPort);
        r["init again"].Should().Be(0);
        fifoAgain.Should().Equal(fifoPort);
        _hv.FreeFrames.Should().Be(_hv.TotalFrames, "control block and array pages were released");
    }

    [Fact]
    public void A_Bound_Virq_Reaches_A_Fifo_Guest_And_Polling_Sees_It_Pending()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "virq", MemoryMiB = 4 });
        d.Events.InitControl(0, 0, 0).Should().Be(0);
        var port = (uint)d.Events.BindVirq(Xen.VIRQ_TIMER, 0);
        d.Events.Delivery.IsPending(port).Should().BeFalse("no event word yet");
        d.RaiseVirq(d.Vcpus[0], Xen.VIRQ_TIMER);
        d.Events.Delivery.IsPending(port).Should().BeFalse("still no event word: the event is saved");
        d.Events.ExpandArray(1).Should().Be(0);
        d.Events.Delivery.IsPending(port).Should().BeTrue();
        d.Destroy();
        _hv.FreeFrames.Should().Be(_hv.TotalFrames);
    }

    [Fact]
    public void A_Consumer_That_Stops_At_Its_Walk_Bound_Resumes_Where_It_Stopped()
    {
        // Xen sets a queue's READY bit only when the queue was empty; a consumer that stops walking
        // a long queue must keep that queue ready itself, or the events behind its stop are lost.
        uint[] ports = [];
        List<uint> first = [], rest = [], afterMore = [];
        GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            ports = [.. Enumerable.Range(0, 8).Select(_ => BindIpi(g))];
            foreach (var p in ports)
            {
                fifo.Unmask(p).Should().Be(0);
                Send(g, p).Should().Be(0);
            }

            first = fifo.Consume(max: 3);
            rest = fifo.Consume();
            Send(g, ports[0]).Should().Be(0);
            afterMore = fifo.Consume();
        });

        first.Should().Equal(ports[..3]);
        rest.Should().Equal(ports[3..], "the queue behind the stop is still reachable");
        afterMore.Should().Equal(ports[0]);
    }
}
