using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// A FIFO guest owns its event words and control block and may write anything there at any time.
/// Whatever it writes, the host's calls return, nothing throws on the host, and other domains are
/// served; the guest only loses (or gains spurious) events of its own.
/// </summary>
public sealed class FifoHostileTests : IDisposable
{
    private const uint Pending = 1u << EventChannel.EVTCHN_FIFO_PENDING;
    private const uint Masked = 1u << EventChannel.EVTCHN_FIFO_MASKED;
    private const uint Linked = 1u << EventChannel.EVTCHN_FIFO_LINKED;
    private const uint Busy = 1u << EventChannel.EVTCHN_FIFO_BUSY;

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

    private static long BindIpi(GuestContext g)
    {
        var b = new evtchn_bind_ipi { vcpu = 0 };
        var rc = Op(g, EventChannel.EVTCHNOP_bind_ipi, ref b);
        return rc < 0 ? rc : b.port;
    }

    private static long Send(GuestContext g, uint port)
    {
        var s = new evtchn_send { port = port };
        return Op(g, EventChannel.EVTCHNOP_send, ref s);
    }

    private static GuestFifo StartFifo(GuestContext g)
    {
        var fifo = new GuestFifo(g, g.Scratch + 0x1000);
        fifo.InitControl().Should().Be(0);
        fifo.ExpandArray().Should().Be(0);
        return fifo;
    }

    private void HostStillServesGuests()
    {
        List<uint> consumed = [];
        uint port = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            port = (uint)BindIpi(g);
            fifo.Unmask(port);
            Send(g, port);
            consumed = fifo.Consume();
        });
        exit.State.Should().Be(DomainState.Shutdown);
        consumed.Should().Equal(port);
        _hv.Domains.Should().BeEmpty();
        _hv.FreeFrames.Should().Be(_hv.TotalFrames, "every frame came back, pinned control blocks and array pages included");
    }

    [Fact]
    public async Task A_Guest_Scribbling_Over_Its_Words_And_Control_Block_While_Events_Arrive_Costs_The_Host_Nothing()
    {
        const int Ports = 48;
        using var started = new SemaphoreSlim(0);
        using var hostSending = new SemaphoreSlim(0);
        var guestDone = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "scribbler", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var fifo = StartFifo(g);
            var rng = new Random(4217);
            for (var i = 0; i < Ports; i++)
            {
                var port = (uint)BindIpi(g);
                fifo.SetPriority(port, (uint)rng.Next(0, 16));
                fifo.Unmask(port);
            }

            started.Release();
            hostSending.Wait(GuestRunner.Timeout); // scribble while the host is delivering
            var cb = fifo.ControlBlockAddress(0);
            for (var i = 0; i < 20_000; i++)
            {
                var port = (uint)rng.Next(0, Ports + 8);
                switch (rng.Next(10))
                {
                    case 0:
                        fifo.WriteWord(port, (uint)rng.Next() | ((uint)rng.Next(2) << 31)); // anything at all
                        break;
                    case 1:
                        fifo.WriteWord(port, Linked | Pending | port); // linked to itself
                        break;
                    case 2:
                        fifo.WriteWord(port, Linked | Busy | (uint)rng.Next(0, 1 << 17)); // BUSY held, LINK anywhere
                        break;
                    case 3:
                        fifo.WriteWord(port, Linked | Masked | EventChannel.EVTCHN_FIFO_LINK_MASK); // LINK past the array
                        break;
                    case 4:
                        g.Cpu.Memory.WriteVolatile(cb, 4, (uint)rng.Next()); // READY bits for any queue
                        g.Cpu.Memory.WriteVolatile(cb + 8 + ((ulong)rng.Next(16) * 4), 4, (uint)rng.Next()); // a head anywhere
                        break;
                    case 5:
                        fifo.Consume(max: 64);
                        break;
                    case 6:
                        fifo.Unmask(port);
                        break;
                    case 7:
                        Send(g, port);
                        break;
                    case 8:
                        fifo.SetPriority(port, (uint)rng.Next(0, 20));
                        break;
                    default:
                        fifo.WriteWord(port, 0);
                        break;
                }
            }

            Volatile.Write(ref guestDone, 1);
            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await started.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue("the guest set up its ports");
        var hostRcs = new List<long>();
        var host = Task.Run(() =>
        {
            // Events from outside the guest (another vCPU, a backend) keep arriving while it scribbles.
            while (Volatile.Read(ref guestDone) == 0 && d.IsAlive)
            {
                for (var port = 1u; port <= Ports; port++)
                {
                    hostRcs.Add(d.Events.Send(port));
                    d.Events.Unmask(port);
                    _ = d.Events.Delivery.IsPending(port);
                    _ = d.Events.Delivery.IsMasked(port);
                }

                if (hostRcs.Count == Ports)
                {
                    hostSending.Release();
                }
            }
        }, TestContext.Current.CancellationToken);

        var exit = await d.ExitWithinAsync();
        await host.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        exit.State.Should().Be(DomainState.Shutdown, "the guest ran its scribbling to the end and powered off ({0})", exit.Reason);
        hostRcs.Should().NotBeEmpty().And.OnlyContain(rc => rc == 0, "the ports stayed bound; sending to them always works");
        d.Destroy();
        HostStillServesGuests();
    }

    [Fact]
    public void A_Tail_Linked_To_Itself_Or_Held_Busy_Only_Loses_The_Guest_Its_Own_Events()
    {
        var rcs = new List<long>();
        List<uint> consumed = [];
        uint a = 0, b = 0, c = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            a = (uint)BindIpi(g);
            b = (uint)BindIpi(g);
            c = (uint)BindIpi(g);
            foreach (var p in new[] { a, b, c })
            {
                fifo.Unmask(p);
            }

            rcs.Add(Send(g, a)); // a is the queue's tail
            fifo.WriteWord(a, Linked | Busy | Pending | a); // the tail now links to itself and is held BUSY
            rcs.Add(Send(g, b)); // Xen links a -> b regardless (BUSY only stops the guest)
            fifo.WriteWord(b, Masked | Linked | Busy | b);
            rcs.Add(fifo.Unmask(b)); // masked, BUSY forever: unmask still returns
            rcs.Add(Send(g, c));
            consumed = fifo.Consume(max: 100);
        });

        exit.State.Should().Be(DomainState.Shutdown);
        rcs.Should().OnlyContain(rc => rc == 0);
        consumed.Should().NotBeEmpty("the queue still leads somewhere sensible")
            .And.OnlyContain(p => p == a || p == b || p == c);
        HostStillServesGuests();
    }

    [Fact]
    public void A_Guest_Marking_Every_Word_Linked_Only_Runs_Itself_Out_Of_Ports()
    {
        long rc = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var fifo = StartFifo(g);
            for (var port = 1u; port < GuestFifo.WordsPerPage; port++)
            {
                fifo.WriteWord(port, Linked);
            }

            rc = BindIpi(g);
        });

        exit.State.Should().Be(DomainState.Shutdown);
        rc.Should().Be(-(long)Errno.ENOSPC, "every free port is busy (still linked), as Xen's get_free_port sees it");
        HostStillServesGuests();
    }

    [Fact]
    public void Control_Block_And_Event_Array_Sharing_A_Frame_Work_And_Are_Released()
    {
        List<uint> consumed = [];
        uint port = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var fifo = new GuestFifo(g, g.Scratch + 0x1000);
            var page = fifo.ArrayPageAddress(0);
            // The control block sits at the end of the page that also holds event words 0..1005.
            g.Cpu.Memory.Write(page, new byte[4096]);
            fifo.InitControlRaw(0, page / 4096, (uint)(4096 - Paravirt.Core.Events.FifoEvents.ControlBlockSize), out _).Should().Be(0);
            fifo.ExpandArrayRaw(page / 4096).Should().Be(0);
            fifo.ExpandArrayRaw(page / 4096).Should().Be(0, "the same frame twice is allowed, as in Xen");
            port = (uint)BindIpi(g);
            Send(g, port).Should().Be(0);
            var ready = g.Cpu.Memory.ReadVolatile(page + 4096 - (ulong)Paravirt.Core.Events.FifoEvents.ControlBlockSize, 4);
            consumed.Add((uint)ready);
        });

        exit.State.Should().Be(DomainState.Shutdown);
        consumed.Should().Equal(1u << EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT);
        HostStillServesGuests();
    }

    [Fact]
    public async Task Resetting_And_Reinitialising_Fifo_While_Events_Arrive_Never_Throws_On_The_Host()
    {
        using var started = new SemaphoreSlim(0);
        var guestDone = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "flipper", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            started.Release();
            for (var round = 0; round < 200; round++)
            {
                var fifo = StartFifo(g);
                for (var i = 0; i < 8; i++)
                {
                    fifo.Unmask((uint)BindIpi(g));
                }

                fifo.Consume(max: 64);
                var r = new evtchn_reset { dom = Xen.DOMID_SELF };
                Op(g, EventChannel.EVTCHNOP_reset, ref r);
            }

            Volatile.Write(ref guestDone, 1);
            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await started.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        var host = Task.Run(() =>
        {
            while (Volatile.Read(ref guestDone) == 0 && d.IsAlive)
            {
                for (var port = 1u; port <= 8; port++)
                {
                    d.Events.Send(port);
                    d.Events.Unmask(port);
                    _ = d.Events.Delivery.IsPending(port);
                }

                d.RaiseVirq(d.Vcpus[0], Xen.VIRQ_TIMER);
            }
        }, TestContext.Current.CancellationToken);

        var exit = await d.ExitWithinAsync();
        await host.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        exit.State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        HostStillServesGuests();
    }
}
