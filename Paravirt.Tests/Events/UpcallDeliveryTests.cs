using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Events;

/// <summary>Events reaching guest code as upcalls, end to end through the 2-level ABI.</summary>
public sealed class UpcallDeliveryTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task An_Ipi_Sent_While_Masked_Arrives_As_One_Upcall_When_Block_Unmasks()
    {
        var kernel = new IpiKernel();
        var d = _hv.CreateDomain(new DomainConfig { Name = "ipi", MemoryMiB = 4 });
        d.Start(kernel);
        await d.ExitWithinAsync();
        kernel.Failure.Should().BeNull();
        kernel.CallbacksBeforeBlock.Should().Be(0, "vCPUs start with events masked");
        kernel.Ports.Should().Equal(kernel.IpiPort);
        kernel.MaskedInside.Should().BeTrue("the callback runs with evtchn_upcall_mask set");
        d.Destroy();
    }

    [Fact]
    public async Task A_Timer_Virq_Wakes_A_Blocked_Guest_And_Names_Its_Port()
    {
        var kernel = new TimerKernel();
        var d = _hv.CreateDomain(new DomainConfig { Name = "timer", MemoryMiB = 4 });
        d.Start(kernel);
        await d.ExitWithinAsync();
        kernel.Failure.Should().BeNull();
        kernel.Ports.Should().Contain(kernel.TimerPort);
        d.Meter.TimerInterrupts.Should().BeGreaterThan(0);
        d.Destroy();
    }

    private abstract class EventKernel : ManagedKernel
    {
        public Exception? Failure;
        public readonly List<uint> Ports = [];
        public int Callbacks;
        public bool MaskedInside;
        protected ulong Shared;

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            var g = new GuestContext(cpu, startInfo);
            try
            {
                Shared = GuestEvents.MapSharedInfo(g);
                cpu.Memory.Write(g.Scratch, new callback_register { type = Callback.CALLBACKTYPE_event, address = 0xffff_8000_0000_1000 });
                cpu.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, g.Scratch).Should().Be(0);
                Body(g);
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                Failure = e;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }

        protected abstract void Body(GuestContext g);

        public override void EventCallback(IGuestCpu cpu, ulong address)
        {
            Callbacks++;
            var vi = GuestEvents.LegacyVcpuInfo(Shared, cpu.VcpuId);
            MaskedInside = cpu.Memory.ReadVolatile(vi + 1, 1) == 1;
            Ports.AddRange(GuestEvents.Acknowledge(cpu, Shared, vi));
        }
    }

    private sealed class IpiKernel : EventKernel
    {
        public int CallbacksBeforeBlock = -1;
        public uint IpiPort;

        protected override void Body(GuestContext g)
        {
            g.Cpu.Memory.Write(g.Scratch, new evtchn_bind_ipi { vcpu = 0 });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_bind_ipi, g.Scratch).Should().Be(0);
            IpiPort = g.Cpu.Memory.Read<evtchn_bind_ipi>(g.Scratch).port;
            g.Cpu.Memory.Write(g.Scratch, new evtchn_send { port = IpiPort });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, g.Scratch).Should().Be(0);
            CallbacksBeforeBlock = Callbacks;
            g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block).Should().Be(0);
        }
    }

    private sealed class TimerKernel : EventKernel
    {
        public uint TimerPort;

        protected override void Body(GuestContext g)
        {
            g.Cpu.Memory.Write(g.Scratch, new evtchn_bind_virq { virq = Xen.VIRQ_TIMER, vcpu = 0 });
            g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_bind_virq, g.Scratch).Should().Be(0);
            TimerPort = g.Cpu.Memory.Read<evtchn_bind_virq>(g.Scratch).port;
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, 1).Should().Be(0); // a deadline in the past fires at once
            while (!Ports.Contains(TimerPort))
            {
                g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block).Should().Be(0);
            }
        }
    }
}
