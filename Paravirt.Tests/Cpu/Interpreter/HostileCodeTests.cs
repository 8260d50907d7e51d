using Paravirt.Core.Cpu.Interpreter;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>Guest code is hostile: random bytes, at either privilege level, end a run with an exit, never a host exception.</summary>
public sealed class HostileCodeTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void Random_Bytes_Run_To_An_Exit_Without_A_Host_Exception(int cpl)
    {
        var random = new Random(20261125 + cpl);
        var m = new InterpreterMachine();
        random.NextBytes(m.Memory.Bytes[..(256 * 1024)]);
        m.Interpreter.InvalidateCode(0, 1 << 20);
        var reasons = new Dictionary<ExitReason, int>();
        for (var run = 0; run < 10_000; run++)
        {
            // A fresh, sane state each time: random code may have switched on paging or moved the stack.
            m.Cpu.Cr0 = ControlBits.Cr0PE | ControlBits.Cr0MP;
            m.Cpu.Cr4 = ControlBits.Cr4PAE | ControlBits.Cr4OSFXSR;
            m.Cpu.Cpl = cpl;
            m.Cpu.Rip = (ulong)random.Next(256 * 1024);
            m.Cpu.Rflags = FlagBits.Reserved1;
            for (var r = 0; r < 16; r++)
            {
                m.Cpu.Gpr[r] = random.Next(4) == 0 ? (ulong)random.NextInt64() : (ulong)random.Next(1 << 20);
            }

            m.Interpreter.FlushTlb();
            var exit = m.Run(200);
            reasons[exit.Reason] = reasons.GetValueOrDefault(exit.Reason) + 1;
        }

        reasons.Keys.Should().Contain(ExitReason.Exception, "random bytes fault often");
        m.Platform.Unimplemented.Where(u => u.StartsWith("interpreter error", StringComparison.Ordinal)).Should().BeEmpty("no handler met an operand form it did not expect");
    }
}
