using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Events;

/// <summary>Channels between a guest and the host (domain 0), as a backend uses them.</summary>
public sealed class HostEventChannelTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void The_Host_Has_No_Event_Channel_Limit_But_The_Abis_As_Xens_Dom0()
    {
        // Every guest costs the host two ports (store, console) and one per device, so the guests'
        // default of 1023 would stop the host near 500 domains (the density run hit it at 512).
        var d = _hv.CreateDomain(new DomainConfig { Name = "many", MemoryMiB = 4 });
        _hv.HostDomain.Events.MaxPort.Should().Be(EventChannel.EVTCHN_FIFO_NR_CHANNELS - 1);
        var ports = new List<long>();
        for (var i = 0; i < 3000; i++)
        {
            var port = _hv.HostDomain.Events.AllocUnbound(d.Id);
            port.Should().BePositive($"host port {i + 1} of 3000 should be allocated");
            ports.Add(port);
        }

        ports.Should().OnlyHaveUniqueItems();
        d.Events.MaxPort.Should().Be(DomainLimits.Default.MaxEventChannels, "a guest keeps its own limit (xl's max_event_channels)");
    }

    [Fact]
    public async Task Host_Binds_A_Guest_Port_And_Each_Side_Notifies_The_Other()
    {
        using var offered = new SemaphoreSlim(0);
        using var hostBound = new SemaphoreSlim(0);
        using var guestSent = new SemaphoreSlim(0);
        uint guestPort = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "front", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            g.Cpu.Memory.Write(g.Scratch, new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_alloc_unbound, g.Scratch).Should().Be(0);
            guestPort = g.Cpu.Memory.Read<evtchn_alloc_unbound>(g.Scratch).port;
            offered.Release();
            hostBound.Wait(GuestRunner.Timeout);
            g.Cpu.Memory.Write(g.Scratch, new evtchn_send { port = guestPort });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, g.Scratch).Should().Be(0);
            guestSent.Release();
            hostBound.Wait(GuestRunner.Timeout);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await offered.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        using var channel = _hv.Host.BindInterdomain(d, guestPort);
        channel.RemotePort.Should().Be(guestPort);
        (await channel.WaitAsync(TestContext.Current.CancellationToken)).Should().BeTrue("binding marks the new end pending, as Xen does");
        hostBound.Release();
        (await guestSent.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        (await channel.WaitAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken))
            .Should().BeTrue("the guest's send reaches the host");

        channel.Notify();
        d.Events.Delivery.IsPending(guestPort).Should().BeTrue("the host's notify reaches the guest's port");
        hostBound.Release();
        await d.ExitWithinAsync();
        d.Destroy();
    }

    [Fact]
    public async Task Guest_Binds_A_Host_Port_And_Host_Sees_Its_End_Unbound_When_The_Guest_Dies()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "binder", MemoryMiB = 4 });
        using var hostEnd = _hv.Host.AllocUnbound(d);
        long bindRc = -1;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            g.Cpu.Memory.Write(g.Scratch, new evtchn_bind_interdomain { remote_dom = 0, remote_port = hostEnd.LocalPort });
            bindRc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_bind_interdomain, g.Scratch);
            var local = g.Cpu.Memory.Read<evtchn_bind_interdomain>(g.Scratch).local_port;
            g.Cpu.Memory.Write(g.Scratch, new evtchn_send { port = local });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, g.Scratch);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        bindRc.Should().Be(0);
        hostEnd.IsPending.Should().BeTrue();
        hostEnd.RemotePort.Should().NotBeNull();
        d.Destroy();
        hostEnd.RemotePort.Should().BeNull("the guest's ports closed with it, leaving the host's end unbound");
    }

    [Fact]
    public void Binding_A_Port_Not_Offered_To_The_Host_Throws_With_The_Errno()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "stingy", MemoryMiB = 4 });
        var port = (uint)d.Events.AllocUnbound(0x1234);
        var act = () => _hv.Host.BindInterdomain(d, port);
        act.Should().Throw<XenException>().Which.Errno.Should().Be(Errno.EINVAL);
        d.Destroy();
    }

    [Fact]
    public void A_Guest_Cannot_Read_Or_Reset_The_Hosts_Channels()
    {
        long status = 0, reset = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new evtchn_status { dom = 0, port = 1 });
            status = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_status, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new evtchn_reset { dom = 0 });
            reset = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_reset, g.Scratch);
        });
        status.Should().Be(-(long)Errno.EPERM);
        reset.Should().Be(-(long)Errno.EPERM);
    }
}
