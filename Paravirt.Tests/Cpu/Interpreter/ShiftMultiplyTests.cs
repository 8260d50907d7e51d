using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>Shifts, rotates, double shifts, multiplies and divides, against values worked out by hand from Intel SDM vol. 2.</summary>
public sealed class ShiftMultiplyTests
{
    private static void EmitShift(Assembler a, string op, int size)
    {
        switch ((op, size))
        {
            case ("shl", 1): a.shl(al, cl); break;
            case ("shr", 1): a.shr(al, cl); break;
            case ("sar", 1): a.sar(al, cl); break;
            case ("rol", 1): a.rol(al, cl); break;
            case ("ror", 1): a.ror(al, cl); break;
            case ("rcl", 1): a.rcl(al, cl); break;
            case ("rcr", 1): a.rcr(al, cl); break;
            case ("shl", 2): a.shl(ax, cl); break;
            case ("shr", 2): a.shr(ax, cl); break;
            case ("rcl", 2): a.rcl(ax, cl); break;
            case ("shl", 4): a.shl(eax, cl); break;
            case ("shr", 4): a.shr(eax, cl); break;
            case ("sar", 4): a.sar(eax, cl); break;
            case ("rol", 4): a.rol(eax, cl); break;
            case ("shl", 8): a.shl(rax, cl); break;
            case ("shr", 8): a.shr(rax, cl); break;
            case ("sar", 8): a.sar(rax, cl); break;
            case ("ror", 8): a.ror(rax, cl); break;
            case ("shld", 4): a.shld(eax, ebx, cl); break;
            case ("shrd", 4): a.shrd(eax, ebx, cl); break;
            case ("shld", 8): a.shld(rax, rbx, cl); break;
            case ("shrd", 2): a.shrd(ax, bx, cl); break;
            default: throw new ArgumentException($"{op}{size}");
        }
    }

    // value, count, incoming flags → result and the six status flags (CF PF AF ZF SF OF).
    [Theory]
    [InlineData("shl", 1, 0x81ul, 1, 0ul, 0x02ul, CF | OF)]                       // CF = old bit 7; OF = MSB(r) ^ CF
    [InlineData("shl", 1, 0x01ul, 8, 0ul, 0x00ul, PF | ZF)]                       // count = width: CF undefined, kept (0)
    [InlineData("shl", 1, 0x01ul, 8, CF | AF, 0x00ul, CF | AF | PF | ZF)]         // ... kept (1); AF undefined, kept
    [InlineData("shl", 4, 0x4000_0001ul, 2, 0ul, 0x04ul, CF)]                     // CF = bit 30; OF undefined for count 2, kept
    [InlineData("shl", 8, 0x1ul, 63, 0ul, 0x8000_0000_0000_0000ul, SF | PF)]
    [InlineData("shl", 8, 0x1234ul, 64, CF | ZF, 0x1234ul, CF | ZF)]              // count masked to 0: nothing changes
    [InlineData("shr", 1, 0x81ul, 1, 0ul, 0x40ul, CF | OF)]                       // OF = old MSB
    [InlineData("shr", 4, 0xFFFF_FFFF_8000_0000ul, 31, 0ul, 0x1ul, 0ul)]          // 32-bit result zero-extends; CF = bit 30 = 0
    [InlineData("shr", 2, 0x8000ul, 15, 0ul, 0x1ul, 0ul)]
    [InlineData("sar", 1, 0x81ul, 1, OF, 0xC0ul, CF | SF | PF)]                   // OF = 0 for 1-bit SAR
    [InlineData("sar", 4, 0x8000_0000ul, 31, 0ul, 0xFFFF_FFFFul, SF | PF)]        // CF = bit 30 = 0
    [InlineData("sar", 8, 0x8000_0000_0000_0000ul, 63, 0ul, ulong.MaxValue, SF | PF)]
    [InlineData("rol", 1, 0x81ul, 1, 0ul, 0x03ul, CF | OF)]                       // CF = LSB(r); OF = MSB(r) ^ CF
    [InlineData("rol", 1, 0x81ul, 8, 0ul, 0x81ul, CF)]                            // rotate by 8 = none, but CF = LSB(r)
    [InlineData("rol", 4, 0x8000_0001ul, 4, ZF, 0x18ul, ZF)]                      // only CF/OF touched; CF = 0
    [InlineData("ror", 1, 0x01ul, 1, 0ul, 0x80ul, CF | OF)]                       // CF = MSB(r); OF = bit 7 ^ bit 6
    [InlineData("ror", 8, 0x1ul, 4, 0ul, 0x1000_0000_0000_0000ul, 0ul)]
    [InlineData("rcl", 1, 0x80ul, 1, 0ul, 0x00ul, CF | OF)]                       // CF in at bit 0, bit 7 out to CF
    [InlineData("rcl", 1, 0x00ul, 9, CF, 0x00ul, CF)]                             // 9 mod 9 = 0: value and CF as they were
    [InlineData("rcl", 2, 0x8000ul, 17, 0ul, 0x8000ul, 0ul)]                      // 17 mod 17 = 0
    [InlineData("rcr", 1, 0x01ul, 1, CF, 0x80ul, CF | OF)]                        // OF = old MSB ^ CF
    [InlineData("shld", 4, 0x1234_5678ul, 8, 0ul, 0x3456_789Aul, PF)]             // with ebx = 0x9ABCDEF0; CF = bit 24 = 0
    [InlineData("shrd", 4, 0x1234_5678ul, 8, 0ul, 0xF012_3456ul, SF | PF)]        // CF = bit 7 of 0x78 = 0; 0x56 has 4 ones
    [InlineData("shld", 8, 0x8000_0000_0000_0000ul, 1, 0ul, 0x1ul, CF | OF)]      // rbx's MSB (1) comes in; sign changed
    [InlineData("shrd", 2, 0x1234ul, 20, ZF, 0x1234ul, ZF)]                       // count > 16: undefined, left unchanged
    public void Shifts_And_Rotates(string op, int size, ulong value, int count, ulong flagsIn, ulong expected, ulong expectedFlags)
    {
        var m = new InterpreterMachine();
        m.Load(a => EmitShift(a, op, size));
        m.Restart(flagsIn);
        m[Gpr.Rax] = value;
        m[Gpr.Rbx] = op == "shld" && size == 8 ? ulong.MaxValue : 0x9ABC_DEF0;
        m[Gpr.Rcx] = (ulong)count;
        m.RunToHalt();
        var mask = size == 8 ? ulong.MaxValue : size == 4 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        (m[Gpr.Rax] & mask).Should().Be(expected);
        (m.Cpu.Rflags & Status).Should().Be(expectedFlags, $"{op}{size * 8} 0x{value:x} by {count}");
    }

    [Fact]
    public void Mul_And_Imul_Set_CF_And_OF_When_The_High_Half_Is_Significant()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.mul(rbx));
        m.Restart();
        m[Gpr.Rax] = ulong.MaxValue;
        m[Gpr.Rbx] = 2;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0xFFFF_FFFF_FFFF_FFFEul);
        m[Gpr.Rdx].Should().Be(1);
        (m.Cpu.Rflags & (CF | OF)).Should().Be(CF | OF);

        m.Load(a => a.mul(bl));
        m.Restart(ZF | SF);
        m[Gpr.Rax] = 0xFFFF_0010;
        m[Gpr.Rbx] = 0x10;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0xFFFF_0100, "ax = al * bl, the rest of rax kept");
        (m.Cpu.Rflags & Status).Should().Be(CF | OF | ZF | SF, "SF, ZF, AF, PF are undefined and kept");

        m.Load(a => a.imul(rbx));
        m.Restart(CF | OF);
        m[Gpr.Rax] = unchecked((ulong)-1L);
        m[Gpr.Rbx] = 2;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(unchecked((ulong)-2L));
        m[Gpr.Rdx].Should().Be(ulong.MaxValue);
        (m.Cpu.Rflags & (CF | OF)).Should().Be(0);

        m.Load(a => a.imul(eax, ebx));
        m.Restart();
        m[Gpr.Rax] = 0xFFFF_FFFF_0001_0000;
        m[Gpr.Rbx] = 0x1_0000;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0, "2^32 truncated to 32 bits, upper half cleared");
        (m.Cpu.Rflags & (CF | OF)).Should().Be(CF | OF);

        m.Load(a => a.imul(rax, rbx, -3));
        m.Restart(CF | OF);
        m[Gpr.Rbx] = 5;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(unchecked((ulong)-15L));
        (m.Cpu.Rflags & (CF | OF)).Should().Be(0);

        m.Load(a => a.imul(cx, bx, 0x100));
        m.Restart();
        m[Gpr.Rcx] = 0xAAAA_0000;
        m[Gpr.Rbx] = 0x80;
        m.RunToHalt();
        m[Gpr.Rcx].Should().Be(0xAAAA_8000, "0x8000 = -32768 as a 16-bit product of 32768: overflow");
        (m.Cpu.Rflags & (CF | OF)).Should().Be(CF | OF);
    }

    [Fact]
    public void Div_And_Idiv_Produce_Quotient_And_Remainder()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.div(rbx));
        m.Restart();
        m[Gpr.Rdx] = 1;
        m[Gpr.Rax] = 4;
        m[Gpr.Rbx] = 3;
        m.RunToHalt();
        // (2^64 + 4) / 3 = 6148914691236517206 rem 2 (2^64 = 18446744073709551616).
        m[Gpr.Rax].Should().Be(6148914691236517206);
        m[Gpr.Rdx].Should().Be(2);

        m.Load(a => a.idiv(ebx));
        m.Restart();
        m[Gpr.Rdx] = 0xFFFF_FFFF;
        m[Gpr.Rax] = unchecked((uint)-100);
        m[Gpr.Rbx] = 7;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(unchecked((uint)-14), "idiv truncates toward zero");
        m[Gpr.Rdx].Should().Be(unchecked((uint)-2), "the remainder has the dividend's sign");

        m.Load(a => a.div(bl));
        m.Restart();
        m[Gpr.Rax] = 0x1234_00FF;
        m[Gpr.Rbx] = 0x10;
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0x1234_0F0F, "al = 255 / 16 = 15, ah = 15");
    }

    [Theory]
    [InlineData("div64-by-zero")]
    [InlineData("div64-overflow")]
    [InlineData("idiv32-min-by-minus-one")]
    [InlineData("idiv8-overflow")]
    public void Divide_Errors_Raise_DE_At_The_Instruction(string which)
    {
        var m = new InterpreterMachine();
        var length = m.Load(a =>
        {
            a.nop();
            switch (which)
            {
                case "div64-by-zero": a.div(rbx); break;
                case "div64-overflow": a.div(rbx); break;
                case "idiv32-min-by-minus-one": a.idiv(ebx); break;
                default: a.idiv(bl); break;
            }
        });
        m.Restart();
        (m[Gpr.Rdx], m[Gpr.Rax], m[Gpr.Rbx]) = which switch
        {
            "div64-by-zero" => (0ul, 5ul, 0ul),
            "div64-overflow" => (7ul, 0ul, 7ul),                       // quotient 7 * 2^64 / 7 = 2^64 does not fit
            "idiv32-min-by-minus-one" => (0xFFFF_FFFFul, 0x8000_0000ul, 0xFFFF_FFFFul),
            _ => (0ul, 0x0100ul, 0x01ul),                                // 256 / 1 = 256 > 127
        };
        var exit = m.Run();
        exit.Reason.Should().Be(ExitReason.Exception);
        exit.Vector.Should().Be(Vectors.DE);
        exit.ErrorCode.Should().BeNull();
        exit.Instructions.Should().Be(1, "the nop retired, the divide did not");
        m.Cpu.Rip.Should().Be(InterpreterMachine.CodeBase + 1, "a fault leaves rip at the faulting instruction");
    }
}
