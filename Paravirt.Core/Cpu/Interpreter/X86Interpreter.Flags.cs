using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

// Status flags, computed eagerly after each instruction from Intel SDM vol. 1 appendix A and the
// per-instruction pages of vol. 2. Where Intel calls a flag undefined, it keeps its previous value.
public sealed partial class X86Interpreter
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Bit(bool b) => b ? 1UL : 0UL;

    /// <summary>PF: set when the low byte of the result has an even number of ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Parity(ulong r) => (BitOperations.PopCount(r & 0xFF) & 1) == 0 ? PF : 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Szp(ulong r, int size) => Parity(r) | ((r & Mask(size)) == 0 ? ZF : 0) | ((r & SignBit(size)) != 0 ? SF : 0);

    /// <summary>Sets all six status flags.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetStatus(ulong r, int size, bool cf, bool of, bool af) =>
        _cpu.Rflags = (_cpu.Rflags & ~Status) | Szp(r, size) | Bit(cf) | (of ? OF : 0) | (af ? AF : 0);

    private bool Flag(ulong bit) => (_cpu.Rflags & bit) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong AddWithFlags(ulong a, ulong b, ulong carry, int size)
    {
        var m = Mask(size);
        a &= m;
        b &= m;
        var r = (a + b + carry) & m;
        var cf = size == 8 ? (carry != 0 ? r <= a : r < a) : a + b + carry > m;
        SetStatus(r, size, cf, ((a ^ r) & (b ^ r) & SignBit(size)) != 0, ((a ^ b ^ r) & 0x10) != 0);
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong SubWithFlags(ulong a, ulong b, ulong borrow, int size)
    {
        var m = Mask(size);
        a &= m;
        b &= m;
        var r = (a - b - borrow) & m;
        var cf = borrow != 0 ? a <= b : a < b;
        SetStatus(r, size, cf, ((a ^ b) & (a ^ r) & SignBit(size)) != 0, ((a ^ b ^ r) & 0x10) != 0);
        return r;
    }

    /// <summary>AND, OR, XOR, TEST: CF = OF = 0, SF ZF PF from the result, AF undefined (kept).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LogicFlags(ulong r, int size)
    {
        r &= Mask(size);
        _cpu.Rflags = (_cpu.Rflags & ~(CF | OF | SF | ZF | PF)) | Szp(r, size);
        return r;
    }

    /// <summary>The eight classic ALU operations in their encoding order (ADD OR ADC SBB AND SUB XOR CMP), plus TEST.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Alu(Mnemonic op, ulong a, ulong b, int size) => op switch
    {
        Mnemonic.Add => AddWithFlags(a, b, 0, size),
        Mnemonic.Or => LogicFlags(a | b, size),
        Mnemonic.Adc => AddWithFlags(a, b, _cpu.Rflags & CF, size),
        Mnemonic.Sbb => SubWithFlags(a, b, _cpu.Rflags & CF, size),
        Mnemonic.And or Mnemonic.Test => LogicFlags(a & b, size),
        Mnemonic.Sub or Mnemonic.Cmp => SubWithFlags(a, b, 0, size),
        _ => LogicFlags(a ^ b, size),
    };

    private bool Condition(ConditionCode cc)
    {
        var f = _cpu.Rflags;
        return cc switch
        {
            ConditionCode.o => (f & OF) != 0,
            ConditionCode.no => (f & OF) == 0,
            ConditionCode.b => (f & CF) != 0,
            ConditionCode.ae => (f & CF) == 0,
            ConditionCode.e => (f & ZF) != 0,
            ConditionCode.ne => (f & ZF) == 0,
            ConditionCode.be => (f & (CF | ZF)) != 0,
            ConditionCode.a => (f & (CF | ZF)) == 0,
            ConditionCode.s => (f & SF) != 0,
            ConditionCode.ns => (f & SF) == 0,
            ConditionCode.p => (f & PF) != 0,
            ConditionCode.np => (f & PF) == 0,
            ConditionCode.l => ((f & SF) != 0) != ((f & OF) != 0),
            ConditionCode.ge => ((f & SF) != 0) == ((f & OF) != 0),
            ConditionCode.le => (f & ZF) != 0 || ((f & SF) != 0) != ((f & OF) != 0),
            ConditionCode.g => (f & ZF) == 0 && ((f & SF) != 0) == ((f & OF) != 0),
            _ => true,
        };
    }

    /// <summary>
    /// SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR on a value of <paramref name="size"/> bytes. The count is
    /// masked to 5 bits (6 for 64-bit operands); a masked count of 0 changes nothing, flags included.
    /// </summary>
    private ulong Shift(Mnemonic op, ulong a, ulong rawCount, int size)
    {
        var bits = size * 8;
        var count = (int)(rawCount & (size == 8 ? 63UL : 31UL));
        var m = Mask(size);
        a &= m;
        if (count == 0)
        {
            return a;
        }

        var f = _cpu.Rflags;
        var msb = SignBit(size);
        ulong r;
        switch (op)
        {
            case Mnemonic.Shl:
            case Mnemonic.Sal:
                r = (a << count) & m;
                if (count < bits)
                {
                    f = (f & ~CF) | ((a >> (bits - count)) & 1);
                }

                if (count == 1)
                {
                    f = (f & ~OF) | (((r & msb) != 0) != ((f & CF) != 0) ? OF : 0);
                }

                f = (f & ~(SF | ZF | PF)) | Szp(r, size);
                break;
            case Mnemonic.Shr:
                r = a >> count;
                if (count < bits)
                {
                    f = (f & ~CF) | ((a >> (count - 1)) & 1);
                }

                if (count == 1)
                {
                    f = (f & ~OF) | ((a & msb) != 0 ? OF : 0);
                }

                f = (f & ~(SF | ZF | PF)) | Szp(r, size);
                break;
            case Mnemonic.Sar:
                {
                    var s = (long)SignExtend(a, size);
                    r = (ulong)(s >> Math.Min(count, 63)) & m;
                    f = (f & ~CF) | ((ulong)(s >> (count - 1)) & 1);
                    if (count == 1)
                    {
                        f &= ~OF;
                    }

                    f = (f & ~(SF | ZF | PF)) | Szp(r, size);
                    break;
                }

            case Mnemonic.Rol:
                {
                    var c = count % bits;
                    r = c == 0 ? a : ((a << c) | (a >> (bits - c))) & m;
                    f = (f & ~CF) | (r & 1);
                    if (count == 1)
                    {
                        f = (f & ~OF) | (((r & msb) != 0) != ((r & 1) != 0) ? OF : 0);
                    }

                    break;
                }

            case Mnemonic.Ror:
                {
                    var c = count % bits;
                    r = c == 0 ? a : ((a >> c) | (a << (bits - c))) & m;
                    f = (f & ~CF) | ((r & msb) != 0 ? CF : 0);
                    if (count == 1)
                    {
                        f = (f & ~OF) | (((r & msb) != 0) != ((r & (msb >> 1)) != 0) ? OF : 0);
                    }

                    break;
                }

            case Mnemonic.Rcl:
                {
                    var c = size == 1 ? count % 9 : size == 2 ? count % 17 : count;
                    var cf = f & CF;
                    r = a;
                    for (var i = 0; i < c; i++)
                    {
                        var outBit = (r & msb) != 0 ? 1UL : 0UL;
                        r = ((r << 1) | cf) & m;
                        cf = outBit;
                    }

                    f = (f & ~CF) | cf;
                    if (count == 1)
                    {
                        f = (f & ~OF) | (((r & msb) != 0) != (cf != 0) ? OF : 0);
                    }

                    break;
                }

            case Mnemonic.Rcr:
                {
                    var c = size == 1 ? count % 9 : size == 2 ? count % 17 : count;
                    var cf = f & CF;
                    if (count == 1)
                    {
                        // OF for RCR is computed before the rotation: MSB(dest) XOR CF.
                        f = (f & ~OF) | (((a & msb) != 0) != (cf != 0) ? OF : 0);
                    }

                    r = a;
                    for (var i = 0; i < c; i++)
                    {
                        var outBit = r & 1;
                        r = (r >> 1) | (cf != 0 ? msb : 0);
                        cf = outBit;
                    }

                    f = (f & ~CF) | cf;
                    break;
                }

            default:
                Unreachable();
                return 0;
        }

        _cpu.Rflags = f;
        return r;
    }

    /// <summary>
    /// SHLD/SHRD: <paramref name="a"/> shifted with bits from <paramref name="b"/> coming in. A count
    /// above the operand width (16-bit operands only) leaves the destination and flags unchanged
    /// (Intel: result and flags undefined).
    /// </summary>
    private ulong DoubleShift(bool left, ulong a, ulong b, ulong rawCount, int size)
    {
        var bits = size * 8;
        var count = (int)(rawCount & (size == 8 ? 63UL : 31UL));
        var m = Mask(size);
        a &= m;
        b &= m;
        if (count == 0 || count > bits)
        {
            return a;
        }

        ulong r, cf;
        if (left)
        {
            r = ((a << count) | (count == bits ? b : b >> (bits - count))) & m;
            if (count == bits)
            {
                r = b;
            }

            cf = (a >> (bits - count)) & 1;
        }
        else
        {
            r = ((count == bits ? 0 : a >> count) | (b << (bits - count))) & m;
            if (count == bits)
            {
                r = b;
            }

            cf = (a >> (count - 1)) & 1;
        }

        var f = (_cpu.Rflags & ~(CF | SF | ZF | PF)) | cf | Szp(r, size);
        if (count == 1)
        {
            var msb = SignBit(size);
            f = (f & ~OF) | (((r ^ a) & msb) != 0 ? OF : 0);
        }

        _cpu.Rflags = f;
        return r;
    }
}
