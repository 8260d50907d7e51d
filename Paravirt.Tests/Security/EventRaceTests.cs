using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Tests.Hypercalls;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// Event storms: the host (two threads) and vCPU 1 send on ports while vCPU 2 masks and unmasks
/// them and vCPU 0 consumes, over the 2-level and the FIFO ABI. Outcomes are checked, never
/// timings: no lost event (every port sent to is consumed at least once after its last send
/// began, Xen's "at least one event after the last send") and no spurious one (no event on a port
/// nobody sent to), and nothing is left pending once everything is unmasked and drained.
/// </summary>
public sealed class EventRaceTests : IDisposable
{
    private const int HostSendsPerThread = 25_000;
    private const int GuestSends = 30_000;
    private const int MaskRounds = 10_000;
    private const int HostPorts = 6;
    private const int LoopPorts = 3;
    private const int SilentHostPorts = 2;
    private const int MaxPorts = 4096;

    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));
    private static readonly ulong MaskOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_mask));

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public Task A_Two_Level_Event_Storm_Loses_No_Event_And_Invents_None() => Storm(fifo: false);

    [Fact]
    public Task A_Fifo_Event_Storm_Loses_No_Event_And_Invents_None() => Storm(fifo: true);

    private sealed class Tally
    {
        public readonly long[] Sends = new long[MaxPorts];
        public readonly long[] LastSendBegan = new long[MaxPorts];
        public readonly long[] Consumed = new long[MaxPorts];
        public readonly long[] LastConsumed = new long[MaxPorts];
        public long Clock;
        public long MaskOps;
        public int HostDone;
        public int SenderDone;
        public int MaskerDone;
        public int Go;
        public uint[] HostReceivers = [];
        public uint[] LoopSenders = [];
        public uint[] LoopReceivers = [];
        public uint[] AllPorts = [];
        public List<uint> LeftPending = [];
        public Exception? GuestFailure;

        public long Tick() => Interlocked.Increment(ref Clock);

        /// <summary>Called by the single sender of <paramref name="port"/> just before it sends.</summary>
        public void WillSend(uint port)
        {
            Volatile.Write(ref LastSendBegan[port], Tick());
            Interlocked.Increment(ref Sends[port]);
        }

        /// <summary>Called by the consumer after it cleared the ports' PENDING bits.</summary>
        public void Took(List<uint> ports)
        {
            if (ports.Count == 0)
            {
                return;
            }

            var t = Tick();
            foreach (var p in ports)
            {
                Interlocked.Increment(ref Consumed[p]);
                Volatile.Write(ref LastConsumed[p], t);
            }
        }
    }

    private static long EvtOp<T>(IGuestCpu cpu, ulong at, int cmd, ref T arg)
        where T : unmanaged
    {
        cpu.Memory.Write(at, arg);
        var rc = cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, (ulong)cmd, at);
        arg = cpu.Memory.Read<T>(at);
        return rc;
    }

    private async Task Storm(bool fifo)
    {
        var ct = TestContext.Current.CancellationToken;
        var t = new Tally();
        using var ready = new SemaphoreSlim(0);
        var d = _hv.CreateDomain(new DomainConfig { Name = fifo ? "fifo-storm" : "2l-storm", MemoryMiB = 8, Vcpus = 3 });
        var host = Enumerable.Range(0, HostPorts + SilentHostPorts).Select(_ => _hv.Host.AllocUnbound(d)).ToArray();
        ulong sharedInfo = 0;
        GuestFifo? consumerFifo = null;

        void Primary(IGuestCpu cpu, ulong si, ulong scratch)
        {
            try
            {
                var g = new GuestContext(cpu, si);
                sharedInfo = GuestEvents.MapSharedInfo(g);
                if (fifo)
                {
                    consumerFifo = new GuestFifo(g, scratch + 0x10000);
                    consumerFifo.InitControl(0).Should().Be(0);
                    consumerFifo.ExpandArray().Should().Be(0);
                }

                // Each receiving port starts a 64-port word of its own (unused unbound ports fill the
                // gaps), so a missed selector bit is not hidden by a neighbour's event.
                void StartNewWord()
                {
                    while (true)
                    {
                        var f = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = Xen.DOMID_SELF };
                        EvtOp(cpu, scratch + 0x700, EventChannel.EVTCHNOP_alloc_unbound, ref f).Should().Be(0);
                        if (f.port % 64 == 63)
                        {
                            return;
                        }
                    }
                }

                var receivers = new List<uint>();
                foreach (var h in host)
                {
                    StartNewWord();
                    var bind = new evtchn_bind_interdomain { remote_dom = 0, remote_port = h.LocalPort };
                    EvtOp(cpu, scratch + 0x700, EventChannel.EVTCHNOP_bind_interdomain, ref bind).Should().Be(0);
                    receivers.Add(bind.local_port);
                }

                t.HostReceivers = [.. receivers];
                var loopSenders = new List<uint>();
                var loopReceivers = new List<uint>();
                for (var i = 0; i < LoopPorts + 1; i++)
                {
                    StartNewWord();
                    var a = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = Xen.DOMID_SELF };
                    EvtOp(cpu, scratch + 0x700, EventChannel.EVTCHNOP_alloc_unbound, ref a).Should().Be(0);
                    var b = new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = a.port };
                    EvtOp(cpu, scratch + 0x700, EventChannel.EVTCHNOP_bind_interdomain, ref b).Should().Be(0);
                    if (i < LoopPorts)
                    {
                        loopReceivers.Add(a.port);
                        loopSenders.Add(b.local_port); // sending on b.local_port raises a.port
                    }
                }

                t.LoopSenders = [.. loopSenders];
                t.LoopReceivers = [.. loopReceivers];
                var all = new List<uint>();
                for (uint p = 1; p <= Math.Max(receivers.Max(), Math.Max(loopSenders.Max(), loopReceivers.Max())) + 1; p++)
                {
                    all.Add(p);
                }

                t.AllPorts = [.. all];
                if (fifo)
                {
                    foreach (var p in all)
                    {
                        consumerFifo!.Unmask(p).Should().Be(0); // Linux unmasks a port once it is bound
                    }
                }

                // Xen's bind_interdomain conservatively raises the new local port once ("we may have
                // lost notifications on the remote unbound port"): take those before the storm.
                for (var pass = 0; pass < 100 && Consume(cpu).Count > 0; pass++)
                {
                }

                SmpKernel.InitialiseAndUp(cpu, scratch, 1);
                SmpKernel.InitialiseAndUp(cpu, scratch, 2);
                ready.Release();

                var deadline = Environment.TickCount64 + (long)GuestRunner.Timeout.TotalMilliseconds;
                while (Environment.TickCount64 < deadline
                    && (Volatile.Read(ref t.HostDone) == 0 || Volatile.Read(ref t.SenderDone) == 0 || Volatile.Read(ref t.MaskerDone) == 0))
                {
                    var took = Consume(cpu);
                    t.Took(took);
                    if (took.Count == 0)
                    {
                        Thread.SpinWait(50); // poll, as an upcall handler would run on every event
                    }
                }

                // Everyone is done: unmask every port (events held back while masked are raised now), then drain.
                foreach (var p in all)
                {
                    if (fifo)
                    {
                        consumerFifo!.Unmask(p).Should().Be(0);
                    }
                    else
                    {
                        var u = new evtchn_unmask { port = p };
                        EvtOp(cpu, scratch + 0x700, EventChannel.EVTCHNOP_unmask, ref u).Should().Be(0);
                    }
                }

                for (var pass = 0; pass < 100; pass++)
                {
                    var took = Consume(cpu);
                    t.Took(took);
                    if (took.Count == 0)
                    {
                        break;
                    }
                }

                foreach (var p in all)
                {
                    if (fifo ? consumerFifo!.IsPending(p) : (cpu.Memory.ReadVolatile(sharedInfo + PendingOffset + (p / 64 * 8), 8) & (1UL << (int)(p % 64))) != 0)
                    {
                        t.LeftPending.Add(p);
                    }
                }
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                t.GuestFailure = e;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }

        List<uint> Consume(IGuestCpu cpu) => fifo ? consumerFifo!.Consume(0) : GuestEvents.Acknowledge(cpu, sharedInfo, GuestEvents.LegacyVcpuInfo(sharedInfo, 0));

        void Secondary(IGuestCpu cpu, ulong si, ulong scratch)
        {
            try
            {
                // Start together with the host's senders.
                var deadline = Environment.TickCount64 + (long)GuestRunner.Timeout.TotalMilliseconds;
                while (Volatile.Read(ref t.Go) == 0 && Environment.TickCount64 < deadline)
                {
                    Thread.SpinWait(50);
                }

                if (cpu.VcpuId == 1)
                {
                    // vCPU 1 sends on the loopback pairs, round robin.
                    for (var i = 0; i < GuestSends; i++)
                    {
                        var n = i % LoopPorts;
                        t.WillSend(t.LoopReceivers[n]);
                        var s = new evtchn_send { port = t.LoopSenders[n] };
                        EvtOp(cpu, scratch + 0xA00, EventChannel.EVTCHNOP_send, ref s).Should().Be(0);
                    }

                    Volatile.Write(ref t.SenderDone, 1);
                }
                else
                {
                    // vCPU 2 masks and unmasks every port in turn, as Linux's mask_evtchn/unmask_evtchn do.
                    var masker = fifo ? new GuestFifo(new GuestContext(cpu, si), scratch + 0x10000) : null;
                    var ports = t.HostReceivers.Concat(t.LoopReceivers).Concat(t.LoopSenders).ToArray();
                    // At least MaskRounds, and for as long as anyone sends.
                    for (var i = 0; Environment.TickCount64 < deadline
                        && (i < MaskRounds || Volatile.Read(ref t.HostDone) == 0 || Volatile.Read(ref t.SenderDone) == 0); i++)
                    {
                        var p = ports[i % ports.Length];
                        if (masker is not null)
                        {
                            masker.Mask(p);
                            Thread.SpinWait(20); // hold it masked while events arrive
                            masker.Unmask(p).Should().Be(0);
                        }
                        else
                        {
                            cpu.Memory.Or64(sharedInfo + MaskOffset + (p / 64 * 8), 1UL << (int)(p % 64));
                            Thread.SpinWait(20); // hold it masked while events arrive
                            var u = new evtchn_unmask { port = p };
                            EvtOp(cpu, scratch + 0x900, EventChannel.EVTCHNOP_unmask, ref u).Should().Be(0);
                        }

                        Interlocked.Add(ref t.MaskOps, 2);
                    }

                    Volatile.Write(ref t.MaskerDone, 1);
                }
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                t.GuestFailure ??= e;
                Volatile.Write(ref t.SenderDone, 1);
                Volatile.Write(ref t.MaskerDone, 1);
            }

            SmpKernel.BlockForever(cpu);
        }

        d.Start(new SmpKernel(Primary, (cpu, si, scratch, _, _) => Secondary(cpu, si, scratch)));
        (await ready.WaitAsync(GuestRunner.Timeout, ct)).Should().BeTrue();

        Volatile.Write(ref t.Go, 1);

        // Two host threads, each the only sender on its half of the host ports; the silent ones are never sent to.
        var senders = Enumerable.Range(0, 2).Select(k => Task.Run(() =>
        {
            for (var i = 0; i < HostSendsPerThread; i++)
            {
                var n = k + (2 * (i % (HostPorts / 2)));
                t.WillSend(t.HostReceivers[n]);
                host[n].Notify();
            }
        }, ct)).ToArray();
        try
        {
            await Task.WhenAll(senders).WaitAsync(GuestRunner.Timeout, ct);
        }
        finally
        {
            Volatile.Write(ref t.HostDone, 1);
        }

        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        foreach (var h in host)
        {
            h.Dispose();
        }

        t.GuestFailure.Should().BeNull();
        var sentTo = t.HostReceivers[..HostPorts].Concat(t.LoopReceivers).ToHashSet();
        foreach (var p in t.AllPorts)
        {
            if (sentTo.Contains(p))
            {
                t.Sends[p].Should().BeGreaterThan(0);
                t.Consumed[p].Should().BeInRange(1, t.Sends[p], "port {0} was sent to, and each consumption follows at least one send", p);
                t.LastConsumed[p].Should().BeGreaterThan(t.LastSendBegan[p], "port {0} must be consumed after its last send began (no lost event)", p);
            }
            else
            {
                t.Sends[p].Should().Be(0);
                t.Consumed[p].Should().Be(0, "nobody sent to port {0} (no spurious event)", p);
            }
        }

        t.LeftPending.Should().BeEmpty("everything was unmasked and drained");
        t.Sends.Sum().Should().Be((2L * HostSendsPerThread) + GuestSends);
        t.MaskOps.Should().BeGreaterThanOrEqualTo(2L * MaskRounds);
        (t.Sends.Sum() + t.MaskOps).Should().BeGreaterThanOrEqualTo(100_000, "the issue asks for at least 100,000 concurrent operations per storm");
    }
}
