using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>Once its blocks are decoded, running code allocates nothing, on the fast path and the general handlers alike.</summary>
public sealed class AllocationTests
{
    private const ulong Data = InterpreterMachine.DataBase;

    [Fact]
    public void A_Warm_Run_Allocates_Nothing()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var loop = a.CreateLabel();
            var f = a.CreateLabel();
            var done = a.CreateLabel();
            a.mov(r15d, 200);
            a.Label(ref loop);
            a.mov(rax, __qword_ptr[rbx + rcx * 8 + (long)Data]);   // fast-path load with an index
            a.mov(__qword_ptr[rbx + rcx * 8 + (long)(Data + 64)], rax);
            a.shl(eax, 3);
            a.imul(rdx, rax, 7);
            a.movzx(esi, al);
            a.@lock.add(__qword_ptr[Data + 512], 1);
            a.push(rax);
            a.call(f);
            a.pop(rax);
            a.mov(rsi, Data);
            a.mov(rdi, Data + 1024);
            a.mov(ecx, 16);
            a.rep.movsb();
            a.xor(ecx, ecx);
            a.cvtsi2sd(xmm0, r15d);
            a.addsd(xmm0, xmm0);
            a.movdqu(__xmmword_ptr[Data + 2048], xmm0);
            a.bt(r15, 1);
            a.setc(bl);
            a.movzx(ebx, bl);
            a.dec(r15d);
            a.jnz(loop);
            a.jmp(done);
            a.Label(ref f);
            a.ret();
            a.Label(ref done);
        });
        m.RunToHalt();
        m.ReadU64(Data + 512).Should().Be(200);

        m.Restart();
        var before = GC.GetAllocatedBytesForCurrentThread();
        var exit = m.Run();
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        exit.Reason.Should().Be(ExitReason.Halt);
        allocated.Should().Be(0, $"{exit.Instructions} instructions ran warm");
        m.ReadU64(Data + 512).Should().Be(400);
    }
}
