using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Events;

/// <summary>EVTCHNOP_* from managed guests, against Xen 4.17's event_channel.c semantics.</summary>
public sealed class EventChannelTests : IDisposable
{
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

    private static long AllocUnbound(GuestContext g, ushort remote)
    {
        var a = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = remote };
        var rc = Op(g, EventChannel.EVTCHNOP_alloc_unbound, ref a);
        return rc < 0 ? rc : a.port;
    }

    private static long Close(GuestContext g, uint port)
    {
        var c = new evtchn_close { port = port };
        return Op(g, EventChannel.EVTCHNOP_close, ref c);
    }

    private static long Send(GuestContext g, uint port)
    {
        var s = new evtchn_send { port = port };
        return Op(g, EventChannel.EVTCHNOP_send, ref s);
    }

    private static (long Rc, evtchn_status Status) Status(GuestContext g, uint port, ushort dom = Xen.DOMID_SELF)
    {
        var s = new evtchn_status { dom = dom, port = port };
        var rc = Op(g, EventChannel.EVTCHNOP_status, ref s);
        return (rc, s);
    }

    [Fact]
    public void Ports_Are_Allocated_Lowest_First_After_The_Store_And_Console_Ports_And_Reused_After_Close()
    {
        var ports = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            ports.Add(AllocUnbound(g, 0));
            ports.Add(AllocUnbound(g, 0));
            ports.Add(AllocUnbound(g, 0));
            Close(g, 4).Should().Be(0);
            ports.Add(AllocUnbound(g, 0));
        });
        ports.Should().Equal([3, 4, 5, 4], "ports 1 and 2 are the XenStore's and the console's, allocated by the builder as the toolstack does");
    }

    [Fact]
    public void Status_Reports_Unbound_Closed_And_Refuses_Other_Domains()
    {
        var other = _hv.CreateDomain(new DomainConfig { Name = "other", MemoryMiB = 4 });
        (long, evtchn_status) unbound = default, closed = default, foreign = default, missing = default, beyond = default;
        GuestRunner.Run(_hv, g =>
        {
            var p = (uint)AllocUnbound(g, 7);
            unbound = Status(g, p);
            closed = Status(g, p + 1);
            foreign = Status(g, 1, other.Id);
            missing = Status(g, 1, 0x7000);
            beyond = Status(g, 5000);
        });
        unbound.Item1.Should().Be(0);
        unbound.Item2.status.Should().Be((uint)EventChannel.EVTCHNSTAT_unbound);
        unbound.Item2.u.unbound.dom.Should().Be(7);
        closed.Item1.Should().Be(0, "ports are valid a bucket at a time, as in Xen; a free one reads as closed");
        closed.Item2.status.Should().Be((uint)EventChannel.EVTCHNSTAT_closed);
        foreign.Item1.Should().Be(-(long)Errno.EPERM);
        missing.Item1.Should().Be(-(long)Errno.ESRCH);
        beyond.Item1.Should().Be(-(long)Errno.EINVAL);
        other.Destroy();
    }

    [Fact]
    public async Task Interdomain_Channel_Connects_Two_Guests_And_Closing_One_End_Unbinds_The_Other()
    {
        using var portReady = new SemaphoreSlim(0);
        using var bound = new SemaphoreSlim(0);
        using var sent = new SemaphoreSlim(0);
        using var closed = new SemaphoreSlim(0);
        uint portA = 0, portB = 0;
        evtchn_status statusA = default, statusBAfterClose = default;
        long sendRc = -1;

        var a = _hv.CreateDomain(new DomainConfig { Name = "a", MemoryMiB = 4 });
        var b = _hv.CreateDomain(new DomainConfig { Name = "b", MemoryMiB = 4 });
        a.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            portA = (uint)AllocUnbound(g, b.Id);
            portReady.Release();
            bound.Wait(GuestRunner.Timeout);
            statusA = Status(g, portA).Status;
            sendRc = Send(g, portA);
            sent.Release();
            closed.Wait(GuestRunner.Timeout);
            Close(g, portA);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        b.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            portReady.Wait(GuestRunner.Timeout);
            var bind = new evtchn_bind_interdomain { remote_dom = a.Id, remote_port = portA };
            Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind).Should().Be(0);
            portB = bind.local_port;
            bound.Release();
            sent.Wait(GuestRunner.Timeout);
            closed.Release();
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        await a.ExitWithinAsync();
        await b.ExitWithinAsync();
        statusA.status.Should().Be((uint)EventChannel.EVTCHNSTAT_interdomain);
        statusA.u.interdomain.dom.Should().Be(b.Id);
        statusA.u.interdomain.port.Should().Be(portB);
        sendRc.Should().Be(0);
        b.Events.Delivery.IsPending(portB).Should().BeTrue("A's send reached B's port");
        b.Meter.EventsReceived.Should().BeGreaterThan(0);
        a.Meter.EventsSent.Should().Be(1);

        // A closed its end: B's port is unbound again, waiting for A.
        var s = default(evtchn_status);
        b.Events.Status(portB, ref s).Should().Be(0);
        s.status.Should().Be((uint)EventChannel.EVTCHNSTAT_unbound);
        s.u.unbound.dom.Should().Be(a.Id);
        _ = statusBAfterClose;
        a.Destroy();
        b.Destroy();
    }

    [Fact]
    public void Binding_A_Port_That_Does_Not_Name_Us_Is_EINVAL()
    {
        long rc = 0, missing = 0;
        GuestRunner.Run(_hv, g =>
        {
            var p = (uint)AllocUnbound(g, 0x1234); // for some other domain
            var bind = new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = p };
            rc = Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind);
            bind = new evtchn_bind_interdomain { remote_dom = 0x7000, remote_port = 1 };
            missing = Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind);
        });
        rc.Should().Be(-(long)Errno.EINVAL);
        missing.Should().Be(-(long)Errno.ESRCH);
    }

    [Fact]
    public async Task Loopback_Interdomain_Channel_Within_One_Domain_Works()
    {
        long sendRc = -1;
        uint local = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "loop", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var p = (uint)AllocUnbound(g, Xen.DOMID_SELF);
            var bind = new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = p };
            Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind).Should().Be(0);
            local = bind.local_port;
            Close(g, local);
            Close(g, p); // clear both so the pending bits below come only from the send
            p = (uint)AllocUnbound(g, Xen.DOMID_SELF);
            bind = new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = p };
            Op(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind);
            local = bind.local_port;
            sendRc = Send(g, local);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        sendRc.Should().Be(0);
        d.Events.Delivery.IsPending(3).Should().BeTrue("the send on the local end marks the other end (port 3; ports 1 and 2 are the store's and the console's)");
        d.Destroy();
    }

    [Fact]
    public void Virq_Binding_Follows_Xen_Rules()
    {
        var r = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            long Bind(uint virq, uint vcpu)
            {
                var b = new evtchn_bind_virq { virq = virq, vcpu = vcpu };
                var rc = Op(g, EventChannel.EVTCHNOP_bind_virq, ref b);
                return rc < 0 ? rc : b.port;
            }

            r.Add(Bind(Xen.VIRQ_TIMER, 0));
            r.Add(Bind(Xen.VIRQ_TIMER, 0));
            r.Add(Bind(Xen.VIRQ_CONSOLE, 1));
            r.Add(Bind(Xen.VIRQ_TIMER, 1));
            r.Add(Bind(Xen.NR_VIRQS, 0));
            r.Add(Bind(Xen.VIRQ_CONSOLE, 0));
        });
        r.Should().Equal(3, -(long)Errno.EEXIST, -(long)Errno.EINVAL, -(long)Errno.ENOENT, -(long)Errno.EINVAL, 4); // ports 1 and 2 are the store's and the console's
    }

    [Fact]
    public void The_Limit_On_Ports_Gives_ENOSPC()
    {
        var results = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            for (var i = 0; i < 6; i++)
            {
                results.Add(AllocUnbound(g, 0));
            }
        }, new DomainConfig { Name = "few", MemoryMiB = 4, Limits = DomainLimits.Default with { MaxEventChannels = 5 } });
        results.Should().Equal([3, 4, 5, -(long)Errno.ENOSPC, -(long)Errno.ENOSPC, -(long)Errno.ENOSPC], "ports 1 and 2 are the store's and the console's and count towards the limit");
    }

    [Fact]
    public void Destroying_A_Domain_Leaves_Its_Peer_Unbound()
    {
        var a = _hv.CreateDomain(new DomainConfig { Name = "peer-a", MemoryMiB = 4 });
        var b = _hv.CreateDomain(new DomainConfig { Name = "peer-b", MemoryMiB = 4 });
        var pa = (uint)a.Events.AllocUnbound(b.Id);
        var pb = (uint)Paravirt.Core.Events.EventChannelTable.BindInterdomain(b, a, pa);
        a.Destroy();
        var s = default(evtchn_status);
        b.Events.Status(pb, ref s).Should().Be(0);
        s.status.Should().Be((uint)EventChannel.EVTCHNSTAT_unbound);
        s.u.unbound.dom.Should().Be(a.Id);
        b.Destroy();
    }

    [Fact]
    public void Wrong_Ports_And_Unsupported_Ops_Get_Xen_Errnos()
    {
        var r = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            r.Add(Send(g, 9));
            r.Add(Close(g, 0));
            var virq = new evtchn_bind_virq { virq = Xen.VIRQ_DEBUG, vcpu = 0 };
            Op(g, EventChannel.EVTCHNOP_bind_virq, ref virq);
            r.Add(Send(g, virq.port));
            var pirq = new evtchn_bind_pirq { pirq = 1 };
            r.Add(Op(g, EventChannel.EVTCHNOP_bind_pirq, ref pirq));
            var expand = new evtchn_expand_array { array_gfn = 1 };
            r.Add(Op(g, EventChannel.EVTCHNOP_expand_array, ref expand));
            r.Add(g.Hypercall(Xen.__HYPERVISOR_event_channel_op, 99, g.Scratch));
            r.Add(g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, 0xdead_0000_0000));
        });
        r.Should().Equal(-(long)Errno.EINVAL, -(long)Errno.EINVAL, -(long)Errno.EINVAL, -(long)Errno.EPERM,
            -(long)Errno.EOPNOTSUPP, -(long)Errno.ENOSYS, -(long)Errno.EFAULT);
    }

    [Fact]
    public void A_Bound_Timer_Virq_Is_Marked_Pending_When_Raised()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "virq", MemoryMiB = 4 });
        var port = (uint)d.Events.BindVirq(Xen.VIRQ_TIMER, 0);
        d.Events.Delivery.IsPending(port).Should().BeFalse();
        d.RaiseVirq(d.Vcpus[0], Xen.VIRQ_TIMER);
        d.Events.Delivery.IsPending(port).Should().BeTrue();
        d.Destroy();
    }
}
