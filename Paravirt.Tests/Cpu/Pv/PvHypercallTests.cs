using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>The CPU-side PV hypercalls' rules, called on an engine vCPU directly or from machine code.</summary>
public sealed class PvHypercallTests : IDisposable
{
    private const ulong Out = K.DataVa;
    private const ulong Scratch = K.DataVa + 0x800;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => _hv.Dispose();

    private (K Kernel, PvCpu Cpu) NewCpu(PvEngineOptions? options = null)
    {
        var k = new K(_hv, $"pv-{Guid.NewGuid():N}");
        return (k, new PvCpu(k.Domain, k.Vcpu, new PvEntry(K.CodeVa, K.StackTop, 0), options ?? new PvEngineOptions()));
    }

    [Fact]
    public void Managed_Vcpus_Get_ENOSYS_For_The_Pv_Cpu_Hypercalls()
    {
        var results = new Dictionary<int, long>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            foreach (var nr in new[]
            {
                Xen.__HYPERVISOR_set_trap_table, Xen.__HYPERVISOR_set_gdt, Xen.__HYPERVISOR_stack_switch, Xen.__HYPERVISOR_fpu_taskswitch,
                Xen.__HYPERVISOR_set_debugreg, Xen.__HYPERVISOR_get_debugreg, Xen.__HYPERVISOR_update_descriptor, Xen.__HYPERVISOR_iret,
                Xen.__HYPERVISOR_set_segment_base,
            })
            {
                results[nr] = g.Hypercall(nr);
            }
        });

        exit.State.Should().Be(DomainState.Shutdown);
        results.Values.Should().AllBeEquivalentTo(-(long)Errno.ENOSYS, "a managed vCPU has no PV CPU state");
        _hv.Hypercalls.IsImplemented(Xen.__HYPERVISOR_iret).Should().BeTrue();
    }

    [Fact]
    public void Debug_Registers_Follow_Xens_Set_Debugreg_Rules()
    {
        var (_, cpu) = NewCpu();
        cpu.GetDebugreg(7).Should().Be(0x400, "DR7 bit 10 reads as 1");
        cpu.GetDebugreg(6).Should().Be(0xFFFF_0FF0, "DR6's reserved-one bits");
        cpu.SetDebugreg(0, 0x7FFF_FFFF_F000).Should().Be(0);
        cpu.GetDebugreg(0).Should().Be(0x7FFF_FFFF_F000);
        cpu.SetDebugreg(1, ArchX86.HYPERVISOR_VIRT_START).Should().Be(-(long)Errno.EPERM, "a breakpoint in Xen's range");
        cpu.SetDebugreg(2, ArchX86.HYPERVISOR_VIRT_END).Should().Be(0, "above Xen's range is the guest's");
        cpu.SetDebugreg(6, 1UL << 32).Should().Be(-(long)Errno.EINVAL, "the upper half is reserved");
        cpu.SetDebugreg(7, 1UL << 13).Should().Be(-(long)Errno.EPERM, "general detect is privileged");
        cpu.SetDebugreg(7, 1 | (2UL << 16)).Should().Be(-(long)Errno.EPERM, "an I/O breakpoint needs CR4.DE");
        cpu.SetDebugreg(7, 1 | (1UL << 16)).Should().Be(0);
        cpu.GetDebugreg(7).Should().Be(0x401 | (1L << 16));
        cpu.GetDebugreg(5).Should().Be(cpu.GetDebugreg(7), "DR5 aliases DR7 without CR4.DE");
        cpu.SetDebugreg(8, 0).Should().Be(-(long)Errno.ENODEV);
        cpu.GetDebugreg(8).Should().Be(-(long)Errno.ENODEV);
    }

    [Theory]
    [InlineData(0x00AF_9A00_0000_FFFFUL, true, 0x00AF_FA00_0000_FFFFUL)] // flat 64-bit code, DPL 0 → 3
    [InlineData(0x00CF_F200_0000_FFFFUL, true, 0x00CF_F200_0000_FFFFUL)] // flat data, DPL 3
    [InlineData(0x0000_0000_0000_0000UL, true, 0x0000_0000_0000_0000UL)] // not present
    [InlineData(0x0000_8900_0000_0067UL, false, 0x0000_8900_0000_0067UL)] // a present TSS: refused
    [InlineData(0x0000_EC00_E033_1000UL, true, 0x0000_8C00_E033_1000UL)] // call gate to FLAT_KERNEL_CS: DPL 0, RPL keeps 3
    [InlineData(0x0000_EC00_F003_1000UL, false, 0x0000_EC00_F003_1000UL)] // call gate to a Xen-reserved selector
    public void Check_Descriptor_Accepts_What_Xen_Accepts_And_Fixes_The_Dpl(ulong raw, bool ok, ulong expected)
    {
        PvCpu.CheckDescriptor(raw, out var fixedUp).Should().Be(ok);
        if (ok)
        {
            fixedUp.Should().Be(expected);
        }
    }

    [Fact]
    public void Update_Descriptor_Needs_Alignment_An_Own_Frame_And_The_Memory_Models_Consent()
    {
        var (k, refusing) = NewCpu();
        var mfn = k.Mfn(K.DataVa >> 12);
        const ulong code = 0x00AF_9A00_0000_FFFFUL;
        refusing.UpdateDescriptor((mfn << 12) + 8, code).Should().Be(-(long)Errno.EINVAL, "no page-type check is wired");

        var allowed = new List<ulong>();
        var released = new List<ulong>();
        var cpu = new PvCpu(k.Domain, k.Vcpu, new PvEntry(K.CodeVa, K.StackTop, 0), new PvEngineOptions
        {
            HoldDescriptorFrame = (d, f) =>
            {
                allowed.Add(f);
                return true;
            },
            ReleaseDescriptorFrame = (d, f) => released.Add(f),
        });
        cpu.UpdateDescriptor((mfn << 12) + 4, code).Should().Be(-(long)Errno.EINVAL, "not 8-byte aligned");
        cpu.UpdateDescriptor((mfn << 12) + 8, 0x0000_8900_0000_0067UL).Should().Be(-(long)Errno.EINVAL, "a TSS descriptor");
        var other = _hv.CreateDomain(new DomainConfig { Name = "other", MemoryMiB = 4, AutoTranslated = false });
        other.PhysMap.TryLookup(8, out var foreign, out _).Should().BeTrue();
        cpu.UpdateDescriptor(foreign << 12, code).Should().Be(-(long)Errno.EINVAL, "another domain's frame");
        cpu.UpdateDescriptor((mfn << 12) + 8, code).Should().Be(0);
        k.ReadU64(K.DataVa + 8).Should().Be(0x00AF_FA00_0000_FFFFUL, "stored with its DPL fixed up");
        allowed.Should().Equal(mfn);
        released.Should().Equal([mfn], "the frame's type is held for the write only");
    }

    [Fact]
    public void Set_Gdt_Checks_The_Count_The_Frames_And_Every_Descriptor()
    {
        var (k, cpu) = NewCpu();
        var gdtPfn = K.DataVa >> 12;
        var gdt = k.Mfn(gdtPfn);
        k.Write(Scratch, gdt);
        cpu.SetGdt(Scratch, (ulong)PvCpu.FirstReservedGdtEntry + 1).Should().Be(-(long)Errno.EINVAL);
        k.Write(K.DataVa + 16, 0x0000_8900_0000_0067UL);
        cpu.SetGdt(Scratch, 16).Should().Be(-(long)Errno.EINVAL, "a frame holding a TSS descriptor");
        k.Write(K.DataVa + 16, 0x00AF_9A00_0000_FFFFUL);
        cpu.SetGdt(Scratch, 16).Should().Be(0);
        cpu.GdtEntries.Should().Be(16);
        cpu.GdtFrames.ToArray().Should().Equal(gdt);
        var other = _hv.CreateDomain(new DomainConfig { Name = "other-gdt", MemoryMiB = 4, AutoTranslated = false });
        other.PhysMap.TryLookup(8, out var foreign, out _).Should().BeTrue();
        k.Write(Scratch, foreign);
        cpu.SetGdt(Scratch, 16).Should().Be(-(long)Errno.EINVAL, "another domain's frame");
        cpu.GdtFrames.ToArray().Should().Equal(new[] { gdt }, "a refused set_gdt leaves the old GDT");
    }

    [Fact]
    public void Stack_Switch_And_Set_Segment_Base_Record_What_Xen_Records()
    {
        var (_, cpu) = NewCpu();
        cpu.StackSwitch(ArchX86.FLAT_KERNEL_SS & ~3, 0x1234_5000).Should().Be(0);
        cpu.KernelSs.Should().Be((ulong)ArchX86.FLAT_KERNEL_SS, "the RPL is raised to the guest kernel's 3");
        cpu.KernelSp.Should().Be(0x1234_5000);
        cpu.SetSegmentBase(ArchX86.SEGBASE_FS, 0x7000).Should().Be(0);
        cpu.SetSegmentBase(ArchX86.SEGBASE_GS_KERNEL, 0x8000).Should().Be(0);
        cpu.SetSegmentBase(ArchX86.SEGBASE_GS_USER, 0x9000).Should().Be(0);
        cpu.SetSegmentBase(ArchX86.SEGBASE_FS, 0x8000_0000_0000_0000).Should().Be(-(long)Errno.EINVAL, "not canonical");
        cpu.SetSegmentBase(9, 0).Should().Be(-(long)Errno.EINVAL);
        cpu.State.FsBase.Should().Be(0x7000);
        cpu.State.GsBase.Should().Be(0x8000, "kernel mode: the kernel GS base is live");
        cpu.State.KernelGsBase.Should().Be(0x9000, "and the user one waits in the shadow");
        cpu.SetSegmentBase(ArchX86.SEGBASE_GS_USER_SEL, 0xE028).Should().Be(0);
        cpu.State.Gs.Should().Be(0xE02B, "a non-null selector gets RPL 3");
    }

    [Fact]
    public async Task Iret_To_User_Mode_Without_User_Page_Tables_Crashes_The_Domain()
    {
        var k = new K(_hv, "no-user-tables");
        k.Load(a =>
        {
            a.push(ArchX86.FLAT_USER_SS);
            a.push(0x1000);
            a.push(0x202);
            a.push(ArchX86.FLAT_USER_CS);
            a.push(0x1000);
            a.push(0);
            a.push(0);
            a.push(0);
            a.push(0);
            a.mov(eax, Xen.__HYPERVISOR_iret);
            a.syscall();
        });

        var exit = await k.RunAsync(withUserTables: false);

        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("no user page tables");
    }

    [Fact]
    public async Task An_Event_In_User_Mode_Bounces_To_The_Event_Callback_In_Kernel_Mode_On_The_Kernel_Stack()
    {
        var k = new K(_hv, "user-event");
        var port = k.Domain.Events.AllocUnbound(0);
        k.Load(a =>
        {
            var callback = a.CreateLabel();
            var user = a.CreateLabel();
            a.lea(rdi, __[callback]);
            a.xor(esi, esi);
            a.xor(edx, edx);
            a.mov(eax, Xen.__HYPERVISOR_set_callbacks);
            a.syscall();
            K.Hypercall(a, Xen.__HYPERVISOR_stack_switch, (ulong)ArchX86.FLAT_KERNEL_SS, K.StackTop - 0x2000);
            a.push(ArchX86.FLAT_USER_SS);
            a.mov(rax, K.UserStackTop);
            a.push(rax);
            a.push(0x202); // IF: the iret unmasks events
            a.push(ArchX86.FLAT_USER_CS);
            a.lea(rax, __[user]);
            a.push(rax);
            a.push(0);
            a.push(0);
            a.push(0);
            a.push(0);
            a.mov(eax, Xen.__HYPERVISOR_iret);
            a.syscall();

            a.Label(ref user);
            a.inc(__qword_ptr[Out + 24]);
            a.jmp(user);

            a.Label(ref callback);
            a.mov(__qword_ptr[Out], rsp);
            a.mov(rax, __qword_ptr[rsp + 24]); // saved CS
            a.mov(__qword_ptr[Out + 8], rax);
            a.mov(rax, __qword_ptr[rsp + 32]); // saved RFLAGS: IF from the saved mask (clear)
            a.mov(__qword_ptr[Out + 16], rax);
            k.Shutdown(a, Scratch);
        });

        k.Start(withUserTables: true);
        using var channel = _hv.Host.BindInterdomain(k.Domain, (uint)port);
        channel.Notify();
        var exit = await k.Domain.ExitWithinAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(K.StackTop - 0x2000 - 7 * 8);
        (k.ReadU64(Out + 8) & 0xFFFF).Should().Be(ArchX86.FLAT_USER_CS, "it interrupted user mode");
        (k.ReadU64(Out + 8) >> 32).Should().Be(0, "events were unmasked in user mode");
        (k.ReadU64(Out + 16) & (1UL << 9)).Should().NotBe(0, "RFLAGS.IF in the frame = !saved mask");
    }

    [Fact]
    public async Task Vcpuop_Initialise_Online_Starts_A_Secondary_Vcpu_On_The_Engine_With_Its_Context()
    {
        var k = new K(_hv, "smp", vcpus: 2);
        const ulong secondaryVa = K.CodeVa + 0x8000;
        const ulong contextVa = K.DataVa + 0x4000;
        var bases = new List<(int Vcpu, ulong Mfn)>();
        var context = new vcpu_guest_context
        {
            flags = ArchX86.VGCF_in_kernel | ArchX86.VGCF_online,
            kernel_ss = ArchX86.FLAT_KERNEL_SS,
            kernel_sp = K.StackTop - 0x4000,
            fs_base = 0x6000,
        };
        context.user_regs.rip = secondaryVa;
        context.user_regs.rsp = K.StackTop - 0x4000;
        context.user_regs.rsi = 0x77;
        context.user_regs.cs = ArchX86.FLAT_KERNEL_CS;
        context.user_regs.ss = ArchX86.FLAT_KERNEL_SS;
        context.user_regs.rflags = 0x202;
        unsafe
        {
            context.ctrlreg[3] = k.KernelL4 << 12;
        }

        k.Write(contextVa, context);
        k.Write(0x6000, 0xABCDUL);
        k.LoadAt(secondaryVa, a =>
        {
            var spin = a.CreateLabel();
            a.mov(__qword_ptr[Out + 8], rsi);
            a.mov(rax, __qword_ptr.fs[0]);
            a.mov(__qword_ptr[Out + 24], rax);
            k.Print(a, K.DataVa + 0x3000, "secondary\n");
            a.mov(__qword_ptr[Out], 1);
            a.Label(ref spin);
            a.pause();
            a.jmp(spin);
        });
        k.Load(a =>
        {
            var wait = a.CreateLabel();
            K.Hypercall(a, Xen.__HYPERVISOR_vcpu_op, (ulong)Paravirt.Core.Abi.VcpuOp.VCPUOP_initialise, 1, contextVa);
            a.mov(__qword_ptr[Out + 16], rax);
            a.Label(ref wait);
            a.cmp(__qword_ptr[Out], 1);
            a.jne(wait);
            k.Shutdown(a, Scratch);
        });

        var exit = await k.RunAsync(new PvEngineOptions
        {
            NewGuestCr3 = (v, mfn) =>
            {
                lock (bases)
                {
                    bases.Add((v.Id, mfn));
                }

                v.Pv.KernelBaseMfn = mfn;
                return 0;
            },
        });

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out + 16).Should().Be(0, "VCPUOP_initialise with VGCF_online brings vCPU 1 up");
        k.ReadU64(Out + 8).Should().Be(0x77, "its registers come from the context");
        k.ReadU64(Out + 24).Should().Be(0xABCD, "and its FS base");
        bases.Should().Equal((1, k.KernelL4));
        k.Domain.Meter.Hypercalls(Xen.__HYPERVISOR_console_io).Should().Be(1);
        k.Domain.Destroy();
        k.ConsoleLines().Should().Contain("secondary");
    }

    [Fact]
    public async Task A_Kernel_Stack_That_Cannot_Take_The_Bounce_Frame_Crashes_The_Domain()
    {
        var k = new K(_hv, "bad-stack");
        k.Load(a =>
        {
            var handler = a.CreateLabel();
            k.SetTrapTable(a, K.DataVa + 0x2000, (3, 0, handler));
            a.mov(rsp, K.Unmapped + 0x100);
            a.int3();
            a.Label(ref handler);
            a.ud2();
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("bounce frame").And.Contain("#BP");
    }
}
