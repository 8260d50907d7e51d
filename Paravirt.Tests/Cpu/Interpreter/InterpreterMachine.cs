using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>A platform for tests: fixed CPUID answers, a settable TSC, a log, and an optional privileged-instruction hook.</summary>
internal sealed class TestPlatform : IInterpreterPlatform
{
    public List<string> Unimplemented { get; } = [];

    public List<Mnemonic> PrivilegedSeen { get; } = [];

    public Func<CpuState, Instruction, bool>? Privileged { get; set; }

    public ulong Tsc { get; set; } = 0x1122_3344_5566_7788;

    public CpuidResult Cpuid(uint leaf, uint subleaf) => new(leaf + 0x100, subleaf + 0x200, 0x6c65746e, 0x49656e69);

    public ulong ReadTsc() => Tsc;

    public bool TryEmulatePrivileged(CpuState cpu, in Instruction instruction)
    {
        PrivilegedSeen.Add(instruction.Mnemonic);
        return Privileged?.Invoke(cpu, instruction) ?? false;
    }

    public void LogUnimplemented(string mnemonic)
    {
        lock (Unimplemented)
        {
            Unimplemented.Add(mnemonic);
        }
    }
}

/// <summary>
/// One vCPU on a flat 1 MiB memory (no paging): code assembled by Iced's <see cref="Assembler"/> at
/// <see cref="CodeBase"/>, the stack just below <see cref="StackTop"/>, CPL 0, so <c>hlt</c> ends a program.
/// </summary>
internal sealed class InterpreterMachine
{
    public const ulong CodeBase = 0x1000;
    public const ulong DataBase = 0x4_0000;
    public const ulong StackTop = 0x8_0000;

    public InterpreterMachine(FlatMemory? memory = null)
    {
        Memory = memory ?? new FlatMemory(1 << 20);
        Cpu = new CpuState { Rip = CodeBase };
        Cpu.Gpr[Gpr.Rsp] = StackTop;
        Interpreter = new X86Interpreter(Cpu, Memory, Platform);
    }

    public FlatMemory Memory { get; }

    public CpuState Cpu { get; }

    public TestPlatform Platform { get; } = new();

    public X86Interpreter Interpreter { get; }

    /// <summary>Assembles <paramref name="build"/> followed by <c>hlt</c> at <paramref name="at"/> and returns the bytes' length.</summary>
    public int Load(Action<Assembler> build, ulong at = CodeBase, bool halt = true)
    {
        var bytes = Assemble(build, at, halt);
        bytes.CopyTo(Memory.Bytes[(int)at..]);
        Interpreter.InvalidateCode(at, (ulong)bytes.Length);
        return bytes.Length;
    }

    public static byte[] Assemble(Action<Assembler> build, ulong at, bool halt = true)
    {
        var a = new Assembler(64);
        build(a);
        if (halt)
        {
            a.hlt();
        }

        using var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), at);
        return stream.ToArray();
    }

    /// <summary>Runs from <see cref="CodeBase"/> until <c>hlt</c>; fails on any other exit.</summary>
    public void RunToHalt(long max = 1_000_000)
    {
        var exit = Interpreter.Run(max);
        exit.Reason.Should().Be(ExitReason.Halt, $"the program should reach hlt, but got {exit} at rip 0x{Cpu.Rip:x}");
    }

    public CpuExit Run(long max = 1_000_000) => Interpreter.Run(max);

    public ulong this[int gpr]
    {
        get => Cpu.Gpr[gpr];
        set => Cpu.Gpr[gpr] = value;
    }

    public ulong ReadU64(ulong pa) => BitConverter.ToUInt64(Memory.Bytes.Slice((int)pa, 8));

    public void WriteU64(ulong pa, ulong value) => BitConverter.TryWriteBytes(Memory.Bytes.Slice((int)pa, 8), value);

    /// <summary>Restarts at <see cref="CodeBase"/> with the given flags (bit 1 always set).</summary>
    public void Restart(ulong flags = 0)
    {
        Cpu.Rip = CodeBase;
        Cpu.Rflags = flags | FlagBits.Reserved1;
        Cpu.Gpr[Gpr.Rsp] = StackTop;
    }
}
