using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;
using static Iced.Intel.AssemblerRegisters;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>
/// What Debian's Linux kernel meets first as a PV guest and Xen does at that instruction or
/// hypercall: a same-privilege <c>iretq</c> (sync_core's iret_to_self), the MSRs Linux reads at
/// boot (guest_rdmsr / the PV read_msr), PHYSDEVOP_set_iopl before its early port I/O.
/// </summary>
public sealed class PvLinuxSemanticsTests : IDisposable
{
    private const ulong Out = K.DataVa;
    private const ulong Scratch = K.DataVa + 0x800;
    private const ulong Traps = K.DataVa + 0x2000;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => _hv.Dispose();

    private K NewKernel() => new(_hv, $"pv-{Guid.NewGuid():N}");

    [Fact]
    public async Task A_Same_Privilege_Iretq_Returns_As_The_Cpu_Does_And_Keeps_The_Guests_Interrupt_Flag()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            var after = a.CreateLabel();
            var bad = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp));

            // iret_to_self: ss, rsp, rflags (CF set, IF clear, IOPL 3), cs, rip.
            a.mov(rbx, rsp);
            a.mov(eax, ArchX86.FLAT_KERNEL_SS);
            a.push(rax);
            a.push(rbx);
            a.push(0x3001); // CF and IOPL 3, IF clear
            a.mov(eax, ArchX86.FLAT_KERNEL_CS);
            a.push(rax);
            a.lea(rax, __[after]);
            a.push(rax);
            a.iretq();
            a.ud2();
            a.Label(ref after);
            a.pushfq();
            a.pop(__qword_ptr[Out]);
            a.mov(__qword_ptr[Out + 8], rsp);
            a.mov(__qword_ptr[Out + 16], rbx);

            // A return to ring 0 is #GP(selector), at the iretq.
            a.mov(eax, ArchX86.FLAT_KERNEL_SS);
            a.push(rax);
            a.push(rbx);
            a.push(0x202);
            a.push(0x10); // __KERNEL_CS of a native kernel: RPL 0
            a.lea(rax, __[bad]);
            a.push(rax);
            a.iretq();
            a.Label(ref bad);
            k.Shutdown(a, Scratch);

            a.Label(ref gp);
            a.mov(rax, __qword_ptr[rsp + 16]);
            a.mov(__qword_ptr[Out + 24], rax);
            a.mov(rax, __qword_ptr[rsp + 24]);
            a.mov(__qword_ptr[Out + 32], rax);
            k.Shutdown(a, Scratch + 0x100);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        var flags = k.ReadU64(Out);
        (flags & FlagBits.CF).Should().NotBe(0, "the popped status flags are taken");
        (flags & FlagBits.IF).Should().NotBe(0, "at CPL 3 with IOPL 0 the CPU ignores the popped IF: the guest's interrupt flag is its upcall mask");
        (flags & FlagBits.IOPL).Should().Be(0, "only CPL 0 may change IOPL");
        k.ReadU64(Out + 8).Should().Be(k.ReadU64(Out + 16), "rsp is popped too");
        k.ReadU64(Out + 24).Should().Be(0x10, "#GP with the selector of a ring-0 code segment");
        k.ReadU64(Out + 32).Should().BeGreaterThan(K.CodeVa, "at the second iretq");
    }

    [Fact]
    public async Task The_Msrs_Linux_Reads_At_Boot_Answer_As_Xens_Pv_Policy_And_Others_Raise_GP()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp));
            a.mov(__qword_ptr[Out + 0x100], 0); // #GP count
            var slot = 0;
            foreach (var msr in new uint[] { 0x8B, 0xCE, 0x3A, 0x140, 0x1A0, 0xC1, 0x345, 0x4000_0000, 0x48 /* SPEC_CTRL: not offered */ })
            {
                a.mov(ecx, msr);
                a.mov(eax, 0xDEAD);
                a.xor(edx, edx);
                a.rdmsr();
                a.shl(rdx, 32);
                a.@or(rax, rdx);
                a.mov(__qword_ptr[Out + (ulong)(8 * slot++)], rax);
            }

            a.mov(ecx, 0x8B); // Intel's "write 0" before reading the microcode revision
            a.xor(eax, eax);
            a.xor(edx, edx);
            a.wrmsr();
            a.mov(ecx, 0x140); // CPUID faulting on
            a.mov(eax, 1);
            a.wrmsr();
            a.mov(ecx, 0x140);
            a.rdmsr();
            a.mov(__qword_ptr[Out + 0x80], rax);
            a.mov(ecx, 0x140); // a reserved bit: #GP
            a.mov(eax, 2);
            a.wrmsr();
            a.mov(ecx, 0x8B); // a non-zero microcode write: #GP
            a.mov(eax, 1);
            a.wrmsr();
            a.cpuid(); // faulting applies to user mode only
            k.Shutdown(a, Scratch);

            a.Label(ref gp);
            a.inc(__qword_ptr[Out + 0x100]);
            a.add(__qword_ptr[rsp + 24], 2); // rdmsr/wrmsr are 2 bytes
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(0, "UCODE_REV: no microcode loaded, and no #GP (Linux reads it unguarded)");
        k.ReadU64(Out + 8).Should().Be(1UL << 31, "PLATFORM_INFO: CPUID faulting is offered to every PV guest");
        k.ReadU64(Out + 16).Should().Be(1, "FEATURE_CONTROL: locked, no VMX");
        k.ReadU64(Out + 24).Should().Be(0, "MISC_FEATURES_ENABLES starts clear");
        k.ReadU64(Out + 32).Should().Be(1UL | (1UL << 11) | (1UL << 12) | (1UL << 23), "guest_misc_enable: BTS/PEBS unavailable, xTPR disabled");
        k.ReadU64(Out + 40).Should().Be(0, "a perf counter reads as zero with the vPMU off");
        k.ReadU64(Out + 48).Should().Be(0, "PERF_CAPABILITIES: none");
        k.ReadU64(Out + 56).Should().Be(0, "the hypercall-page MSR reads as zero");
        k.ReadU64(Out + 64).Should().Be(0xDEAD, "SPEC_CTRL is #GP: rdmsr left rax alone");
        k.ReadU64(Out + 0x80).Should().Be(1, "CPUID faulting was switched on");
        k.ReadU64(Out + 0x100).Should().Be(3, "SPEC_CTRL, a reserved MISC_FEATURES bit and a non-zero UCODE_REV write");
    }

    [Fact]
    public async Task Set_Iopl_Gives_The_Guest_Kernel_Cli_And_Port_Io()
    {
        var k = NewKernel();
        k.Load(a =>
        {
            var gp = a.CreateLabel();
            k.SetTrapTable(a, Traps, (Vectors.GP, 0, gp));
            a.mov(__qword_ptr[Out + 8], 0);
            a.cli(); // IOPL 0: #GP
            k.Write(Scratch, new physdev_set_iopl { iopl = 1 });
            K.Hypercall(a, Xen.__HYPERVISOR_physdev_op, (ulong)Physdev.PHYSDEVOP_set_iopl, Scratch);
            a.mov(__qword_ptr[Out], rax);
            a.cli(); // the guest kernel is ring 1 to Xen: IOPL 1 lets it through
            a.mov(edx, 0xCF8);
            a.@in(eax, dx); // no port is the domain's: all ones
            a.mov(__qword_ptr[Out + 16], rax);
            k.Shutdown(a, Scratch + 0x100);

            a.Label(ref gp);
            a.inc(__qword_ptr[Out + 8]);
            a.add(__qword_ptr[rsp + 24], 1);
            K.IretFromBounce(a, errorCode: true);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        k.ReadU64(Out).Should().Be(0);
        k.ReadU64(Out + 8).Should().Be(1, "only the cli before set_iopl faults");
        k.ReadU64(Out + 16).Should().Be(0xFFFF_FFFF);
    }
}
