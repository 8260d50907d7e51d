using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Domains;

public sealed class DomainLifecycleTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Create_Builds_Start_Info_As_Xen_Does_For_Classic_PV()
    {
        ulong rsi = 0;
        var si = default(start_info);
        GuestRunner.Run(_hv, g =>
        {
            rsi = g.StartInfo;
            si = g.ReadStartInfo();
        }, new DomainConfig { Name = "si", MemoryMiB = 8, CommandLine = "root=/dev/xvda1", AutoTranslated = false });

        rsi.Should().NotBe(0UL);
        CString(ref si, 0, 32).Should().Be("xen-3.0-x86_64");
        var cmdOffset = (int)System.Runtime.InteropServices.Marshal.OffsetOf<start_info>(nameof(start_info.cmd_line));
        CString(ref si, cmdOffset, Xen.MAX_GUEST_CMDLINE).Should().Be("root=/dev/xvda1");

        si.nr_pages.Should().Be(8UL * 256);
        (si.shared_info & 0xfff).Should().Be(0, "shared_info is a page-aligned machine address");
        si.store_mfn.Should().NotBe(0UL);
        si.console.domU.mfn.Should().NotBe(0UL);
        si.mfn_list.Should().NotBe(0UL);
        si.nr_p2m_frames.Should().Be(4UL, "2048 pfns of 8 bytes take four pages");
    }

    [Fact]
    public void The_P2m_List_Maps_Every_Pfn_To_A_Distinct_Machine_Frame_Including_Store_And_Console()
    {
        ulong[] p2m = [];
        start_info si = default;
        GuestRunner.RunPv(_hv, g =>
        {
            si = g.ReadStartInfo();
            var bytes = new byte[si.nr_pages * 8];
            g.Cpu.Memory.Read(si.mfn_list, bytes);
            p2m = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(bytes).ToArray();
        });
        p2m.Should().HaveCount((int)si.nr_pages).And.OnlyHaveUniqueItems();
        p2m.Should().Contain(si.store_mfn).And.Contain(si.console.domU.mfn);
    }

    [Fact]
    public async Task Shutdown_Reason_Reaches_The_Host()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "reboot", MemoryMiB = 4 });
        d.Start(new ShutdownKernel(Sched.SHUTDOWN_reboot));
        await d.ExitWithinAsync();
        d.State.Should().Be(DomainState.Shutdown);
        d.Exit!.ShutdownCode.Should().Be(Sched.SHUTDOWN_reboot);
        d.Destroy();
        d.State.Should().Be(DomainState.Dead);
        _hv.FindDomain(d.Id).Should().BeNull();
    }

    [Fact]
    public void Shutdown_Code_Set_Earlier_Wins_Over_The_Later_Reason()
    {
        var exit = GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new sched_shutdown { reason = Sched.SHUTDOWN_suspend });
            g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown_code, g.Scratch).Should().Be(0);
        });
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_suspend);
    }

    [Fact]
    public async Task An_Exception_In_Guest_Code_Crashes_Only_That_Domain()
    {
        var healthy = _hv.CreateDomain(new DomainConfig { Name = "healthy", MemoryMiB = 4 });
        var gate = new ManualResetEventSlim();
        healthy.Start(new BlockingKernel(gate));
        var bad = _hv.CreateDomain(new DomainConfig { Name = "bad", MemoryMiB = 4 });
        bad.Start(new ThrowingKernel());
        await bad.ExitWithinAsync();
        bad.State.Should().Be(DomainState.Crashed);
        bad.Exit!.Reason.Should().Contain("InvalidOperationException").And.Contain("guest bug");
        healthy.State.Should().Be(DomainState.Running);
        gate.Set();
        await healthy.ExitWithinAsync();
        healthy.Exit!.State.Should().Be(DomainState.Shutdown);
        bad.Destroy();
        healthy.Destroy();
    }

    [Fact]
    public async Task Returning_From_Main_Without_Shutdown_Crashes_The_Domain()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "falls-off", MemoryMiB = 4 });
        d.Start(new EmptyKernel());
        await d.ExitWithinAsync();
        d.State.Should().Be(DomainState.Crashed);
        d.Destroy();
    }

    [Fact]
    public void Creating_Beyond_Host_Memory_Is_Refused_With_A_Clear_Message()
    {
        var act = () => _hv.CreateDomain(new DomainConfig { Name = "huge", MemoryMiB = 128 });
        act.Should().Throw<InvalidOperationException>().WithMessage("*needs*frames*free*");
        _hv.FreeFrames.Should().Be(_hv.TotalFrames);
    }

    [Fact]
    public void Bad_Configs_Are_Argument_Errors()
    {
        FluentActions.Invoking(() => _hv.CreateDomain(new DomainConfig { Name = "", MemoryMiB = 4 })).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => _hv.CreateDomain(new DomainConfig { Name = "v", MemoryMiB = 4, Vcpus = 0 })).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => _hv.CreateDomain(new DomainConfig { Name = "m", MemoryMiB = 4, MaxMemoryMiB = 2 })).Should().Throw<ArgumentException>();
        _hv.CreateDomain(new DomainConfig { Name = "dup", MemoryMiB = 4 });
        FluentActions.Invoking(() => _hv.CreateDomain(new DomainConfig { Name = "dup", MemoryMiB = 4 })).Should().Throw<ArgumentException>().WithMessage("*already exists*");
    }

    [Fact]
    public async Task A_Thousand_Create_Run_Destroy_Cycles_Return_Every_Frame()
    {
        var before = _hv.FreeFrames;
        for (var i = 0; i < 1000; i++)
        {
            var d = _hv.CreateDomain(new DomainConfig { Name = $"cycle{i}", MemoryMiB = 1 });
            d.Start(new ShutdownKernel(Sched.SHUTDOWN_poweroff));
            await d.ExitWithinAsync();
            d.Destroy();
        }

        _hv.FreeFrames.Should().Be(before);
        _hv.Domains.Should().BeEmpty();
    }

    [Fact]
    public async Task Pause_Holds_The_Guest_At_Its_Next_Hypercall_And_Unpause_Lets_It_Go()
    {
        using var inGuest = new SemaphoreSlim(0);
        using var proceed = new SemaphoreSlim(0);
        var d = _hv.CreateDomain(new DomainConfig { Name = "pause", MemoryMiB = 4 });
        d.Start(new PausableKernel(inGuest, proceed));
        (await inGuest.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        d.Pause();
        d.State.Should().Be(DomainState.Paused);
        proceed.Release();
        d.Exit.Should().BeNull("a paused domain's vCPU waits at the gate");
        d.Unpause();
        await d.ExitWithinAsync();
        d.Exit!.State.Should().Be(DomainState.Shutdown);
        d.Destroy();
    }

    [Fact]
    public async Task A_Vcpu_Held_By_Pause_Is_Offline_In_Its_Runstate_And_Running_Again_After_Unpause()
    {
        var ct = TestContext.Current.CancellationToken;
        using var inGuest = new SemaphoreSlim(0);
        using var proceed = new SemaphoreSlim(0);
        using var resumed = new SemaphoreSlim(0);
        using var finish = new SemaphoreSlim(0);
        var d = _hv.CreateDomain(new DomainConfig { Name = "held", MemoryMiB = 4 });
        d.Start(new HeldKernel(inGuest, proceed, resumed, finish));
        (await inGuest.WaitAsync(GuestRunner.Timeout, ct)).Should().BeTrue();
        var vcpu = d.VcpuList[0];
        vcpu.CurrentRunstate.Should().Be(VcpuOp.RUNSTATE_running, "the guest is in its own code");

        d.Pause();
        proceed.Release();
        var deadline = DateTime.UtcNow + GuestRunner.Timeout;
        while (vcpu.CurrentRunstate != VcpuOp.RUNSTATE_offline)
        {
            DateTime.UtcNow.Should().BeBefore(deadline, "the vCPU reaches its next hypercall and is held there, offline (runstate {0})", vcpu.CurrentRunstate);
            await Task.Delay(5, ct);
        }

        d.Unpause();
        (await resumed.WaitAsync(GuestRunner.Timeout, ct)).Should().BeTrue("unpause lets the held hypercall go on");
        vcpu.CurrentRunstate.Should().Be(VcpuOp.RUNSTATE_running);
        finish.Release();
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
    }

    private static string CString(ref start_info si, int offset, int length)
    {
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(new Span<start_info>(ref si)).Slice(offset, length);
        return System.Text.Encoding.ASCII.GetString(bytes[..bytes.IndexOf((byte)0)]);
    }

    internal static void ShutdownFrom(IGuestCpu cpu, ulong startInfo, uint reason)
    {
        var scratch = cpu.Memory.Read<start_info>(startInfo).pt_base;
        cpu.Memory.Write(scratch, new sched_shutdown { reason = reason });
        cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, scratch);
    }

    private sealed class ShutdownKernel(uint reason) : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo) => ShutdownFrom(cpu, startInfo, reason);
    }

    private sealed class ThrowingKernel : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo) => throw new InvalidOperationException("guest bug");
    }

    private sealed class EmptyKernel : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
        }
    }

    private sealed class BlockingKernel(ManualResetEventSlim gate) : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            gate.Wait(GuestRunner.Timeout);
            ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }
    }

    private sealed class HeldKernel(SemaphoreSlim inGuest, SemaphoreSlim proceed, SemaphoreSlim resumed, SemaphoreSlim finish) : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            inGuest.Release();
            proceed.Wait(GuestRunner.Timeout);
            cpu.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
            resumed.Release();
            finish.Wait(GuestRunner.Timeout);
            ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }
    }

    private sealed class PausableKernel(SemaphoreSlim inGuest, SemaphoreSlim proceed) : ManagedKernel
    {
        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            inGuest.Release();
            proceed.Wait(GuestRunner.Timeout);
            cpu.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
            ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }
    }
}
