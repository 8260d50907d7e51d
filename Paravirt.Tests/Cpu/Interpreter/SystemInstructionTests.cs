using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>CPUID, the clock, syscall exits, privileged instructions at CPL 3, POPF's rules, #UD and traps.</summary>
public sealed class SystemInstructionTests
{
    [Fact]
    public void Cpuid_Asks_The_Platform_Policy_And_Rdtsc_The_Clock()
    {
        var m = new InterpreterMachine();
        m.Cpu.TscAux = 3;
        m.Load(a =>
        {
            a.mov(eax, 7);
            a.mov(ecx, 1);
            a.cpuid();
            a.mov(r8, rax);
            a.mov(r9, rbx);
            a.rdtsc();
            a.mov(r10, rax);
            a.mov(r11, rdx);
            a.rdtscp();
        });
        m.RunToHalt();
        (m[Gpr.R8], m[Gpr.R9]).Should().Be((0x107ul, 0x201ul), "the test platform answers leaf + 0x100, subleaf + 0x200");
        (m[Gpr.R10], m[Gpr.R11]).Should().Be((0x5566_7788ul, 0x1122_3344ul));
        m[Gpr.Rcx].Should().Be(3, "rdtscp returns IA32_TSC_AUX in ecx");
    }

    [Fact]
    public void Syscall_Exits_To_The_Machine_With_Rip_Past_It()
    {
        var m = new InterpreterMachine();
        m.Cpu.Cpl = 3;
        var length = m.Load(a =>
        {
            a.mov(eax, 17);
            a.syscall();
            a.mov(ebx, 1);
        });
        m[Gpr.Rcx] = 0xCC;
        m[Gpr.R11] = 0xDD;
        var exit = m.Run();
        exit.Reason.Should().Be(ExitReason.Syscall);
        exit.Instructions.Should().Be(2);
        m[Gpr.Rax].Should().Be(17);
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase + 5 + 2, "mov eax, imm32 is 5 bytes and syscall 2");
        (m[Gpr.Rcx], m[Gpr.R11]).Should().Be((0xCCul, 0xDDul), "the machine, not the interpreter, decides what syscall does to rcx and r11");
        m[Gpr.Rax] = 0; // the machine's answer
        m.Cpu.Cpl = 0;
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(1);

        var noSce = new InterpreterMachine();
        noSce.Cpu.Efer &= ~ControlBits.EferSCE;
        noSce.Load(a => a.syscall());
        noSce.Run().Vector.Should().Be(Vectors.UD, "syscall with EFER.SCE clear is #UD");
    }

    [Theory]
    [InlineData("cli")]
    [InlineData("sti")]
    [InlineData("hlt")]
    [InlineData("mov cr3")]
    [InlineData("wrmsr")]
    [InlineData("out")]
    [InlineData("invlpg")]
    [InlineData("swapgs")]
    [InlineData("lgdt")]
    [InlineData("iretq")]
    public void Privileged_Instructions_At_Cpl3_Raise_GP0_After_Asking_The_Machine(string which)
    {
        var m = new InterpreterMachine();
        m.Cpu.Cpl = 3;
        m.Load(a =>
        {
            a.nop();
            switch (which)
            {
                case "cli": a.cli(); break;
                case "sti": a.sti(); break;
                case "hlt": a.hlt(); break;
                case "mov cr3": a.mov(cr3, rax); break;
                case "wrmsr": a.wrmsr(); break;
                case "out": a.@out(dx, al); break;
                case "invlpg": a.invlpg(__[rax]); break;
                case "swapgs": a.swapgs(); break;
                case "lgdt": a.lgdt(__[rax]); break;
                default: a.iretq(); break;
            }
        }, halt: false);
        var exit = m.Run();
        (exit.Reason, exit.Vector, exit.ErrorCode).Should().Be((ExitReason.Exception, Vectors.GP, 0u));
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase + 1);
        m.Platform.PrivilegedSeen.Should().ContainSingle("the machine had its chance to emulate it first");
    }

    [Fact]
    public void A_Privileged_Instruction_The_Machine_Emulates_Continues_After_It()
    {
        var m = new InterpreterMachine();
        m.Cpu.Cpl = 3;
        var ports = new List<(ulong Port, ulong Value)>();
        m.Platform.Privileged = (cpu, ins) =>
        {
            if (ins.Mnemonic != Mnemonic.Out)
            {
                return false;
            }

            ports.Add((cpu.Gpr[Gpr.Rdx] & 0xFFFF, cpu.Gpr[Gpr.Rax] & 0xFF));
            return true;
        };
        m.Load(a =>
        {
            a.mov(edx, 0x3F8);
            a.mov(al, (byte)'x');
            a.@out(dx, al);
            a.mov(ebx, 1);
            a.syscall();
        }, halt: false);
        m.Run().Reason.Should().Be(ExitReason.Syscall);
        ports.Should().Equal((0x3F8ul, (ulong)'x'));
        m[Gpr.Rbx].Should().Be(1);
    }

    [Fact]
    public void Popf_At_Cpl3_Cannot_Change_IF_Or_IOPL_And_Cli_Needs_IOPL3()
    {
        var m = new InterpreterMachine();
        m.Cpu.Cpl = 3;
        m.Load(a =>
        {
            a.mov(rax, (long)(CF | ZF | DF | IOPL));  // IF clear, IOPL 3 requested
            a.push(rax);
            a.popfq();
            a.pushfq();
            a.pop(rbx);
            a.syscall();
        }, halt: false);
        m.Restart(IF);
        m.Run().Reason.Should().Be(ExitReason.Syscall);
        m[Gpr.Rbx].Should().Be(CF | ZF | DF | IF | Reserved1, "IF stays set (CPL 3 > IOPL 0) and IOPL stays 0");

        var iopl3 = new InterpreterMachine();
        iopl3.Cpu.Cpl = 3;
        iopl3.Load(a =>
        {
            a.cli();
            a.syscall();
        }, halt: false);
        iopl3.Restart(IF | IOPL);
        iopl3.Run().Reason.Should().Be(ExitReason.Syscall, "with IOPL 3 a CPL 3 cli is allowed");
        (iopl3.Cpu.Rflags & IF).Should().Be(0);
    }

    [Fact]
    public void Cpl0_System_State_Instructions_Work_On_The_State()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(ecx, 0xC000_0100);       // FS_BASE
            a.mov(eax, 0x1000);
            a.xor(edx, edx);
            a.wrmsr();
            a.mov(ecx, 0xC000_0102);       // KERNEL_GS_BASE
            a.mov(eax, 0x2000);
            a.wrmsr();
            a.swapgs();
            a.mov(ecx, 0xC000_0080);       // EFER
            a.rdmsr();
            a.mov(r8, rax);
            a.cli();
            a.mov(rax, cr4);
            a.mov(r9, rax);
        });
        m.Restart(IF);
        m.RunToHalt();
        m.Cpu.FsBase.Should().Be(0x1000);
        (m.Cpu.GsBase, m.Cpu.KernelGsBase).Should().Be((0x2000ul, 0ul));
        m[Gpr.R8].Should().Be(m.Cpu.Efer & 0xFFFF_FFFF);
        (m.Cpu.Rflags & IF).Should().Be(0);
        m[Gpr.R9].Should().Be(m.Cpu.Cr4);
    }

    [Fact]
    public void An_Unimplemented_Instruction_Raises_UD_And_Logs_Its_Mnemonic_Once()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.fld1(), halt: false);
        for (var i = 0; i < 3; i++)
        {
            m.Cpu.Rip = InterpreterMachine.CodeBase;
            var exit = m.Run();
            (exit.Reason, exit.Vector, exit.ErrorCode).Should().Be((ExitReason.Exception, Vectors.UD, (uint?)null));
            m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase);
        }

        m.Platform.Unimplemented.Should().Equal("fld1");
    }

    [Fact]
    public void Ud2_And_Invalid_Encodings_Raise_UD_Without_A_Log()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.ud2(), halt: false);
        m.Run().Vector.Should().Be(Vectors.UD);

        m.Memory.Bytes[(int)InterpreterMachine.CodeBase] = 0x06; // push es: invalid in 64-bit mode
        m.Interpreter.InvalidateCode(InterpreterMachine.CodeBase, 1);
        m.Cpu.Rip = InterpreterMachine.CodeBase;
        m.Run().Vector.Should().Be(Vectors.UD);
        m.Platform.Unimplemented.Should().BeEmpty();
    }

    [Fact]
    public void Int3_And_Int_N_Are_Traps_With_Rip_Past_Them()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.int3();
            a.@int(0x80);
        }, halt: false);
        var exit = m.Run();
        (exit.Vector, exit.Instructions).Should().Be((Vectors.BP, 1L));
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase + 1);
        exit = m.Run();
        (exit.Vector, exit.Instructions).Should().Be((0x80, 1L));
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase + 3);
    }

    [Fact]
    public void Run_Stops_After_The_Budget_And_Resumes_Exactly()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var loop = a.CreateLabel();
            a.mov(ecx, 1000);
            a.Label(ref loop);
            a.inc(rax);
            a.dec(ecx);
            a.jnz(loop);
        });
        long total = 0;
        CpuExit exit;
        do
        {
            exit = m.Run(7);
            total += exit.Instructions;
            exit.Instructions.Should().BeLessThanOrEqualTo(7);
        }
        while (exit.Reason == ExitReason.SliceDone);

        exit.Reason.Should().Be(ExitReason.Halt);
        total.Should().Be(1 + (3 * 1000) + 1);
        m[Gpr.Rax].Should().Be(1000);
    }

    [Fact]
    public void A_Bus_Error_Reports_The_Physical_Address()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.mov(rax, __qword_ptr[0x20_0000]));
        var exit = m.Run();
        (exit.Reason, exit.Address).Should().Be((ExitReason.BusError, 0x20_0000ul));
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase);
    }
}
