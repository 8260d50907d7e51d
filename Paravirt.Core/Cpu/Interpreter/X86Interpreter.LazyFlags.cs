using System.Runtime.CompilerServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>What the last flag-setting fast-path operation was, when its flags are not yet in RFLAGS.</summary>
internal enum LazyFlags : byte
{
    None,
    Add,
    Sub,
    Logic,
}

// Lazy status flags for the fast path. Most flags an ALU operation computes are overwritten before
// anything reads them, so the fast path's ADD/SUB/CMP/logic/INC/DEC/NEG keep only the operation and
// its (masked) operands, and a conditional branch, set or move evaluates just the condition it
// needs from them. Everything else sees RFLAGS exactly as the eager handlers would have left it:
// the run loop materialises the flags before the general handlers, before any fast-path shape that
// reads or partly keeps them, and at every exit from Run (faults included), so the machine, the
// guest's exception frames and the platform never see a pending state.
public sealed partial class X86Interpreter
{
    private LazyFlags _lazy;

    // INC/DEC: CF is the one from before (_lazyCf), not the operation's.
    private bool _lazyKeepsCf;
    private int _lazySize;
    private ulong _lazyA;
    private ulong _lazyB;
    private ulong _lazyR;
    private ulong _lazyCf;

    // Logic operations leave AF undefined: this interpreter keeps its previous value.
    private ulong _lazyAf;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LazyAdd(ulong a, ulong b, int size)
    {
        var m = Mask(size);
        a &= m;
        b &= m;
        var r = (a + b) & m;
        _lazy = LazyFlags.Add;
        _lazyKeepsCf = false;
        (_lazyA, _lazyB, _lazyR, _lazySize) = (a, b, r, size);
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LazySub(ulong a, ulong b, int size)
    {
        var m = Mask(size);
        a &= m;
        b &= m;
        var r = (a - b) & m;
        _lazy = LazyFlags.Sub;
        _lazyKeepsCf = false;
        (_lazyA, _lazyB, _lazyR, _lazySize) = (a, b, r, size);
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LazyLogic(ulong r, int size)
    {
        r &= Mask(size);
        _lazyAf = CurrentAf();
        _lazy = LazyFlags.Logic;
        _lazyKeepsCf = false;
        (_lazyR, _lazySize) = (r, size);
        return r;
    }

    /// <summary>INC (or DEC): an add (sub) of 1 that leaves CF as it was.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LazyIncDec(ulong a, bool increment, int size)
    {
        var cf = CurrentCf();
        var r = increment ? LazyAdd(a, 1, size) : LazySub(a, 1, size);
        _lazyKeepsCf = true;
        _lazyCf = cf;
        return r;
    }

    /// <summary>The eight classic ALU operations and TEST, lazily where they write all six flags from their operands alone.</summary>
    private ulong LazyAlu(Mnemonic op, ulong a, ulong b, int size)
    {
        switch (op)
        {
            case Mnemonic.Add:
                return LazyAdd(a, b, size);
            case Mnemonic.Sub:
            case Mnemonic.Cmp:
                return LazySub(a, b, size);
            case Mnemonic.And:
            case Mnemonic.Test:
                return LazyLogic(a & b, size);
            case Mnemonic.Or:
                return LazyLogic(a | b, size);
            case Mnemonic.Xor:
                return LazyLogic(a ^ b, size);
            default:
                {
                    // ADC, SBB: the carry in is read, then all six flags are written eagerly.
                    var cf = CurrentCf();
                    _lazy = LazyFlags.None;
                    return op == Mnemonic.Adc ? AddWithFlags(a, b, cf, size) : SubWithFlags(a, b, cf, size);
                }
        }
    }

    /// <summary>CF as it stands (0 or 1), pending or not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong CurrentCf() => _lazy switch
    {
        LazyFlags.None => _cpu.Rflags & CF,
        _ when _lazyKeepsCf => _lazyCf,
        LazyFlags.Add => _lazyR < _lazyA ? 1UL : 0UL,
        LazyFlags.Sub => _lazyA < _lazyB ? 1UL : 0UL,
        _ => 0,
    };

    /// <summary>AF as it stands (0 or the AF bit), pending or not.</summary>
    private ulong CurrentAf() => _lazy switch
    {
        LazyFlags.None => _cpu.Rflags & AF,
        LazyFlags.Logic => _lazyAf,
        _ => (_lazyA ^ _lazyB ^ _lazyR) & AF,
    };

    /// <summary>Writes a pending operation's six status flags into RFLAGS, as the eager handlers would have.</summary>
    private void MaterializeFlags()
    {
        if (_lazy == LazyFlags.None)
        {
            return;
        }

        var r = _lazyR;
        var size = _lazySize;
        var flags = Szp(r, size) | CurrentCf() | CurrentAf();
        var sign = SignBit(size);
        if (_lazy == LazyFlags.Add && ((_lazyA ^ r) & (_lazyB ^ r) & sign) != 0)
        {
            flags |= OF;
        }
        else if (_lazy == LazyFlags.Sub && ((_lazyA ^ _lazyB) & (_lazyA ^ r) & sign) != 0)
        {
            flags |= OF;
        }

        _cpu.Rflags = (_cpu.Rflags & ~Status) | flags;
        _lazy = LazyFlags.None;
    }

    /// <summary>A condition code, evaluated from a pending CMP/SUB or logic operation when it can be without materialising the flags.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool LazyCondition(ConditionCode cc)
    {
        if (_lazy == LazyFlags.Sub && !_lazyKeepsCf)
        {
            var (a, b) = (_lazyA, _lazyB);
            switch (cc)
            {
                case ConditionCode.e:
                    return a == b;
                case ConditionCode.ne:
                    return a != b;
                case ConditionCode.b:
                    return a < b;
                case ConditionCode.ae:
                    return a >= b;
                case ConditionCode.be:
                    return a <= b;
                case ConditionCode.a:
                    return a > b;
                case ConditionCode.l:
                    return (long)SignExtend(a, _lazySize) < (long)SignExtend(b, _lazySize);
                case ConditionCode.ge:
                    return (long)SignExtend(a, _lazySize) >= (long)SignExtend(b, _lazySize);
                case ConditionCode.le:
                    return (long)SignExtend(a, _lazySize) <= (long)SignExtend(b, _lazySize);
                case ConditionCode.g:
                    return (long)SignExtend(a, _lazySize) > (long)SignExtend(b, _lazySize);
            }
        }
        else if (_lazy != LazyFlags.None)
        {
            // Every pending kind: ZF and SF come from the result alone.
            switch (cc)
            {
                case ConditionCode.e:
                    return _lazyR == 0;
                case ConditionCode.ne:
                    return _lazyR != 0;
                case ConditionCode.s:
                    return (_lazyR & SignBit(_lazySize)) != 0;
                case ConditionCode.ns:
                    return (_lazyR & SignBit(_lazySize)) == 0;
            }
        }

        MaterializeFlags();
        return Condition(cc);
    }
}
