using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>Small PV kernels in machine code on the PV engine: hypercalls, traps, events, emulation.</summary>
public sealed class PvEngineTests : IDisposable
{
    private const ulong Out = K.DataVa;            // results the test reads back
    private const ulong Scratch = K.DataVa + 0x800; // hypercall arguments
    private const ulong Text = K.DataVa + 0x1000;   // console strings
    private const ulong Traps = K.DataVa + 0x2000;  // trap_info arrays

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => _hv.Dispose();

    private K NewKernel() => new(_hv, $"pv-{Guid.NewGuid():N}");

    [Fact]
    public async Task Console_Io_Reaches_The_Console_And_Sched_Op_Shutdown_Powers_Off()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            k.Print(a, Text, "hello from a PV kernel\n");
            a.mov(__qword_ptr[Out], rax); // console_io's result
            k.Shutdown(a, Scratch);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_poweroff);
        k.ReadU64(Out).Should().Be(0, "console_io's write answers 0, as Xen's does");
        k.Domain.Destroy();
        k.ConsoleLines().Should().Contain("hello from a PV kernel");
        k.Domain.Meter.Hypercalls(Xen.__HYPERVISOR_console_io).Should().Be(1);
        k.Domain.Meter.Hypercalls(Xen.__HYPERVISOR_sched_op).Should().Be(1);
    }

    [Fact]
    public async Task Page_Fault_Handler_Reads_Cr2_From_Vcpu_Info_And_Irets_Past_The_Fault()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var handler = a.CreateLabel();
            var resume = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.PF, 0, handler));
            a.mov(rax, K.Unmapped + 0x123);
            a.mov(rbx, __qword_ptr[rax]); // faults
            a.ud2();
            a.Label(ref resume);
            k.Print(a, Text, "resumed\n");
            k.Shutdown(a, Scratch);

            a.Label(ref handler);
            a.mov(rax, __qword_ptr[K.SharedInfoVa + 16]); // vcpu_info[0].arch.cr2
            a.mov(__qword_ptr[Out], rax);
            a.mov(rax, __qword_ptr[rsp + 16]); // the error code
            a.mov(__qword_ptr[Out + 8], rax);
            a.mov(rax, __qword_ptr[rsp + 32]); // saved cs
            a.mov(__qword_ptr[Out + 16], rax);
            a.lea(rax, __[resume]);
            a.mov(__qword_ptr[rsp + 24], rax); // return to resume instead
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(K.Unmapped + 0x123, "Xen writes cr2 to vcpu_info.arch.cr2 before the bounce");
        k.ReadU64(Out + 8).Should().Be(0, "a not-present read in guest kernel mode: no P, W or U bit");
        (k.ReadU64(Out + 16) & 0xFFFF).Should().Be(ArchX86.FLAT_KERNEL_CS & ~3, "a frame from kernel mode has CS with RPL 0");
        k.Domain.Destroy();
        k.ConsoleLines().Should().Contain("resumed");
    }

    [Fact]
    public async Task Int3_And_Ud2_Reach_Their_Handlers_With_Trap_And_Fault_Rips()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var bp = a.CreateLabel();
            var ud = a.CreateLabel();
            var int3Label = a.CreateLabel();
            var ud2Label = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.BP, 0, bp), (Vectors.UD, 0, ud));
            a.Label(ref int3Label);
            a.int3();
            a.Label(ref ud2Label);
            a.ud2();
            a.mov(__qword_ptr[Out + 16], 1);
            k.Shutdown(a, Scratch);

            a.Label(ref bp);
            a.mov(rax, __qword_ptr[rsp + 16]); // rip: past int3 (a trap)
            a.mov(__qword_ptr[Out], rax);
            K.IretFromBounce(a, errorCode: false);

            a.Label(ref ud);
            a.mov(rax, __qword_ptr[rsp + 16]); // rip: at ud2 (a fault)
            a.mov(__qword_ptr[Out + 8], rax);
            a.add(__qword_ptr[rsp + 16], 2);
            K.IretFromBounce(a, errorCode: false);
        });
        // The labels' addresses: int3 is the first instruction after the trap-table setup; find it in memory.
        var int3At = FindBytes(k, [0xCC, 0x0F, 0x0B]);
        var ud2At = int3At + 1;

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(int3At + 1);
        k.ReadU64(Out + 8).Should().Be(ud2At);
        k.ReadU64(Out + 16).Should().Be(1, "the ud2 handler stepped past it");
    }

    [Fact]
    public async Task Event_Upcall_Runs_The_Event_Callback_After_A_Host_Notify_With_Events_Masked()
    {
        var k = NewKernel();
        var port = k.Domain.Events.AllocUnbound(0);
        port.Should().BeGreaterThan(0);
        k.Load(a =>
        {
            var callback = a.CreateLabel();
            a.lea(rdi, __[callback]);
            a.xor(esi, esi);
            a.xor(edx, edx);
            a.mov(eax, Xen.__HYPERVISOR_set_callbacks);
            a.syscall();
            K.Hypercall(a, Xen.__HYPERVISOR_sched_op, (ulong)Sched.SCHEDOP_block, 0);
            a.ud2(); // the upcall comes first

            a.Label(ref callback);
            a.movzx(eax, __byte_ptr[K.SharedInfoVa + 1]); // evtchn_upcall_mask inside the callback
            a.mov(__qword_ptr[Out], rax);
            a.mov(rax, __qword_ptr[rsp + 24]); // saved CS with the saved upcall mask in bits 32-39
            a.mov(__qword_ptr[Out + 8], rax);
            a.mov(rax, __qword_ptr[K.SharedInfoVa + 0x800]); // shared_info.evtchn_pending[0]
            a.mov(__qword_ptr[Out + 16], rax);
            k.Print(a, Text, "upcall\n");
            k.Shutdown(a, Scratch);
        });

        k.Start();
        using var channel = _hv.Host.BindInterdomain(k.Domain, (uint)port);
        channel.Notify();
        var exit = await k.Domain.ExitWithinAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(1, "the bounce masks events (TBF_INTERRUPT)");
        (k.ReadU64(Out + 8) >> 32).Should().Be(0, "events were unmasked by SCHEDOP_block when the upcall came");
        (k.ReadU64(Out + 16) & (1UL << (int)port)).Should().NotBe(0, "the host's notify set the port pending");
        k.Domain.Destroy();
        k.ConsoleLines().Should().Contain("upcall");
    }

    [Fact]
    public async Task Forced_Emulation_Prefix_Runs_Cpuid_From_The_Pv_Policy()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            a.mov(eax, 0x4000_0000);
            a.xor(ecx, ecx);
            a.db(0x0F, 0x0B, (byte)'x', (byte)'e', (byte)'n', 0x0F, 0xA2); // XEN_CPUID
            a.mov(__dword_ptr[Out], ebx);
            a.mov(__dword_ptr[Out + 4], ecx);
            a.mov(__dword_ptr[Out + 8], edx);
            a.mov(__dword_ptr[Out + 12], eax);
            a.mov(eax, 0x4000_0001);
            a.db(0x0F, 0x0B, (byte)'x', (byte)'e', (byte)'n', 0x0F, 0xA2);
            a.mov(__dword_ptr[Out + 16], eax);
            a.mov(eax, 0x4000_0002);
            a.db(0x0F, 0x0B, (byte)'x', (byte)'e', (byte)'n', 0x0F, 0xA2);
            a.mov(__dword_ptr[Out + 24], ecx);
            a.mov(eax, 1);
            a.cpuid(); // plain cpuid: the same policy
            a.mov(__dword_ptr[Out + 20], ecx);
            k.Shutdown(a, Scratch);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        var signature = new byte[12];
        k.Domain.Memory.TryRead(Out, signature).Should().BeTrue();
        System.Text.Encoding.ASCII.GetString(signature).Should().Be("XenVMMXenVMM");
        ((uint)k.ReadU64(Out + 12)).Should().Be(0x4000_0005, "the largest hypervisor leaf (XEN_CPUID_MAX_NUM_LEAVES)");
        ((uint)k.ReadU64(Out + 16)).Should().Be((4u << 16) | 17, "Xen 4.17");
        ((uint)k.ReadU64(Out + 20) & (1u << 31)).Should().NotBe(0, "the hypervisor bit");
        ((uint)k.ReadU64(Out + 24) & 1).Should().Be(1u, "XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: mmu_update takes MMU_PT_UPDATE_PRESERVE_AD");
    }

    [Fact]
    public async Task Privileged_Instructions_Are_Emulated_As_Xen_Does_And_The_Rest_Raise_GP()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp));
            K.Hypercall(a, Xen.__HYPERVISOR_fpu_taskswitch, 1);
            a.mov(rax, cr0);
            a.mov(__qword_ptr[Out], rax);
            a.clts();
            a.mov(rax, cr0);
            a.mov(__qword_ptr[Out + 8], rax);
            a.mov(rax, cr3);
            a.mov(__qword_ptr[Out + 16], rax);
            a.mov(ecx, 0xC000_0080); // EFER
            a.rdmsr();
            a.mov(__dword_ptr[Out + 24], eax);
            a.mov(rax, 0x1234_5000);
            a.mov(cr2, rax);
            a.mov(rbx, cr2);
            a.mov(__qword_ptr[Out + 32], rbx);
            a.wbinvd();
            a.mov(__qword_ptr[Out + 40], 0); // #GP count
            a.hlt();
            a.@in(al, dx);
            a.cli();
            a.mov(ecx, 0x1234); // an MSR Xen does not emulate
            a.rdmsr();
            k.Shutdown(a, Scratch);

            a.Label(ref gp);
            a.inc(__qword_ptr[Out + 40]);
            a.mov(rax, __qword_ptr[rsp + 16]); // the error code
            a.@or(__qword_ptr[Out + 48], rax);
            a.mov(rax, __qword_ptr[rsp + 24]); // rip: skip the 1-byte hlt/cli/in, or the 2-byte rdmsr
            a.movzx(ebx, __byte_ptr[rax]);
            a.cmp(ebx, 0x0F);
            a.mov(ebx, 1);
            a.mov(ecx, 2);
            a.cmove(ebx, ecx);
            a.add(__qword_ptr[rsp + 24], rbx);
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        (k.ReadU64(Out) & ControlBits.Cr0TS).Should().NotBe(0, "fpu_taskswitch(1) sets the guest's CR0.TS");
        (k.ReadU64(Out) & ControlBits.Cr0PG).Should().NotBe(0);
        (k.ReadU64(Out + 8) & ControlBits.Cr0TS).Should().Be(0, "clts clears it");
        k.ReadU64(Out + 16).Should().Be(k.KernelL4 << 12, "xen_pfn_to_cr3 of the kernel base (an MFN for classic PV)");
        (k.ReadU64(Out + 24) & (ControlBits.EferLMA | ControlBits.EferSCE | ControlBits.EferNXE)).Should().Be(ControlBits.EferLMA | ControlBits.EferSCE | ControlBits.EferNXE);
        k.ReadU64(Out + 32).Should().Be(0x1234_5000);
        k.ReadU64(Out + 40).Should().Be(4, "hlt, in without I/O privilege, cli with IOPL 0 and rdmsr of an unknown MSR are #GP");
        k.ReadU64(Out + 48).Should().Be(0, "each with error code 0");
    }

    [Fact]
    public async Task Segment_Loads_Take_Null_And_Xens_Flat_Selectors_And_GP_Otherwise()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp));
            a.mov(eax, ArchX86.FLAT_USER_DS32);
            a.mov(ds, ax);
            a.xor(eax, eax);
            a.mov(es, ax);
            a.mov(rax, 0x7000);
            a.mov(rcx, rax);
            K.Hypercall(a, Xen.__HYPERVISOR_set_segment_base, (ulong)ArchX86.SEGBASE_FS, 0x7000);
            a.mov(eax, 0x1233); // RPL 3, but no guest GDT: #GP
            a.mov(fs, ax);
            a.mov(ax, ds);
            a.mov(__qword_ptr[Out], rax);
            k.Shutdown(a, Scratch);

            a.Label(ref gp);
            a.inc(__qword_ptr[Out + 8]);
            a.add(__qword_ptr[rsp + 24], 2); // mov fs, ax is 2 bytes
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be((ulong)ArchX86.FLAT_USER_DS32);
        k.ReadU64(Out + 8).Should().Be(1, "only the selector outside every GDT faults");
    }

    [Fact]
    public async Task Fpu_Taskswitch_Makes_The_Next_Sse_Instruction_Raise_NM_Once()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var nm = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.NM, 0, nm));
            K.Hypercall(a, Xen.__HYPERVISOR_fpu_taskswitch, 1);
            a.pxor(xmm0, xmm0); // #NM, then runs again after the handler
            a.pxor(xmm1, xmm1); // TS is clear now: no second #NM
            k.Shutdown(a, Scratch);

            a.Label(ref nm);
            a.inc(__qword_ptr[Out]);
            K.IretFromBounce(a, errorCode: false);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(1, "Xen clears the guest's TS as it injects #NM");
    }

    [Fact]
    public async Task User_Mode_Syscall_Bounces_To_The_Syscall_Callback_On_The_Kernel_Stack_And_Iret_Returns()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var sys = a.CreateLabel();
            var user = a.CreateLabel();
            var done = a.CreateLabel();
            a.lea(rdx, __[sys]);
            a.xor(edi, edi);
            a.xor(esi, esi);
            a.mov(eax, Xen.__HYPERVISOR_set_callbacks);
            a.syscall();
            K.Hypercall(a, Xen.__HYPERVISOR_stack_switch, (ulong)ArchX86.FLAT_KERNEL_SS, K.StackTop - 0x1000);
            K.Hypercall(a, Xen.__HYPERVISOR_set_segment_base, (ulong)ArchX86.SEGBASE_GS_USER, 0x5000);

            // iret to user mode: { rax, r11, rcx, flags, rip, cs, rflags, rsp, ss }.
            a.push(ArchX86.FLAT_USER_SS);
            a.mov(rax, K.UserStackTop);
            a.push(rax);
            a.push(0x202);
            a.push(ArchX86.FLAT_USER_CS);
            a.lea(rax, __[user]);
            a.push(rax);
            a.push(0);
            a.push(0);
            a.push(0);
            a.push(0);
            a.mov(eax, Xen.__HYPERVISOR_iret);
            a.syscall();
            a.ud2();

            a.Label(ref user);
            a.mov(rax, __qword_ptr.gs[0]); // the user GS base is live in user mode
            a.mov(r12, rax);
            a.mov(eax, 42);
            a.syscall(); // a guest system call: bounces to the kernel
            a.mov(__qword_ptr[Out + 24], rax); // back in user mode with the kernel's answer
            a.mov(eax, 43);
            a.syscall();
            a.ud2();

            a.Label(ref sys);
            a.cmp(eax, 43);
            a.je(done);
            a.mov(__qword_ptr[Out], rsp);
            a.mov(rbx, __qword_ptr[rsp + 24]); // saved CS (user, RPL 3)
            a.mov(__qword_ptr[Out + 8], rbx);
            a.mov(rbx, __qword_ptr[rsp + 40]); // saved rsp: the user stack
            a.mov(__qword_ptr[Out + 16], rbx);
            // Return to user mode with VGCF_in_syscall: drop rcx/r11, push { rax, r11, rcx, flags }.
            a.mov(rcx, __qword_ptr[rsp]);
            a.mov(r11, __qword_ptr[rsp + 8]);
            a.add(rsp, 16);
            a.push(ArchX86.VGCF_in_syscall);
            a.push(rcx);
            a.push(r11);
            a.push(7); // the system call's result in rax
            a.mov(eax, Xen.__HYPERVISOR_iret);
            a.syscall();
            a.ud2();

            a.Label(ref done);
            k.Shutdown(a, Scratch);
        });
        k.Write(0x5000, 0xFEED_F00DUL);

        var exit = await k.RunAsync(withUserTables: true);

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(K.StackTop - 0x1000 - 7 * 8, "the frame (no error code) sits on the stack_switch stack");
        (k.ReadU64(Out + 8) & 0xFFFF).Should().Be(ArchX86.FLAT_USER_CS);
        k.ReadU64(Out + 16).Should().Be(K.UserStackTop);
        k.ReadU64(Out + 24).Should().Be(7, "iret restored rax");
        k.Vcpu.Pv.KernelMode.Should().BeTrue("the second syscall bounced back to kernel mode");
    }

    [Fact]
    public async Task A_Fault_With_No_Handler_Crashes_Only_That_Domain_With_The_Vector_Rip_And_Error_Code()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            a.mov(rax, K.Unmapped);
            a.mov(__qword_ptr[rax], rax); // #PF (write, not present), no trap table
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("#PF").And.Contain("vector 14").And.Contain($"rip 0x{K.CodeVa + 10:x}")
            .And.Contain("error code 0x2").And.Contain($"cr2 0x{K.Unmapped:x}");
        k.Domain.Destroy();

        var after = GuestRunner.Run(_hv, g => g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version).Should().Be((4 << 16) | 17));
        after.State.Should().Be(DomainState.Shutdown, "the host and other domains go on");
    }

    [Fact]
    public async Task The_M2p_Window_Is_Readable_At_Mach2phys_Virt_Start_And_Writes_Page_Fault()
    {
        var k = NewKernel();
        var codeMfn = k.Mfn(K.CodeVa >> 12);
        k.Load(a =>
        {
            var pf = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.PF, 0, pf));
            a.mov(rax, ArchX86.MACH2PHYS_VIRT_START + codeMfn * 8);
            a.mov(rbx, __qword_ptr[rax]);
            a.mov(__qword_ptr[Out], rbx);
            a.mov(__qword_ptr[rax], rbx); // a write: #PF
            k.Shutdown(a, Scratch);

            a.Label(ref pf);
            a.mov(rax, __qword_ptr[rsp + 16]);
            a.mov(__qword_ptr[Out + 8], rax);
            a.mov(rax, __qword_ptr[K.SharedInfoVa + 16]);
            a.mov(__qword_ptr[Out + 16], rax);
            a.add(__qword_ptr[rsp + 24], 3); // mov [rax], rbx is 3 bytes
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(K.CodeVa >> 12, "machine_to_phys_mapping[mfn] is the code page's pfn");
        k.ReadU64(Out + 8).Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Write, "read-only: a protection fault on a write");
        k.ReadU64(Out + 16).Should().Be(ArchX86.MACH2PHYS_VIRT_START + codeMfn * 8);
    }

    [Fact]
    public async Task Int_N_Is_GP_Unless_The_Trap_Table_Entry_Allows_The_Callers_Privilege()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            var soft = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp), (0x20, 0, soft), (0x21, 1, soft));
            a.@int(0x20); // DPL 0: #GP((0x20 << 3) | 2)
            a.@int(0x21); // DPL 1 from kernel mode: delivered
            k.Shutdown(a, Scratch);

            a.Label(ref gp);
            a.mov(rax, __qword_ptr[rsp + 16]);
            a.mov(__qword_ptr[Out], rax);
            a.add(__qword_ptr[rsp + 24], 2);
            K.IretFromBounce(a, errorCode: true);

            a.Label(ref soft);
            a.inc(__qword_ptr[Out + 8]);
            K.IretFromBounce(a, errorCode: false);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be((0x20 << 3) | 2);
        k.ReadU64(Out + 8).Should().Be(1);
    }

    [Fact]
    public async Task Pause_Holds_The_Vcpu_And_Destroy_Stops_A_Spinning_Kernel()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var loop = a.CreateLabel();
            a.Label(ref loop);
            a.inc(__qword_ptr[Out]);
            a.jmp(loop);
        });
        k.Start();
        await WaitUntilAsync(() => k.ReadU64(Out) > 1000, "the kernel spins");
        k.Domain.Pause();
        await WaitUntilAsync(() => k.Vcpu.Runstate().State == 3, "the vCPU parks (RUNSTATE_offline) at its slice boundary");
        var held = k.ReadU64(Out);
        await Task.Delay(100, TestContext.Current.CancellationToken);
        k.ReadU64(Out).Should().Be(held, "a paused vCPU runs no guest instruction");
        k.Domain.Unpause();
        await WaitUntilAsync(() => k.ReadU64(Out) > held, "it runs again after unpause");
        k.Domain.Destroy();
        k.Domain.StuckVcpuThreads.Should().Be(0, "an interpreted vCPU stops at a slice boundary, unlike a managed one");
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + GuestRunner.Timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out waiting until {what}");
            }

            await Task.Delay(5, TestContext.Current.CancellationToken);
        }
    }

    private static ulong FindBytes(K k, byte[] pattern)
    {
        var code = new byte[4096];
        k.Domain.Memory.TryRead(K.CodeVa, code).Should().BeTrue();
        var at = code.AsSpan().IndexOf(pattern);
        at.Should().BeGreaterThan(0);
        return K.CodeVa + (ulong)at;
    }
}
