using System.Collections.Concurrent;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;
using Paravirt.Tests.Support;
using V = Paravirt.Core.Abi.VcpuOp;

namespace Paravirt.Tests.Hypercalls;

public sealed class VcpuOpTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    private static long E(Errno e) => -(long)e;

    [Fact]
    public void Unknown_Commands_Are_ENOSYS_Get_Physid_Is_EINVAL_For_A_DomU_And_Send_Nmi_Wants_A_Null_Argument()
    {
        long unknown = 0, physid = 0, nmiArg = 0, nmi = -1;
        GuestRunner.Run(_hv, g =>
        {
            unknown = g.VcpuOp(99, 0);
            physid = g.VcpuOp(V.VCPUOP_get_physid, 0, g.Scratch + 0x100);
            nmiArg = g.VcpuOp(V.VCPUOP_send_nmi, 0, g.Scratch);
            nmi = g.VcpuOp(V.VCPUOP_send_nmi, 0);
        });
        unknown.Should().Be(E(Errno.ENOSYS));
        physid.Should().Be(E(Errno.EINVAL), "only the hardware domain's pinned vCPUs have a physical id");
        nmiArg.Should().Be(E(Errno.EINVAL));
        nmi.Should().Be(0);
    }

    [Fact]
    public void A_Vcpuid_The_Domain_Does_Not_Have_Is_ENOENT_And_Only_Its_Low_32_Bits_Count()
    {
        long missing = 0, huge = 0, truncated = -1;
        GuestRunner.Run(_hv, g =>
        {
            missing = g.VcpuOp(V.VCPUOP_is_up, 1);
            huge = g.VcpuOp(V.VCPUOP_is_up, 0xFFFF_FFFF);
            truncated = g.VcpuOp(V.VCPUOP_is_up, 1UL << 32); // unsigned int vcpuid: vCPU 0
        });
        missing.Should().Be(E(Errno.ENOENT));
        huge.Should().Be(E(Errno.ENOENT));
        truncated.Should().Be(1);
    }

    [Fact]
    public async Task Initialise_Then_Up_Enters_SecondaryEntry_With_The_Contexts_Rip_And_Rsp()
    {
        var r = new ConcurrentDictionary<string, long>();
        (int Id, ulong Rip, ulong Rsp) entered = default;
        var d = _hv.CreateDomain(new DomainConfig { Name = "smp-up", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new SmpKernel(
            (cpu, si, scratch) =>
            {
                r["up-uninitialised"] = cpu.VcpuOp(V.VCPUOP_up, 1);
                r["is_up-before"] = cpu.VcpuOp(V.VCPUOP_is_up, 1);
                r["is_up-self"] = cpu.VcpuOp(V.VCPUOP_is_up, 0);
                var ctxt = new vcpu_guest_context { flags = ArchX86.VGCF_in_kernel };
                ctxt.user_regs.rip = 0x0012_3450;
                ctxt.user_regs.rsp = 0x0008_0000;
                cpu.Memory.Write(scratch + 0x1000, ctxt);
                r["init"] = cpu.VcpuOp(V.VCPUOP_initialise, 1, scratch + 0x1000);
                r["init-again"] = cpu.VcpuOp(V.VCPUOP_initialise, 1, scratch + 0x1000);
                r["init-self"] = cpu.VcpuOp(V.VCPUOP_initialise, 0, scratch + 0x1000);
                r["is_up-initialised"] = cpu.VcpuOp(V.VCPUOP_is_up, 1);
                r["up"] = cpu.VcpuOp(V.VCPUOP_up, 1);
                SmpKernel.WaitForFlag(cpu, scratch, 1);
                r["is_up-after"] = cpu.VcpuOp(V.VCPUOP_is_up, 1);
                r["up-again"] = cpu.VcpuOp(V.VCPUOP_up, 1);
                DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
            },
            (cpu, si, scratch, rip, rsp) =>
            {
                entered = (cpu.VcpuId, rip, rsp);
                cpu.Memory.WriteVolatile(scratch, 8, 1);
                SmpKernel.BlockForever(cpu);
            }));
        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Shutdown);
        r["up-uninitialised"].Should().Be(E(Errno.EINVAL));
        r["is_up-before"].Should().Be(0);
        r["is_up-self"].Should().Be(1);
        r["init"].Should().Be(0);
        r["init-again"].Should().Be(E(Errno.EEXIST));
        r["init-self"].Should().Be(E(Errno.EEXIST));
        r["is_up-initialised"].Should().Be(0, "initialising does not bring a vCPU up without VGCF_online");
        r["up"].Should().Be(0);
        r["is_up-after"].Should().Be(1);
        r["up-again"].Should().Be(0);
        entered.Should().Be((1, 0x0012_3450UL, 0x0008_0000UL));
        d.Destroy();
    }

    [Fact]
    public async Task Initialise_Refuses_Non_Canonical_Addresses_And_A_Bad_Ldt()
    {
        var r = new ConcurrentDictionary<string, long>();
        var d = _hv.CreateDomain(new DomainConfig { Name = "smp-init", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new SmpKernel(
            (cpu, si, scratch) =>
            {
                var at = scratch + 0x1000;
                long Init(vcpu_guest_context c)
                {
                    cpu.Memory.Write(at, c);
                    return cpu.VcpuOp(V.VCPUOP_initialise, 1, at);
                }

                var ok = new vcpu_guest_context { flags = ArchX86.VGCF_in_kernel };
                var rip = ok;
                rip.user_regs.rip = 0x0000_8000_0000_0000;
                r["rip"] = Init(rip);
                var cb = ok;
                cb.event_callback_eip = 0x1234_0000_0000_0000;
                r["callback"] = Init(cb);
                var ldt = ok;
                ldt.ldt_ents = 8193;
                r["ldt"] = Init(ldt);
                var user = ok;
                user.flags = 0; // user mode needs a user page table (ctrlreg[1])
                r["user"] = Init(user);
                r["is_initialised"] = cpu.VcpuOp(V.VCPUOP_up, 1); // still uninitialised
                DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
            },
            (cpu, si, scratch, rip, rsp) => { }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        r.Values.Should().AllBeEquivalentTo(E(Errno.EINVAL));
        r.Should().HaveCount(5);
        d.Destroy();
    }

    [Fact]
    public async Task Down_On_Itself_Parks_A_Secondary_Offline_Until_Up_Resumes_It_Where_It_Stopped()
    {
        var r = new ConcurrentDictionary<string, long>();
        var d = _hv.CreateDomain(new DomainConfig { Name = "smp-down", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new SmpKernel(
            (cpu, si, scratch) =>
            {
                var runstate = scratch + 0x200;
                SmpKernel.InitialiseAndUp(cpu, scratch, 1);
                SmpKernel.WaitForFlag(cpu, scratch, 1);
                while (cpu.VcpuOp(V.VCPUOP_is_up, 1) != 0)
                {
                    cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_yield);
                }

                vcpu_runstate_info info;
                do
                {
                    cpu.VcpuOp(V.VCPUOP_get_runstate_info, 1, runstate).Should().Be(0);
                    info = cpu.Memory.Read<vcpu_runstate_info>(runstate);
                }
                while (info.state != V.RUNSTATE_offline);

                r["up"] = cpu.VcpuOp(V.VCPUOP_up, 1);
                SmpKernel.WaitForFlag(cpu, scratch, 2);
                r["is_up"] = cpu.VcpuOp(V.VCPUOP_is_up, 1);
                DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
            },
            (cpu, si, scratch, rip, rsp) =>
            {
                cpu.Memory.WriteVolatile(scratch, 8, 1);
                r["down"] = cpu.VcpuOp(V.VCPUOP_down, 1); // returns once brought up again
                cpu.Memory.WriteVolatile(scratch, 8, 2);
                SmpKernel.BlockForever(cpu);
            }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        r["down"].Should().Be(0);
        r["up"].Should().Be(0);
        r["is_up"].Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task The_Last_Vcpu_Going_Down_Powers_The_Domain_Off()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "last-down", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            cpu.VcpuOp(V.VCPUOP_down, 1); // already down: vCPU 0 is still up, nothing happens
            cpu.VcpuOp(V.VCPUOP_down, 0);
            while (true)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_yield);
            }
        }));
        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Shutdown);
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_poweroff, "Xen 4.17's VCPUOP_down: domain_shutdown(d, SHUTDOWN_poweroff) for the last vCPU");
        exit.LastVcpuWentDown.Should().BeTrue("the host can tell it from a guest's SCHEDOP_shutdown");
        d.Destroy();
    }

    [Fact]
    public void Get_Runstate_Info_Of_The_Calling_Vcpu_Says_Running_And_Counts_Up_To_Now()
    {
        GuestVcpu.Runstate info = null!;
        ulong before = 0, after = 0;
        long rc = -1;
        GuestRunner.Run(_hv, g =>
        {
            before = _hv.Clock.SystemTimeNs();
            rc = g.VcpuOp(V.VCPUOP_get_runstate_info, 0, g.Scratch + 0x100);
            after = _hv.Clock.SystemTimeNs();
            info = g.Cpu.Memory.Read<vcpu_runstate_info>(g.Scratch + 0x100).Unpack();
        });
        rc.Should().Be(0);
        info.state.Should().Be(V.RUNSTATE_running);
        info.state_entry_time.Should().BeLessThanOrEqualTo(after);
        (info.state_entry_time + info.time[V.RUNSTATE_running]).Should().BeGreaterThanOrEqualTo(before, "time in the current state counts up to the call");
        (info.time[0] + info.time[1] + info.time[2] + info.time[3]).Should().BeLessThanOrEqualTo(after);
    }

    [Fact]
    public void The_Runstate_Area_Is_Written_At_Registration_And_Again_When_The_Vcpu_Blocks_And_Wakes()
    {
        GuestVcpu.Runstate first = null!, second = null!;
        long rc = -1, hole = 0;
        GuestRunner.Run(_hv, g =>
        {
            var area = g.Scratch + 0x300;
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_runstate_memory_area { addr = new() { v = area } });
            rc = g.VcpuOp(V.VCPUOP_register_runstate_memory_area, 0, g.Scratch + 0x100);
            first = g.Cpu.Memory.Read<vcpu_runstate_info>(area).Unpack();
            GuestVcpu.BlockUntil(g.Cpu, _hv.Clock.SystemTimeNs() + 1_000_000);
            second = g.Cpu.Memory.Read<vcpu_runstate_info>(area).Unpack();
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_runstate_memory_area { addr = new() { v = ArchX86.__HYPERVISOR_VIRT_START } });
            hole = g.VcpuOp(V.VCPUOP_register_runstate_memory_area, 0, g.Scratch + 0x100);
        });
        rc.Should().Be(0);
        hole.Should().Be(E(Errno.EFAULT), "Xen's own address range is no guest handle");
        first.state.Should().Be(V.RUNSTATE_running);
        second.state.Should().Be(V.RUNSTATE_running);
        second.state_entry_time.Should().BeGreaterThan(first.state_entry_time, "blocking and waking are two run state changes");
        second.time[V.RUNSTATE_blocked].Should().BeGreaterThan(first.time[V.RUNSTATE_blocked]);
        (second.state_entry_time & V.XEN_RUNSTATE_UPDATE).Should().Be(0);
    }

    [Fact]
    public void With_Runstate_Update_Flag_The_Area_Ends_Each_Update_With_XEN_RUNSTATE_UPDATE_Clear()
    {
        vcpu_runstate_info info = default;
        GuestRunner.Run(_hv, g =>
        {
            g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, Xen.VMASST_TYPE_runstate_update_flag).Should().Be(0);
            var area = g.Scratch + 0x300;
            g.Cpu.Memory.Write(area, new vcpu_runstate_info { state_entry_time = 0 });
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_runstate_memory_area { addr = new() { v = area } });
            g.VcpuOp(V.VCPUOP_register_runstate_memory_area, 0, g.Scratch + 0x100).Should().Be(0);
            GuestVcpu.BlockUntil(g.Cpu, _hv.Clock.SystemTimeNs() + 1_000_000);
            info = g.Cpu.Memory.Read<vcpu_runstate_info>(area);
        });
        (info.state_entry_time & V.XEN_RUNSTATE_UPDATE).Should().Be(0);
        info.state_entry_time.Should().BeGreaterThan(0);
        info.state.Should().Be(V.RUNSTATE_running);
    }

    [Fact]
    public void Periodic_Timer_Period_Must_Be_At_Least_1ms_And_At_Most_STIME_DELTA_MAX_And_Wakes_A_Blocked_Vcpu()
    {
        long shortP = 0, longP = 0, ok = -1, woke = -1, stop = -1;
        GuestRunner.Run(_hv, g =>
        {
            GuestVcpu.BindTimerVirq(g.Cpu);
            long Set(ulong period)
            {
                g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_set_periodic_timer { period_ns = period });
                return g.VcpuOp(V.VCPUOP_set_periodic_timer, 0, g.Scratch + 0x100);
            }

            shortP = Set(999_999);
            longP = Set((ulong.MaxValue >> 2) + 1);
            ok = Set(1_000_000);
            woke = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
            stop = g.VcpuOp(V.VCPUOP_stop_periodic_timer, 0);
        });
        shortP.Should().Be(E(Errno.EINVAL));
        longP.Should().Be(E(Errno.EINVAL));
        ok.Should().Be(0);
        woke.Should().Be(0);
        stop.Should().Be(0);
    }

    [Fact]
    public async Task Single_Shot_Timer_Ops_Only_Target_The_Calling_Vcpu()
    {
        var r = new ConcurrentDictionary<string, long>();
        var d = _hv.CreateDomain(new DomainConfig { Name = "sshot-other", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var scratch = cpu.Memory.Read<start_info>(si).pt_base;
            cpu.Memory.Write(scratch + 0x100, new vcpu_set_singleshot_timer { timeout_abs_ns = ulong.MaxValue >> 4 });
            r["set-other"] = cpu.VcpuOp(V.VCPUOP_set_singleshot_timer, 1, scratch + 0x100);
            r["stop-other"] = cpu.VcpuOp(V.VCPUOP_stop_singleshot_timer, 1);
            r["set-self"] = cpu.VcpuOp(V.VCPUOP_set_singleshot_timer, 0, scratch + 0x100);
            r["stop-self"] = cpu.VcpuOp(V.VCPUOP_stop_singleshot_timer, 0);
            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        r["set-other"].Should().Be(E(Errno.EINVAL));
        r["stop-other"].Should().Be(E(Errno.EINVAL));
        r["set-self"].Should().Be(0);
        r["stop-self"].Should().Be(0);
        d.Destroy();
    }

    [Fact]
    public void A_Single_Shot_Deadline_Already_Past_Sends_The_Timer_Event_At_Once_Even_With_VCPU_SSHOTTMR_future()
    {
        long set = -1, block = -1;
        ulong deadlineLeft = 1;
        GuestRunner.Run(_hv, g =>
        {
            GuestVcpu.BindTimerVirq(g.Cpu);
            // Xen 4.17.x ignores VCPU_SSHOTTMR_future: no -ETIME, the event is sent instead.
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_set_singleshot_timer { timeout_abs_ns = 1, flags = V.VCPU_SSHOTTMR_future });
            set = g.VcpuOp(V.VCPUOP_set_singleshot_timer, 0, g.Scratch + 0x100);
            deadlineLeft = _hv.Domains.Single().Vcpus[0].SingleShotDeadlineNs;
            block = g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block); // the event is already there
        });
        set.Should().Be(0);
        deadlineLeft.Should().Be(0);
        block.Should().Be(0);
    }

    [Fact]
    public void Register_Vcpu_Info_Moves_It_Into_A_Guest_Page_Once_Copying_It_And_Marking_Everything_Pending()
    {
        long first = -1, second = 0;
        vcpu_info moved = default;
        GuestRunner.Run(_hv, g =>
        {
            var page = g.Scratch + 0x1000;
            g.Cpu.Memory.Write(page + 64, new vcpu_info { evtchn_upcall_mask = 0x55 });
            first = g.RegisterVcpuInfo(page, 64);
            moved = g.Cpu.Memory.Read<vcpu_info>(page + 64);
            second = g.RegisterVcpuInfo(g.Scratch + 0x2000, 0);
        });
        first.Should().Be(0);
        second.Should().Be(E(Errno.EINVAL), "vcpu_info can be registered only once");
        moved.evtchn_upcall_mask.Should().Be(1, "the contents come from the old vcpu_info, where events start masked");
        moved.evtchn_upcall_pending.Should().Be(1);
        moved.evtchn_pending_sel.Should().Be(ulong.MaxValue);
        moved.time.version.Should().NotBe(0);
        (moved.time.version & 1).Should().Be(0);
    }

    [Fact]
    public async Task Vcpu_Info_Of_Another_Vcpu_Can_Be_Registered_Only_While_It_Is_Down()
    {
        var r = new ConcurrentDictionary<string, long>();
        var d = _hv.CreateDomain(new DomainConfig { Name = "vi-other", MemoryMiB = 4, Vcpus = 3 });
        d.Start(new SmpKernel(
            (cpu, si, scratch) =>
            {
                r["down"] = GuestVcpu.RegisterVcpuInfo(cpu, si, scratch + 0x800, 2, scratch + 0x4000, 0);
                SmpKernel.InitialiseAndUp(cpu, scratch, 1);
                SmpKernel.WaitForFlag(cpu, scratch, 1);
                r["up"] = GuestVcpu.RegisterVcpuInfo(cpu, si, scratch + 0x800, 1, scratch + 0x5000, 0);
                DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
            },
            (cpu, si, scratch, rip, rsp) =>
            {
                cpu.Memory.WriteVolatile(scratch, 8, 1);
                SmpKernel.BlockForever(cpu);
            }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        r["down"].Should().Be(0);
        r["up"].Should().Be(E(Errno.EINVAL));
        d.Destroy();
    }

    [Fact]
    public async Task A_Vcpu_Beyond_The_Legacy_32_Needs_Its_Vcpu_Info_Registered_Before_Initialise()
    {
        var r = new ConcurrentDictionary<string, long>();
        var d = _hv.CreateDomain(new DomainConfig { Name = "vcpu32", MemoryMiB = 4, Vcpus = 33 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var scratch = cpu.Memory.Read<start_info>(si).pt_base;
            cpu.Memory.Write(scratch + 0x1000, new vcpu_guest_context { flags = ArchX86.VGCF_in_kernel });
            r["before"] = cpu.VcpuOp(V.VCPUOP_initialise, 32, scratch + 0x1000);
            r["register"] = GuestVcpu.RegisterVcpuInfo(cpu, si, scratch + 0x800, 32, scratch + 0x3000, 0);
            r["mask"] = cpu.Memory.Read<vcpu_info>(scratch + 0x3000).evtchn_upcall_mask;
            r["after"] = cpu.VcpuOp(V.VCPUOP_initialise, 32, scratch + 0x1000);
            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        r["before"].Should().Be(E(Errno.EINVAL));
        r["register"].Should().Be(0);
        r["mask"].Should().Be(1, "a fresh vcpu_info starts with events masked");
        r["after"].Should().Be(0);
        d.Destroy();
    }

    [Fact]
    public void Set_Timer_Op_Zero_Cancels_And_Huge_Or_Negative_Timeouts_Fire_In_100ms()
    {
        ulong armed = 0, cancelled = 1, hugeBefore = 0, huge = 0, hugeAfter = 0, negative = 0, negativeAfter = 0;
        GuestRunner.Run(_hv, g =>
        {
            var vcpu = _hv.Domains.Single().Vcpus[0];
            var now = _hv.Clock.SystemTimeNs();
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, now + 3_600_000_000_000).Should().Be(0);
            armed = vcpu.SingleShotDeadlineNs;
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, 0).Should().Be(0);
            cancelled = vcpu.SingleShotDeadlineNs;
            hugeBefore = _hv.Clock.SystemTimeNs();
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, 1UL << 62).Should().Be(0); // 2^62 ns ahead: far past the 2^50 limit
            huge = vcpu.SingleShotDeadlineNs;
            hugeAfter = _hv.Clock.SystemTimeNs();
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, 1UL << 63).Should().Be(0);
            negative = vcpu.SingleShotDeadlineNs;
            negativeAfter = _hv.Clock.SystemTimeNs();
            g.Hypercall(Xen.__HYPERVISOR_set_timer_op, 0);
        });
        armed.Should().BeGreaterThan(0);
        cancelled.Should().Be(0);
        huge.Should().BeInRange(hugeBefore + 100_000_000, hugeAfter + 100_000_000);
        negative.Should().BeInRange(hugeAfter + 100_000_000, negativeAfter + 100_000_000);
    }
}

/// <summary>A kernel with a secondary entry, for SMP tests. vCPU 0 gets start_info's scratch page.</summary>
internal sealed class SmpKernel(Action<IGuestCpu, ulong, ulong> main, Action<IGuestCpu, ulong, ulong, ulong, ulong> secondary) : ManagedKernel
{
    private ulong _startInfo;

    public override void Main(IGuestCpu cpu, ulong startInfo)
    {
        Volatile.Write(ref _startInfo, startInfo);
        main(cpu, startInfo, cpu.Memory.Read<start_info>(startInfo).pt_base);
    }

    public override void SecondaryEntry(IGuestCpu cpu, ulong rip, ulong rsp)
    {
        var si = Volatile.Read(ref _startInfo);
        secondary(cpu, si, cpu.Memory.Read<start_info>(si).pt_base, rip, rsp);
    }

    /// <summary>VCPUOP_initialise (kernel mode, rip/rsp 0x1000) then VCPUOP_up.</summary>
    public static void InitialiseAndUp(IGuestCpu cpu, ulong scratch, int vcpu)
    {
        var ctxt = new vcpu_guest_context { flags = ArchX86.VGCF_in_kernel };
        ctxt.user_regs.rip = 0x1000;
        ctxt.user_regs.rsp = 0x1000;
        cpu.Memory.Write(scratch + 0x1000, ctxt);
        cpu.VcpuOp(VcpuOp.VCPUOP_initialise, (ulong)vcpu, scratch + 0x1000).Should().Be(0);
        cpu.VcpuOp(VcpuOp.VCPUOP_up, (ulong)vcpu).Should().Be(0);
    }

    /// <summary>Yields until the word at <paramref name="scratch"/> reaches <paramref name="value"/> (the test's timeout bounds it).</summary>
    public static void WaitForFlag(IGuestCpu cpu, ulong scratch, ulong value)
    {
        while (cpu.Memory.ReadVolatile(scratch, 8) < value)
        {
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_yield);
        }
    }

    public static void BlockForever(IGuestCpu cpu)
    {
        while (true)
        {
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
        }
    }
}
