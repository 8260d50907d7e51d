using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>LOCK-prefixed instructions are atomic against another vCPU interpreting on the same memory.</summary>
public sealed class LockTests
{
    private const ulong Counter = InterpreterMachine.DataBase;
    private const int Iterations = 20_000;

    [Fact]
    public async Task Two_Interpreters_Incrementing_With_Lock_Cmpxchg_And_Lock_Add_Lose_No_Update()
    {
        var memory = new FlatMemory(1 << 20);
        var cpus = new[] { new InterpreterMachine(memory), new InterpreterMachine(memory) };
        cpus[0].Load(a =>
        {
            var loop = a.CreateLabel();
            var retry = a.CreateLabel();
            a.mov(ecx, Iterations);
            a.Label(ref loop);
            a.mov(rax, __qword_ptr[Counter]);
            a.Label(ref retry);
            a.lea(rbx, __[rax + 1]);
            a.@lock.cmpxchg(__qword_ptr[Counter], rbx);   // on failure rax = the current value
            a.jnz(retry);
            a.@lock.add(__dword_ptr[Counter + 8], 1);
            a.mov(rdx, rcx);
            a.@lock.xadd(__qword_ptr[Counter + 16], rdx); // sums Iterations..1 (rdx gets the old value)
            a.@lock.inc(__word_ptr[Counter + 26]);         // a word in the middle of a qword
            a.dec(ecx);
            a.jnz(loop);
        });
        cpus[1].Interpreter.InvalidateCode(0, 1 << 20);

        var token = TestContext.Current.CancellationToken;
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runs = cpus.Select(m => Task.Run(
            async () =>
            {
                await start.Task;
                CpuExit exit;
                do
                {
                    token.ThrowIfCancellationRequested();
                    exit = m.Run(1_000);
                }
                while (exit.Reason == ExitReason.SliceDone);

                return exit;
            },
            token)).ToArray();
        start.SetResult();
        var exits = await Task.WhenAll(runs).WaitAsync(TimeSpan.FromSeconds(60), token);

        exits.Select(e => e.Reason).Should().AllBeEquivalentTo(ExitReason.Halt);
        var m0 = cpus[0];
        m0.ReadU64(Counter).Should().Be(2 * Iterations, "every lock cmpxchg increment landed");
        (m0.ReadU64(Counter + 8) & 0xFFFF_FFFF).Should().Be(2 * Iterations, "every lock add landed");
        m0.ReadU64(Counter + 16).Should().Be(2ul * Iterations * (Iterations + 1) / 2, "every lock xadd landed");
        ((m0.ReadU64(Counter + 24) >> 16) & 0xFFFF).Should().Be(2 * Iterations % 65536, "every lock inc of the word landed");
        (m0.ReadU64(Counter + 24) & 0xFFFF).Should().Be(0, "the neighbouring bytes were untouched");
    }
}
