using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using V = Paravirt.Core.Abi.VcpuOp;

namespace Paravirt.Tests.Time;

public sealed class TimeTests : IDisposable
{
    private static readonly DateTimeOffset Pinned = new DateTimeOffset(2031, 5, 17, 8, 9, 10, TimeSpan.Zero).AddTicks(1_234_567);

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 16, Wallclock = new PinnedTime(Pinned) });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Shared_Info_Wallclock_Is_The_Pinned_Time_With_An_Even_Version()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "wc", MemoryMiB = 4 });
        var s = d.SharedInfo!.At<shared_info>(0);
        d.Destroy();
        var ns = (Pinned - DateTimeOffset.UnixEpoch).Ticks * 100;
        s.wc_version.Should().NotBe(0);
        (s.wc_version & 1).Should().Be(0);
        (((ulong)s.wc_sec_hi << 32) | s.wc_sec).Should().Be((ulong)(ns / 1_000_000_000));
        s.wc_nsec.Should().Be((uint)(ns % 1_000_000_000));
    }

    [Fact]
    public void Vcpu_Time_Info_Is_Published_Stable_With_The_Clocks_Scale_And_TSC_Stable()
    {
        vcpu_info info = default;
        long rc = -1;
        GuestRunner.Run(_hv, g =>
        {
            rc = g.RegisterVcpuInfo(g.Scratch + 0x1000);
            info = g.Cpu.Memory.Read<vcpu_info>(g.Scratch + 0x1000);
        });
        rc.Should().Be(0);
        (info.time.version & 1).Should().Be(0, "an even version means no update is in progress");
        info.time.tsc_to_system_mul.Should().Be(_hv.Clock.TscToSystemMul);
        info.time.tsc_shift.Should().Be(_hv.Clock.TscShift);
        (info.time.flags & Xen.XEN_PVCLOCK_TSC_STABLE_BIT).Should().NotBe(0);
    }

    [Fact]
    public void A_Guest_Pvclock_Read_Is_Monotonic_And_Agrees_With_The_Hypervisors_System_Time()
    {
        var samples = new List<(ulong Before, ulong Guest, ulong After)>();
        GuestRunner.Run(_hv, g =>
        {
            var shared = GuestEvents.MapSharedInfo(g);
            g.RegisterVcpuInfo(g.Scratch + 0x1000).Should().Be(0);
            var time = g.Scratch + 0x1000 + GuestVcpu.TimeOffset;
            for (var i = 0; i < 200; i++)
            {
                var before = _hv.Clock.SystemTimeNs();
                var guest = GuestVcpu.ReadPvclock(g.Cpu, time, out _);
                var after = _hv.Clock.SystemTimeNs();
                samples.Add((before, guest, after));
                if (i % 50 == 49)
                {
                    // Acknowledge what is pending (registration marks an upcall), as the guest's handler would.
                    GuestEvents.Acknowledge(g.Cpu, shared, g.Scratch + 0x1000);
                    GuestVcpu.BlockUntil(g.Cpu, _hv.Clock.SystemTimeNs() + 100_000); // republishes on wake
                }
            }
        });

        // scale(a) + scale(b) may be 1 ns below scale(a + b): the guest's sum is allowed that rounding.
        samples.Should().AllSatisfy(s =>
        {
            (s.Guest + 1).Should().BeGreaterThanOrEqualTo(s.Before);
            s.Guest.Should().BeLessThanOrEqualTo(s.After);
        });
        samples.Select(s => s.Guest).Should().BeInAscendingOrder();
    }

    [Fact]
    public void Time_Info_Is_Republished_When_The_Vcpu_Wakes_From_Block()
    {
        vcpu_time_info before = default, after = default;
        ulong deadline = 0;
        GuestRunner.Run(_hv, g =>
        {
            var shared = GuestEvents.MapSharedInfo(g);
            g.RegisterVcpuInfo(g.Scratch + 0x1000).Should().Be(0);
            GuestEvents.Acknowledge(g.Cpu, shared, g.Scratch + 0x1000); // registration marks an upcall pending
            var time = g.Scratch + 0x1000 + GuestVcpu.TimeOffset;
            before = g.Cpu.Memory.Read<vcpu_time_info>(time);
            deadline = _hv.Clock.SystemTimeNs() + 1_000_000;
            GuestVcpu.BlockUntil(g.Cpu, deadline).Should().Be(0);
            after = g.Cpu.Memory.Read<vcpu_time_info>(time);
        });
        after.version.Should().BeGreaterThan(before.version);
        (after.version & 1).Should().Be(0);
        after.tsc_timestamp.Should().BeGreaterThan(before.tsc_timestamp);
        after.system_time.Should().BeGreaterThanOrEqualTo(deadline, "the timer fires only once system time reaches its deadline");
    }

    [Fact]
    public void A_Guest_Blocked_With_A_Single_Shot_Timer_Armed_Wakes_And_Block_Returns_Zero()
    {
        long block = -1;
        ulong deadline = 0, woke = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            GuestVcpu.BindTimerVirq(g.Cpu);
            deadline = _hv.Clock.SystemTimeNs() + 2_000_000;
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_set_singleshot_timer { timeout_abs_ns = deadline });
            g.VcpuOp(V.VCPUOP_set_singleshot_timer, 0, g.Scratch + 0x100).Should().Be(0);
            block = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
            woke = _hv.Clock.SystemTimeNs();
        });
        exit.State.Should().Be(DomainState.Shutdown);
        block.Should().Be(0);
        woke.Should().BeGreaterThanOrEqualTo(deadline);
    }

    [Fact]
    public void The_Secondary_Time_Area_Gets_The_Same_Stable_Copy_As_Vcpu_Info()
    {
        vcpu_time_info primary = default, secondary = default;
        long rc = -1;
        GuestRunner.Run(_hv, g =>
        {
            g.RegisterVcpuInfo(g.Scratch + 0x1000).Should().Be(0);
            var area = g.Scratch + 0x2000;
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_time_memory_area { addr = new() { v = area } });
            rc = g.VcpuOp(V.VCPUOP_register_vcpu_time_memory_area, 0, g.Scratch + 0x100);
            primary = g.Cpu.Memory.Read<vcpu_time_info>(g.Scratch + 0x1000 + GuestVcpu.TimeOffset);
            secondary = g.Cpu.Memory.Read<vcpu_time_info>(area);
        });
        rc.Should().Be(0);
        secondary.Should().Be(primary);
        (secondary.version & 1).Should().Be(0);
    }

    [Fact]
    public async Task A_Vcpu_Gets_Fresh_Time_Info_When_It_Starts()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "start-time", MemoryMiB = 4, Vcpus = 2 });
        var v1 = d.Vcpus[1];
        var initial = v1.Info.time;
        ulong beforeUp = 0;
        d.Start(new Hypercalls.SmpKernel(
            (cpu, si, scratch) =>
            {
                beforeUp = _hv.Clock.SystemTimeNs();
                Hypercalls.SmpKernel.InitialiseAndUp(cpu, scratch, 1);
                Hypercalls.SmpKernel.WaitForFlag(cpu, scratch, 1);
                Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
            },
            (cpu, si, scratch, rip, rsp) =>
            {
                cpu.Memory.WriteVolatile(scratch, 8, 1);
                Hypercalls.SmpKernel.BlockForever(cpu);
            }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        var started = v1.Info.time;
        d.Destroy();
        started.version.Should().BeGreaterThan(initial.version);
        started.system_time.Should().BeGreaterThanOrEqualTo(beforeUp);
    }

    private sealed class PinnedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }
}
