using BenchmarkDotNet.Attributes;
using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Benchmarks.Interpreter;

/// <summary>
/// Guest instructions per second of the x86-64 interpreter on flat memory, beside the same loop
/// written in C#. Each benchmark reports the time per guest instruction (OperationsPerInvoke), so
/// 10 ns is 100 million instructions a second. Target: ≥ 100 M guest instructions/s, 0 bytes.
/// </summary>
[MemoryDiagnoser]
public class InterpreterBenchmarks
{
    private const ulong Code = 0x1000;
    private const ulong Source = 0x10_0000;
    private const ulong Destination = 0x20_0000;

    // Integer loop: add, xor, dec, jnz — 4 instructions an iteration.
    private const int IntegerIterations = 250_000;
    private const int IntegerInstructions = 4 * IntegerIterations;

    // Copy loop: load, store, add, add, dec, jnz — 6 instructions per 8 bytes, 64 KiB a pass.
    private const int CopyQwords = 8192;
    private const int CopyPasses = 20;
    private const int CopyInstructions = CopyPasses * (3 + (6 * CopyQwords) + 2);

    private FlatMemory _memory = null!;
    private CpuState _cpu = null!;
    private X86Interpreter _interpreter = null!;
    private ulong _integerEntry;
    private ulong _copyEntry;
    private readonly ulong[] _nativeSource = new ulong[CopyQwords];
    private readonly ulong[] _nativeDestination = new ulong[CopyQwords];

    [GlobalSetup]
    public void Setup()
    {
        _memory = new FlatMemory(4 << 20);
        _cpu = new CpuState();
        _interpreter = new X86Interpreter(_cpu, _memory, new NullPlatform());
        var a = new Assembler(64);
        var integer = a.CreateLabel();
        var loop = a.CreateLabel();
        a.Label(ref integer);
        a.mov(ecx, IntegerIterations);
        a.Label(ref loop);
        a.add(rax, rcx);
        a.xor(rdx, rax);
        a.dec(ecx);
        a.jnz(loop);
        a.hlt();

        var copy = a.CreateLabel();
        var pass = a.CreateLabel();
        var qword = a.CreateLabel();
        a.Label(ref copy);
        a.mov(r8d, CopyPasses);
        a.Label(ref pass);
        a.mov(esi, (uint)Source);
        a.mov(edi, (uint)Destination);
        a.mov(ecx, CopyQwords);
        a.Label(ref qword);
        a.mov(rax, __qword_ptr[rsi]);
        a.mov(__qword_ptr[rdi], rax);
        a.add(rsi, 8);
        a.add(rdi, 8);
        a.dec(ecx);
        a.jnz(qword);
        a.dec(r8d);
        a.jnz(pass);
        a.hlt();

        using var stream = new MemoryStream();
        var result = a.Assemble(new StreamCodeWriter(stream), Code, BlockEncoderOptions.ReturnNewInstructionOffsets);
        stream.ToArray().CopyTo(_memory.Bytes[(int)Code..]);
        _integerEntry = result.GetLabelRIP(integer);
        _copyEntry = result.GetLabelRIP(copy);
        for (var i = 0; i < CopyQwords; i++)
        {
            _nativeSource[i] = (ulong)i * 0x9E37_79B9_7F4A_7C15;
            BitConverter.TryWriteBytes(_memory.Bytes.Slice((int)Source + (i * 8), 8), _nativeSource[i]);
        }
    }

    private long RunFrom(ulong entry)
    {
        _cpu.Rip = entry;
        var exit = _interpreter.Run(long.MaxValue);
        if (exit.Reason != ExitReason.Halt)
        {
            throw new InvalidOperationException($"the benchmark loop stopped with {exit} instead of hlt");
        }

        return exit.Instructions;
    }

    [Benchmark(OperationsPerInvoke = IntegerInstructions)]
    public long IntegerLoopInterpreted() => RunFrom(_integerEntry);

    [Benchmark(Baseline = true, OperationsPerInvoke = IntegerInstructions)]
    public ulong IntegerLoopNative()
    {
        ulong rax = 0, rdx = 0;
        for (ulong rcx = IntegerIterations; rcx != 0; rcx--)
        {
            rax += rcx;
            rdx ^= rax;
        }

        return rax ^ rdx;
    }

    [Benchmark(OperationsPerInvoke = CopyInstructions)]
    public long CopyLoopInterpreted() => RunFrom(_copyEntry);

    [Benchmark(OperationsPerInvoke = CopyInstructions)]
    public ulong CopyLoopNative()
    {
        var source = _nativeSource;
        var destination = _nativeDestination;
        for (var pass = 0; pass < CopyPasses; pass++)
        {
            for (var i = 0; i < source.Length; i++)
            {
                destination[i] = source[i];
            }
        }

        return destination[^1];
    }

    private sealed class NullPlatform : IInterpreterPlatform
    {
        public CpuidResult Cpuid(uint leaf, uint subleaf) => default;

        public ulong ReadTsc() => 0;

        public bool TryEmulatePrivileged(CpuState cpu, in Instruction instruction) => false;

        public void LogUnimplemented(string mnemonic)
        {
        }
    }
}
