using System.Numerics;
using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>
/// ADD/ADC/SUB/SBB/CMP/NEG/INC/DEC and the logic operations: results and all six status flags,
/// from a table worked out by hand from Intel's definitions and from a reference model written
/// with BigInteger (a different formulation: carries as "the true sum does not fit", overflow as
/// "the signed sum is out of range", AF as a nibble sum).
/// </summary>
public sealed class ArithmeticTests
{
    private static string Flags(ulong rflags)
    {
        (ulong Bit, string Name)[] all = [(CF, "CF"), (PF, "PF"), (AF, "AF"), (ZF, "ZF"), (SF, "SF"), (OF, "OF")];
        var names = all.Where(f => (rflags & f.Bit) != 0).Select(f => f.Name);
        return string.Join(' ', names);
    }

    internal static Action<Assembler> Binary(string op, int size) => size switch
    {
        1 => a => Emit(a, op, al, bl),
        2 => a => Emit(a, op, ax, bx),
        4 => a => Emit(a, op, eax, ebx),
        _ => a => Emit(a, op, rax, rbx),
    };

    private static void Emit(Assembler a, string op, AssemblerRegister8 d, AssemblerRegister8 s)
    {
        switch (op)
        {
            case "add": a.add(d, s); break;
            case "adc": a.adc(d, s); break;
            case "sub": a.sub(d, s); break;
            case "sbb": a.sbb(d, s); break;
            case "cmp": a.cmp(d, s); break;
            case "and": a.and(d, s); break;
            case "or": a.or(d, s); break;
            case "xor": a.xor(d, s); break;
            case "test": a.test(d, s); break;
            case "neg": a.neg(d); break;
            case "inc": a.inc(d); break;
            case "dec": a.dec(d); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit(Assembler a, string op, AssemblerRegister16 d, AssemblerRegister16 s)
    {
        switch (op)
        {
            case "add": a.add(d, s); break;
            case "adc": a.adc(d, s); break;
            case "sub": a.sub(d, s); break;
            case "sbb": a.sbb(d, s); break;
            case "cmp": a.cmp(d, s); break;
            case "and": a.and(d, s); break;
            case "or": a.or(d, s); break;
            case "xor": a.xor(d, s); break;
            case "test": a.test(d, s); break;
            case "neg": a.neg(d); break;
            case "inc": a.inc(d); break;
            case "dec": a.dec(d); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit(Assembler a, string op, AssemblerRegister32 d, AssemblerRegister32 s)
    {
        switch (op)
        {
            case "add": a.add(d, s); break;
            case "adc": a.adc(d, s); break;
            case "sub": a.sub(d, s); break;
            case "sbb": a.sbb(d, s); break;
            case "cmp": a.cmp(d, s); break;
            case "and": a.and(d, s); break;
            case "or": a.or(d, s); break;
            case "xor": a.xor(d, s); break;
            case "test": a.test(d, s); break;
            case "neg": a.neg(d); break;
            case "inc": a.inc(d); break;
            case "dec": a.dec(d); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit(Assembler a, string op, AssemblerRegister64 d, AssemblerRegister64 s)
    {
        switch (op)
        {
            case "add": a.add(d, s); break;
            case "adc": a.adc(d, s); break;
            case "sub": a.sub(d, s); break;
            case "sbb": a.sbb(d, s); break;
            case "cmp": a.cmp(d, s); break;
            case "and": a.and(d, s); break;
            case "or": a.or(d, s); break;
            case "xor": a.xor(d, s); break;
            case "test": a.test(d, s); break;
            case "neg": a.neg(d); break;
            case "inc": a.inc(d); break;
            case "dec": a.dec(d); break;
            default: throw new ArgumentException(op);
        }
    }

    /// <summary>Runs "op A, B" on rax and rbx with the given incoming flags; returns rax and the status flags.</summary>
    internal static (ulong Rax, ulong Flags) RunOp(InterpreterMachine m, ulong a, ulong b, ulong flagsIn)
    {
        m.Restart(flagsIn);
        m[Gpr.Rax] = a;
        m[Gpr.Rbx] = b;
        m.RunToHalt();
        return (m[Gpr.Rax], m.Cpu.Rflags & Status);
    }

    // Each row worked out by hand: result, then CF PF AF ZF SF OF.
    [Theory]
    [InlineData("add", 1, 0x7Ful, 0x01ul, false, 0x80ul, "AF SF OF")]
    [InlineData("add", 1, 0xFFul, 0x01ul, false, 0x00ul, "CF PF AF ZF")]
    [InlineData("add", 8, 0x8000_0000_0000_0000ul, 0x8000_0000_0000_0000ul, false, 0ul, "CF PF ZF OF")]
    [InlineData("add", 4, 0xAAAA_AAAA_FFFF_FFFFul, 0x1ul, false, 0ul, "CF PF AF ZF")] // a 32-bit write clears the upper half
    [InlineData("add", 2, 0x1111_2222_3333_7FFFul, 0x1ul, false, 0x1111_2222_3333_8000ul, "PF AF SF OF")] // a 16-bit write merges
    [InlineData("adc", 1, 0xFFul, 0x00ul, true, 0x00ul, "CF PF AF ZF")]
    [InlineData("adc", 8, ulong.MaxValue, ulong.MaxValue, true, ulong.MaxValue, "CF PF AF SF")]
    [InlineData("sub", 1, 0x00ul, 0x01ul, false, 0xFFul, "CF PF AF SF")]
    [InlineData("sub", 1, 0x80ul, 0x01ul, false, 0x7Ful, "AF OF")]
    [InlineData("sbb", 4, 5ul, 5ul, true, 0xFFFF_FFFFul, "CF PF AF SF")]
    [InlineData("sbb", 8, 0ul, ulong.MaxValue, true, 0ul, "CF PF AF ZF")] // low nibble 0 - F - 1 borrows
    [InlineData("cmp", 8, 1ul, 2ul, false, 1ul, "CF PF AF SF")] // 1 - 2 = ...FF; rax unchanged
    [InlineData("and", 1, 0xF0ul, 0x0Ful, true, 0x00ul, "PF ZF")]
    [InlineData("or", 8, 0x8000_0000_0000_0000ul, 0x1ul, true, 0x8000_0000_0000_0001ul, "SF")]
    [InlineData("xor", 4, 0xFFFF_FFFF_0000_00FFul, 0xFEul, false, 0x01ul, "")]
    [InlineData("test", 2, 0x8001ul, 0x8000ul, true, 0x8001ul, "PF SF")]
    [InlineData("neg", 4, 0ul, 0ul, true, 0ul, "PF ZF")]
    [InlineData("neg", 1, 0x80ul, 0ul, false, 0x80ul, "CF SF OF")]
    [InlineData("neg", 1, 0x01ul, 0ul, false, 0xFFul, "CF PF AF SF")]
    [InlineData("inc", 1, 0x7Ful, 0ul, true, 0x80ul, "CF AF SF OF")] // CF kept
    [InlineData("dec", 1, 0x80ul, 0ul, false, 0x7Ful, "AF OF")]
    [InlineData("dec", 8, 1ul, 0ul, true, 0ul, "CF PF ZF")]
    public void Table(string op, int size, ulong a, ulong b, bool carryIn, ulong expected, string flags)
    {
        var m = new InterpreterMachine();
        m.Load(Binary(op, size));
        var (rax, f) = RunOp(m, a, b, carryIn ? CF : 0);
        rax.Should().Be(expected);
        Flags(f).Should().Be(flags);
    }

    [Fact]
    public void Logic_Instructions_Keep_The_Undefined_AF()
    {
        var m = new InterpreterMachine();
        m.Load(Binary("and", 8));
        RunOp(m, 3, 1, AF).Flags.Should().Be(AF);
        RunOp(m, 3, 1, 0).Flags.Should().Be(0);
    }

    [Theory]
    [InlineData("add")]
    [InlineData("adc")]
    [InlineData("sub")]
    [InlineData("sbb")]
    [InlineData("cmp")]
    public void Random_Operands_Agree_With_A_BigInteger_Model(string op)
    {
        var random = new Random(1234);
        foreach (var size in new[] { 1, 2, 4, 8 })
        {
            var m = new InterpreterMachine();
            m.Load(Binary(op, size));
            for (var i = 0; i < 300; i++)
            {
                var a = Interesting(random, size);
                var b = Interesting(random, size);
                var carry = random.Next(2) == 1;
                var (rax, f) = RunOp(m, a, b, carry ? CF : 0);
                var (expected, expectedFlags) = Model(op, size, a, b, carry);
                if (op != "cmp")
                {
                    (rax & SizeMask(size)).Should().Be(expected, $"{op}{size * 8} 0x{a:x}, 0x{b:x}, carry {carry}");
                }

                Flags(f).Should().Be(Flags(expectedFlags), $"{op}{size * 8} 0x{a:x}, 0x{b:x}, carry {carry}");
            }
        }
    }

    private static ulong SizeMask(int size) => size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

    private static ulong Interesting(Random random, int size)
    {
        ulong[] edges = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, long.MaxValue, 1UL << 63, ulong.MaxValue, 0xF, 0x10];
        var v = random.Next(3) == 0 ? edges[random.Next(edges.Length)] : (ulong)random.NextInt64() ^ ((ulong)random.Next() << 33);
        return v & SizeMask(size);
    }

    private static (ulong Result, ulong Flags) Model(string op, int size, ulong a, ulong b, bool carry)
    {
        var bits = size * 8;
        var modulus = BigInteger.One << bits;
        var c = (op is "adc" or "sbb") && carry ? 1 : 0;
        var subtract = op is "sub" or "sbb" or "cmp";
        BigInteger ua = a, ub = b;
        BigInteger sa = Signed(a, bits), sb = Signed(b, bits);
        var trueUnsigned = subtract ? ua - ub - c : ua + ub + c;
        var trueSigned = subtract ? sa - sb - c : sa + sb + c;
        var result = (ulong)(((trueUnsigned % modulus) + modulus) % modulus);
        ulong f = 0;
        f |= trueUnsigned < 0 || trueUnsigned >= modulus ? CF : 0;
        f |= trueSigned < -(modulus / 2) || trueSigned >= modulus / 2 ? OF : 0;
        f |= result == 0 ? ZF : 0;
        f |= (result >> (bits - 1)) != 0 ? SF : 0;
        f |= BitOperations.PopCount(result & 0xFF) % 2 == 0 ? PF : 0;
        var nibble = subtract ? (int)(a & 0xF) - (int)(b & 0xF) - c : (int)(a & 0xF) + (int)(b & 0xF) + c;
        f |= nibble is < 0 or > 0xF ? AF : 0;
        return (result, f);
    }

    private static BigInteger Signed(ulong v, int bits) => (v >> (bits - 1)) != 0 ? (BigInteger)v - (BigInteger.One << bits) : v;

    [Fact]
    public void Add_Then_Sub_Round_Trips_And_Carry_Identities_Hold()
    {
        var random = new Random(99);
        var add = new InterpreterMachine();
        add.Load(Binary("add", 8));
        var sub = new InterpreterMachine();
        sub.Load(Binary("sub", 8));
        for (var i = 0; i < 200; i++)
        {
            var a = (ulong)random.NextInt64() * 3;
            var b = (ulong)random.NextInt64() * 5;
            var (sum, addFlags) = RunOp(add, a, b, 0);
            var (back, subFlags) = RunOp(sub, sum, b, 0);
            back.Should().Be(a);

            // The carry out of a + b equals the borrow of (a + b) - b: both say the true sum wrapped.
            ((addFlags & CF) != 0).Should().Be((subFlags & CF) != 0);
            ((addFlags & CF) != 0).Should().Be(sum < a);
        }
    }
}
