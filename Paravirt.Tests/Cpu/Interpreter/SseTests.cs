using System.Runtime.Intrinsics;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>The SSE/SSE2 subset: moves, byte compares, scalar double arithmetic, conversions and FXSAVE.</summary>
public sealed class SseTests
{
    private const ulong Data = InterpreterMachine.DataBase;

    [Fact]
    public void A_Movdqu_Copy_Loop_Copies_Unaligned_Blocks()
    {
        var m = new InterpreterMachine();
        var source = Enumerable.Range(0, 256).Select(i => (byte)(255 - i)).ToArray();
        source.CopyTo(m.Memory.Bytes[((int)Data + 3)..]);
        m.Load(a =>
        {
            var loop = a.CreateLabel();
            a.mov(rsi, Data + 3);
            a.mov(rdi, Data + 0x1005);
            a.mov(ecx, 16);
            a.Label(ref loop);
            a.movdqu(xmm0, __xmmword_ptr[rsi]);
            a.movdqu(__xmmword_ptr[rdi], xmm0);
            a.add(rsi, 16);
            a.add(rdi, 16);
            a.dec(ecx);
            a.jnz(loop);
        });
        m.RunToHalt();
        m.Memory.Bytes.Slice((int)Data + 0x1005, 256).ToArray().Should().Equal(source);
    }

    [Fact]
    public void Pcmpeqb_And_Pmovmskb_Find_A_Zero_Byte()
    {
        var m = new InterpreterMachine();
        "hello, world\0xyz"u8.CopyTo(m.Memory.Bytes[(int)Data..]);
        m.Load(a =>
        {
            a.pxor(xmm1, xmm1);
            a.movdqa(xmm0, __xmmword_ptr[Data]);
            a.pcmpeqb(xmm0, xmm1);
            a.pmovmskb(eax, xmm0);
            a.bsf(ebx, eax);
        });
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(1u << 12);
        m[Gpr.Rbx].Should().Be(12, "the string's length");
    }

    [Fact]
    public void Movaps_On_A_Misaligned_Address_Raises_GP0_And_CR0_TS_Raises_NM()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.movaps(xmm0, __xmmword_ptr[Data + 8]));
        var exit = m.Run();
        (exit.Vector, exit.ErrorCode).Should().Be((Vectors.GP, 0u));

        var lazy = new InterpreterMachine();
        lazy.Cpu.Cr0 |= ControlBits.Cr0TS;
        lazy.Load(a => a.addsd(xmm0, xmm1));
        exit = lazy.Run();
        (exit.Vector, exit.ErrorCode).Should().Be((Vectors.NM, (uint?)null), "a PV kernel's lazy FPU switch relies on #NM");
    }

    [Fact]
    public void Scalar_Double_Arithmetic_And_Conversions()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(eax, 7);
            a.cvtsi2sd(xmm0, eax);          // 7.0
            a.mov(rax, -2);
            a.cvtsi2sd(xmm1, rax);          // -2.0
            a.movapd(xmm2, xmm0);
            a.divsd(xmm2, xmm1);            // -3.5
            a.cvttsd2si(rbx, xmm2);         // -3 (truncation)
            a.cvtsd2si(rcx, xmm2);          // -4 (round to nearest even: -3.5 → -4)
            a.mulsd(xmm0, xmm1);            // -14.0
            a.addsd(xmm0, xmm0);            // -28.0
            a.subsd(xmm0, xmm1);            // -26.0
            a.cvttsd2si(edx, xmm0);         // -26
            a.movq(rsi, xmm2);              // the bits of -3.5
            a.mov(rax, 0x7FF8_0000_0000_0000);
            a.movq(xmm3, rax);              // NaN
            a.cvttsd2si(edi, xmm3);         // integer indefinite
            a.sqrtsd(xmm4, __qword_ptr[Data]);
            a.cvtsd2ss(xmm5, xmm4);
            a.movd(r8d, xmm5);
        });
        BitConverter.TryWriteBytes(m.Memory.Bytes.Slice((int)Data, 8), 2.25);
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(unchecked((ulong)-3L));
        m[Gpr.Rcx].Should().Be(unchecked((ulong)-4L));
        m[Gpr.Rdx].Should().Be(unchecked((uint)-26));
        m[Gpr.Rsi].Should().Be((ulong)BitConverter.DoubleToInt64Bits(-3.5));
        m[Gpr.Rdi].Should().Be(0x8000_0000);
        m.Cpu.Xmm[4].AsDouble()[0].Should().Be(1.5);
        m[Gpr.R8].Should().Be((ulong)BitConverter.SingleToInt32Bits(1.5f));
        m.Cpu.Xmm[0].AsDouble()[1].Should().Be(0, "scalar operations keep the upper element (zero here)");
    }

    [Theory]
    [InlineData(1.0, 2.0, CF)]
    [InlineData(2.0, 1.0, 0ul)]
    [InlineData(3.0, 3.0, ZF)]
    [InlineData(double.NaN, 1.0, ZF | PF | CF)]
    public void Ucomisd_Sets_ZF_PF_CF_And_Clears_The_Rest(double a, double b, ulong expected)
    {
        var m = new InterpreterMachine();
        m.Load(a => a.ucomisd(xmm0, xmm1));
        m.Cpu.Xmm[0] = Vector128.CreateScalar(a).AsByte();
        m.Cpu.Xmm[1] = Vector128.CreateScalar(b).AsByte();
        m.Restart(OF | SF | AF);
        m.RunToHalt();
        (m.Cpu.Rflags & Status).Should().Be(expected);
    }

    [Fact]
    public void Fxsave_And_Fxrstor_Round_Trip_Xmm_And_Mxcsr()
    {
        var m = new InterpreterMachine();
        for (var i = 0; i < 16; i++)
        {
            m.Cpu.Xmm[i] = Vector128.Create((byte)(i + 1));
        }

        m.Cpu.Mxcsr = 0x1F80 | (1 << 13);
        m.Load(a =>
        {
            a.fxsave64(__[Data]);
            a.pxor(xmm7, xmm7);
            a.mov(__dword_ptr[Data + 24], 0x1F80);
            a.fxrstor64(__[Data]);
        });
        m.RunToHalt();
        m.ReadU64(Data + 160).Should().Be(0x0101_0101_0101_0101, "xmm0 lives at offset 160");
        (m.ReadU64(Data + 160 + (15 * 16)) & 0xFF).Should().Be(16);
        m.Cpu.Xmm[7].Should().Be(Vector128.Create((byte)8), "fxrstor brought xmm7 back");
        m.Cpu.Mxcsr.Should().Be(0x1F80u, "the image's MXCSR was rewritten before the restore");
        (m.ReadU64(Data) & 0xFFFF).Should().Be(0x037F, "FCW");
    }
}
