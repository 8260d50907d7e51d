using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

public sealed class SchedOpTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 16 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Yield_Returns_Zero_And_Unknown_Commands_Are_ENOSYS()
    {
        long yield = -1, unknown = 0, pin = 0;
        GuestRunner.Run(_hv, g =>
        {
            yield = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_yield);
            unknown = g.Hypercall(Xen.__HYPERVISOR_sched_op, 99);
            pin = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_pin_override, g.Scratch);
        });
        yield.Should().Be(0);
        unknown.Should().Be(-(long)Errno.ENOSYS);
        pin.Should().Be(-(long)Errno.EPERM, "only the hardware domain may override pinning");
    }

    [Fact]
    public async Task Crash_Reason_Crashes_The_Domain()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "crasher", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) => Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_crash)));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Crashed);
        d.Destroy();
    }

    [Fact]
    public void Poll_With_A_Timeout_In_The_Past_Returns_At_Once_And_Too_Many_Ports_Is_EINVAL()
    {
        long past = -1, tooMany = 0, badPort = 0;
        GuestRunner.Run(_hv, g =>
        {
            var ports = g.Scratch + 0x100;
            g.Cpu.Memory.Write(ports, 5u);
            g.Cpu.Memory.Write(g.Scratch, new sched_poll { ports = ports, nr_ports = 1, timeout = 1 });
            past = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new sched_poll { ports = ports, nr_ports = 129, timeout = 1 });
            tooMany = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, g.Scratch);
            g.Cpu.Memory.Write(ports, 1_000_000u);
            g.Cpu.Memory.Write(g.Scratch, new sched_poll { ports = ports, nr_ports = 1, timeout = 1 });
            badPort = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, g.Scratch);
        });
        past.Should().Be(0);
        tooMany.Should().Be(-(long)Errno.EINVAL);
        badPort.Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void Remote_Shutdown_Of_Another_Domain_Is_Refused_And_Of_A_Missing_One_Is_ESRCH()
    {
        var victim = _hv.CreateDomain(new DomainConfig { Name = "victim", MemoryMiB = 4 });
        long perm = 0, missing = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new sched_remote_shutdown { domain_id = victim.Id, reason = Sched.SHUTDOWN_poweroff });
            perm = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_remote_shutdown, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new sched_remote_shutdown { domain_id = 0x7000, reason = Sched.SHUTDOWN_poweroff });
            missing = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_remote_shutdown, g.Scratch);
        });
        perm.Should().Be(-(long)Errno.EPERM);
        missing.Should().Be(-(long)Errno.ESRCH);
        victim.State.Should().Be(DomainState.Created);
        victim.Destroy();
    }

    [Fact]
    public void Watchdog_Hands_Out_Two_Timers_Then_ENOSPC_And_Rejects_Unknown_Ids()
    {
        var results = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            void Dog(uint id, uint timeout)
            {
                g.Cpu.Memory.Write(g.Scratch, new sched_watchdog { id = id, timeout = timeout });
                results.Add(g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_watchdog, g.Scratch));
            }

            Dog(0, 3600);
            Dog(0, 3600);
            Dog(0, 3600);
            Dog(1, 0);
            Dog(1, 0);
            Dog(3, 10);
        });
        results.Should().Equal(1, 2, -(long)Errno.ENOSPC, 0, -(long)Errno.EINVAL, -(long)Errno.EINVAL);
    }

    [Fact]
    public async Task An_Expired_Watchdog_Shuts_The_Domain_Down_With_SHUTDOWN_watchdog()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "dog", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var scratch = cpu.Memory.Read<start_info>(si).pt_base;
            cpu.Memory.Write(scratch, new sched_watchdog { id = 0, timeout = 1 });
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_watchdog, scratch);
            while (true)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block); // no events: only the watchdog ends this
            }
        }));
        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Shutdown);
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_watchdog);
        d.Destroy();
    }
}
