using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

// SSE/SSE2: the moves and integer/float operations compilers emit for memcpy, memset and simple
// scalar float code, plus LDMXCSR/STMXCSR, FXSAVE/FXRSTOR and the x87 control-word instructions
// a kernel's FPU setup uses. Floating point is .NET's IEEE double/float arithmetic: round to
// nearest even whatever MXCSR.RC says (except for CVTSx2SI, which honours it), no DAZ/FTZ, and no
// SIMD floating-point exceptions or MXCSR status flags. MMX (mm0–mm7) and VEX/EVEX forms are #UD.
public sealed partial class X86Interpreter
{
    private void ExecuteSse(in Instruction ins)
    {
        switch (ins.Mnemonic)
        {
            // ---- x87 control and state (no x87 arithmetic) ----
            case Mnemonic.Fninit:
                CheckFpu();
                _cpu.FpuControlWord = 0x037F;
                return;
            case Mnemonic.Fnstcw:
                CheckFpu();
                Store(Ea(in ins), 2, _cpu.FpuControlWord);
                return;
            case Mnemonic.Fldcw:
                CheckFpu();
                _cpu.FpuControlWord = (ushort)Load(Ea(in ins), 2);
                return;
            case Mnemonic.Fnstsw:
                CheckFpu();
                Write0(in ins, 2, 0);
                return;
            case Mnemonic.Wait:
                CheckFpu();
                return;
            case Mnemonic.Fxsave:
            case Mnemonic.Fxsave64:
                CheckFpu();
                FxSave(Ea(in ins));
                return;
            case Mnemonic.Fxrstor:
            case Mnemonic.Fxrstor64:
                CheckFpu();
                FxRestore(Ea(in ins));
                return;
            case Mnemonic.Ldmxcsr:
                {
                    CheckSse();
                    var value = (uint)Load(Ea(in ins), 4);
                    if ((value & ~MxcsrMask) != 0)
                    {
                        throw GeneralProtection();
                    }

                    _cpu.Mxcsr = value;
                    return;
                }

            case Mnemonic.Stmxcsr:
                CheckSse();
                Store(Ea(in ins), 4, _cpu.Mxcsr);
                return;

            // ---- moves ----
            case Mnemonic.Movd:
            case Mnemonic.Movq:
                CheckSse();
                MovdMovq(in ins);
                return;
            case Mnemonic.Movdqa:
            case Mnemonic.Movaps:
            case Mnemonic.Movapd:
            case Mnemonic.Movntdq:
            case Mnemonic.Movntps:
            case Mnemonic.Movntpd:
            case Mnemonic.Movntdqa:
                CheckSse();
                Move128(in ins, aligned: true);
                return;
            case Mnemonic.Movdqu:
            case Mnemonic.Movups:
            case Mnemonic.Movupd:
            case Mnemonic.Lddqu:
                CheckSse();
                Move128(in ins, aligned: false);
                return;
            case Mnemonic.Movss:
            case Mnemonic.Movsd:
                CheckSse();
                MoveScalar(in ins, ins.Mnemonic == Mnemonic.Movss ? 4 : 8);
                return;
            case Mnemonic.Movnti:
                Store(Ea(in ins), RegSize(ins.Op1Register), Reg(ins.Op1Register));
                return;
            case Mnemonic.Movlps:
            case Mnemonic.Movlpd:
            case Mnemonic.Movhps:
            case Mnemonic.Movhpd:
                CheckSse();
                MoveHalf(in ins, high: ins.Mnemonic is Mnemonic.Movhps or Mnemonic.Movhpd);
                return;
            case Mnemonic.Movhlps:
            case Mnemonic.Movlhps:
                {
                    CheckSse();
                    ref var d = ref Xmm(ins.Op0Register);
                    var s = Xmm(ins.Op1Register).AsUInt64();
                    var dq = d.AsUInt64();
                    d = (ins.Mnemonic == Mnemonic.Movhlps ? Vector128.Create(s[1], dq[1]) : Vector128.Create(dq[0], s[0])).AsByte();
                    return;
                }

            case Mnemonic.Pmovmskb:
                CheckSse();
                SetReg(ins.Op0Register, Xmm(ins.Op1Register).ExtractMostSignificantBits());
                return;
            case Mnemonic.Movmskps:
                CheckSse();
                SetReg(ins.Op0Register, Xmm(ins.Op1Register).AsSingle().ExtractMostSignificantBits());
                return;
            case Mnemonic.Movmskpd:
                CheckSse();
                SetReg(ins.Op0Register, Xmm(ins.Op1Register).AsDouble().ExtractMostSignificantBits());
                return;

            // ---- packed integer and bitwise ----
            case Mnemonic.Pxor:
            case Mnemonic.Xorps:
            case Mnemonic.Xorpd:
                Packed(in ins, static (a, b) => a ^ b);
                return;
            case Mnemonic.Por:
            case Mnemonic.Orps:
            case Mnemonic.Orpd:
                Packed(in ins, static (a, b) => a | b);
                return;
            case Mnemonic.Pand:
            case Mnemonic.Andps:
            case Mnemonic.Andpd:
                Packed(in ins, static (a, b) => a & b);
                return;
            case Mnemonic.Pandn:
            case Mnemonic.Andnps:
            case Mnemonic.Andnpd:
                Packed(in ins, static (a, b) => ~a & b);
                return;
            case Mnemonic.Pcmpeqb:
                Packed(in ins, static (a, b) => Vector128.Equals(a, b));
                return;
            case Mnemonic.Pcmpeqw:
                Packed(in ins, static (a, b) => Vector128.Equals(a.AsUInt16(), b.AsUInt16()).AsByte());
                return;
            case Mnemonic.Pcmpeqd:
                Packed(in ins, static (a, b) => Vector128.Equals(a.AsUInt32(), b.AsUInt32()).AsByte());
                return;
            case Mnemonic.Pcmpeqq:
                Packed(in ins, static (a, b) => Vector128.Equals(a.AsUInt64(), b.AsUInt64()).AsByte());
                return;
            case Mnemonic.Pcmpgtb:
                Packed(in ins, static (a, b) => Vector128.GreaterThan(a.AsSByte(), b.AsSByte()).AsByte());
                return;
            case Mnemonic.Pcmpgtw:
                Packed(in ins, static (a, b) => Vector128.GreaterThan(a.AsInt16(), b.AsInt16()).AsByte());
                return;
            case Mnemonic.Pcmpgtd:
                Packed(in ins, static (a, b) => Vector128.GreaterThan(a.AsInt32(), b.AsInt32()).AsByte());
                return;
            case Mnemonic.Paddb:
                Packed(in ins, static (a, b) => a + b);
                return;
            case Mnemonic.Paddw:
                Packed(in ins, static (a, b) => (a.AsUInt16() + b.AsUInt16()).AsByte());
                return;
            case Mnemonic.Paddd:
                Packed(in ins, static (a, b) => (a.AsUInt32() + b.AsUInt32()).AsByte());
                return;
            case Mnemonic.Paddq:
                Packed(in ins, static (a, b) => (a.AsUInt64() + b.AsUInt64()).AsByte());
                return;
            case Mnemonic.Psubb:
                Packed(in ins, static (a, b) => a - b);
                return;
            case Mnemonic.Psubw:
                Packed(in ins, static (a, b) => (a.AsUInt16() - b.AsUInt16()).AsByte());
                return;
            case Mnemonic.Psubd:
                Packed(in ins, static (a, b) => (a.AsUInt32() - b.AsUInt32()).AsByte());
                return;
            case Mnemonic.Psubq:
                Packed(in ins, static (a, b) => (a.AsUInt64() - b.AsUInt64()).AsByte());
                return;
            case Mnemonic.Pminub:
                Packed(in ins, static (a, b) => Vector128.Min(a, b));
                return;
            case Mnemonic.Pmaxub:
                Packed(in ins, static (a, b) => Vector128.Max(a, b));
                return;
            case Mnemonic.Punpcklbw:
                Packed(in ins, static (a, b) => Interleave(a, b, 1, high: false));
                return;
            case Mnemonic.Punpcklwd:
                Packed(in ins, static (a, b) => Interleave(a, b, 2, high: false));
                return;
            case Mnemonic.Punpckldq:
            case Mnemonic.Unpcklps:
                Packed(in ins, static (a, b) => Interleave(a, b, 4, high: false));
                return;
            case Mnemonic.Punpcklqdq:
            case Mnemonic.Unpcklpd:
                Packed(in ins, static (a, b) => Interleave(a, b, 8, high: false));
                return;
            case Mnemonic.Punpckhbw:
                Packed(in ins, static (a, b) => Interleave(a, b, 1, high: true));
                return;
            case Mnemonic.Punpckhwd:
                Packed(in ins, static (a, b) => Interleave(a, b, 2, high: true));
                return;
            case Mnemonic.Punpckhdq:
            case Mnemonic.Unpckhps:
                Packed(in ins, static (a, b) => Interleave(a, b, 4, high: true));
                return;
            case Mnemonic.Punpckhqdq:
            case Mnemonic.Unpckhpd:
                Packed(in ins, static (a, b) => Interleave(a, b, 8, high: true));
                return;
            case Mnemonic.Pshufd:
                {
                    CheckSse();
                    var s = XmmSource(in ins, 1, 16, aligned: true).AsUInt32();
                    var imm = ins.Immediate8;
                    Xmm(ins.Op0Register) = Vector128.Create(s[imm & 3], s[(imm >> 2) & 3], s[(imm >> 4) & 3], s[(imm >> 6) & 3]).AsByte();
                    return;
                }

            case Mnemonic.Pslldq:
            case Mnemonic.Psrldq:
                {
                    CheckSse();
                    ref var d = ref Xmm(ins.Op0Register);
                    var n = Math.Min((int)ins.Immediate8, 16);
                    Span<byte> source = stackalloc byte[16];
                    Span<byte> result = stackalloc byte[16];
                    d.CopyTo(source);
                    result.Clear();
                    if (ins.Mnemonic == Mnemonic.Psrldq)
                    {
                        source[n..].CopyTo(result);
                    }
                    else
                    {
                        source[..(16 - n)].CopyTo(result[n..]);
                    }

                    d = Vector128.Create((ReadOnlySpan<byte>)result);
                    return;
                }

            case Mnemonic.Psllq:
            case Mnemonic.Psrlq:
            case Mnemonic.Pslld:
            case Mnemonic.Psrld:
            case Mnemonic.Psllw:
            case Mnemonic.Psrlw:
                PackedShift(in ins);
                return;

            // ---- floating point ----
            case Mnemonic.Addsd:
                ScalarDouble(in ins, static (a, b) => a + b);
                return;
            case Mnemonic.Subsd:
                ScalarDouble(in ins, static (a, b) => a - b);
                return;
            case Mnemonic.Mulsd:
                ScalarDouble(in ins, static (a, b) => a * b);
                return;
            case Mnemonic.Divsd:
                ScalarDouble(in ins, static (a, b) => a / b);
                return;
            case Mnemonic.Sqrtsd:
                ScalarDouble(in ins, static (_, b) => Math.Sqrt(b));
                return;
            case Mnemonic.Minsd:
                ScalarDouble(in ins, static (a, b) => a < b ? a : b); // NaN or equal: the source, as x86 does
                return;
            case Mnemonic.Maxsd:
                ScalarDouble(in ins, static (a, b) => a > b ? a : b);
                return;
            case Mnemonic.Addss:
                ScalarSingle(in ins, static (a, b) => a + b);
                return;
            case Mnemonic.Subss:
                ScalarSingle(in ins, static (a, b) => a - b);
                return;
            case Mnemonic.Mulss:
                ScalarSingle(in ins, static (a, b) => a * b);
                return;
            case Mnemonic.Divss:
                ScalarSingle(in ins, static (a, b) => a / b);
                return;
            case Mnemonic.Sqrtss:
                ScalarSingle(in ins, static (_, b) => MathF.Sqrt(b));
                return;
            case Mnemonic.Minss:
                ScalarSingle(in ins, static (a, b) => a < b ? a : b);
                return;
            case Mnemonic.Maxss:
                ScalarSingle(in ins, static (a, b) => a > b ? a : b);
                return;
            case Mnemonic.Addpd:
                Packed(in ins, static (a, b) => (a.AsDouble() + b.AsDouble()).AsByte());
                return;
            case Mnemonic.Subpd:
                Packed(in ins, static (a, b) => (a.AsDouble() - b.AsDouble()).AsByte());
                return;
            case Mnemonic.Mulpd:
                Packed(in ins, static (a, b) => (a.AsDouble() * b.AsDouble()).AsByte());
                return;
            case Mnemonic.Divpd:
                Packed(in ins, static (a, b) => (a.AsDouble() / b.AsDouble()).AsByte());
                return;
            case Mnemonic.Addps:
                Packed(in ins, static (a, b) => (a.AsSingle() + b.AsSingle()).AsByte());
                return;
            case Mnemonic.Subps:
                Packed(in ins, static (a, b) => (a.AsSingle() - b.AsSingle()).AsByte());
                return;
            case Mnemonic.Mulps:
                Packed(in ins, static (a, b) => (a.AsSingle() * b.AsSingle()).AsByte());
                return;
            case Mnemonic.Divps:
                Packed(in ins, static (a, b) => (a.AsSingle() / b.AsSingle()).AsByte());
                return;
            case Mnemonic.Ucomisd:
            case Mnemonic.Comisd:
                {
                    CheckSse();
                    var a = Xmm(ins.Op0Register).AsDouble()[0];
                    var b = XmmSource(in ins, 1, 8, aligned: false).AsDouble()[0];
                    CompareFlags(double.IsNaN(a) || double.IsNaN(b), a < b, a == b);
                    return;
                }

            case Mnemonic.Ucomiss:
            case Mnemonic.Comiss:
                {
                    CheckSse();
                    var a = Xmm(ins.Op0Register).AsSingle()[0];
                    var b = XmmSource(in ins, 1, 4, aligned: false).AsSingle()[0];
                    CompareFlags(float.IsNaN(a) || float.IsNaN(b), a < b, a == b);
                    return;
                }

            case Mnemonic.Cvtsi2sd:
            case Mnemonic.Cvtsi2ss:
                {
                    CheckSse();
                    var size = OperandSize(in ins, 1);
                    var value = (long)SignExtend(Read(in ins, 1, size), size);
                    ref var d = ref Xmm(ins.Op0Register);
                    d = ins.Mnemonic == Mnemonic.Cvtsi2sd
                        ? d.AsDouble().WithElement(0, value).AsByte()
                        : d.AsSingle().WithElement(0, value).AsByte();
                    return;
                }

            case Mnemonic.Cvttsd2si:
            case Mnemonic.Cvtsd2si:
            case Mnemonic.Cvttss2si:
            case Mnemonic.Cvtss2si:
                {
                    CheckSse();
                    var single = ins.Mnemonic is Mnemonic.Cvttss2si or Mnemonic.Cvtss2si;
                    var source = XmmSource(in ins, 1, single ? 4 : 8, aligned: false);
                    var value = single ? source.AsSingle()[0] : source.AsDouble()[0];
                    var truncate = ins.Mnemonic is Mnemonic.Cvttsd2si or Mnemonic.Cvttss2si;
                    SetReg(ins.Op0Register, ConvertToInteger(value, RegSize(ins.Op0Register), truncate));
                    return;
                }

            case Mnemonic.Cvtsd2ss:
                {
                    CheckSse();
                    var b = XmmSource(in ins, 1, 8, aligned: false).AsDouble()[0];
                    ref var d = ref Xmm(ins.Op0Register);
                    d = d.AsSingle().WithElement(0, (float)b).AsByte();
                    return;
                }

            case Mnemonic.Cvtss2sd:
                {
                    CheckSse();
                    var b = XmmSource(in ins, 1, 4, aligned: false).AsSingle()[0];
                    ref var d = ref Xmm(ins.Op0Register);
                    d = d.AsDouble().WithElement(0, b).AsByte();
                    return;
                }

            default:
                throw Unimplemented(in ins);
        }
    }

    private const uint MxcsrMask = 0xFFFF;

    /// <summary>x87/SSE state is usable: CR0.EM clear (else #UD) and CR0.TS clear (else #NM, the lazy-FPU trap a PV kernel relies on).</summary>
    private void CheckFpu()
    {
        if ((_cpu.Cr0 & ControlBits.Cr0EM) != 0)
        {
            throw InvalidOpcode();
        }

        if ((_cpu.Cr0 & ControlBits.Cr0TS) != 0)
        {
            throw Raise(Vectors.NM);
        }
    }

    /// <summary>SSE also needs CR4.OSFXSR (else #UD).</summary>
    private void CheckSse()
    {
        if ((_cpu.Cr4 & ControlBits.Cr4OSFXSR) == 0)
        {
            throw InvalidOpcode();
        }

        CheckFpu();
    }

    private ref Vector128<byte> Xmm(Register r)
    {
        if (r is < Register.XMM0 or > Register.XMM15)
        {
            throw InvalidOpcode(); // mm0–mm7 (MMX) and anything else
        }

        return ref _cpu.Xmm[r - Register.XMM0];
    }

    /// <summary>Operand <paramref name="op"/> as a vector: a register, or <paramref name="size"/> bytes of memory zero-extended.</summary>
    private Vector128<byte> XmmSource(in Instruction ins, int op, int size, bool aligned)
    {
        if (ins.GetOpKind(op) == OpKind.Register)
        {
            return Xmm(ins.GetOpRegister(op));
        }

        var la = Ea(in ins);
        return size switch
        {
            16 => Load128(la, aligned),
            8 => Vector128.Create(Load(la, 8), 0UL).AsByte(),
            _ => Vector128.Create((uint)Load(la, 4), 0u, 0u, 0u).AsByte(),
        };
    }

    private Vector128<byte> Load128(ulong la, bool aligned)
    {
        if (aligned && (la & 15) != 0)
        {
            throw GeneralProtection();
        }

        var loc = TranslateLoc(la, 16, Access.Read);
        Span<byte> bytes = stackalloc byte[16];
        ReadBytes(loc, bytes);
        return Vector128.Create((ReadOnlySpan<byte>)bytes);
    }

    private void Store128(ulong la, Vector128<byte> value, bool aligned)
    {
        if (aligned && (la & 15) != 0)
        {
            throw GeneralProtection();
        }

        var loc = TranslateLoc(la, 16, Access.Write);
        Span<byte> bytes = stackalloc byte[16];
        value.CopyTo(bytes);
        WriteBytes(loc, bytes);
    }

    /// <summary>A two-operand 128-bit operation xmm = f(xmm, xmm/m128); a memory operand must be 16-byte aligned (legacy SSE).</summary>
    private void Packed(in Instruction ins, Func<Vector128<byte>, Vector128<byte>, Vector128<byte>> f)
    {
        CheckSse();
        var b = XmmSource(in ins, 1, 16, aligned: true);
        ref var d = ref Xmm(ins.Op0Register);
        d = f(d, b);
    }

    private void ScalarDouble(in Instruction ins, Func<double, double, double> f)
    {
        CheckSse();
        var b = XmmSource(in ins, 1, 8, aligned: false).AsDouble()[0];
        ref var d = ref Xmm(ins.Op0Register);
        d = d.AsDouble().WithElement(0, f(d.AsDouble()[0], b)).AsByte();
    }

    private void ScalarSingle(in Instruction ins, Func<float, float, float> f)
    {
        CheckSse();
        var b = XmmSource(in ins, 1, 4, aligned: false).AsSingle()[0];
        ref var d = ref Xmm(ins.Op0Register);
        d = d.AsSingle().WithElement(0, f(d.AsSingle()[0], b)).AsByte();
    }

    /// <summary>(U)COMISx: ZF PF CF = 111 unordered, 001 less, 100 equal, 000 greater; OF SF AF = 0.</summary>
    private void CompareFlags(bool unordered, bool less, bool equal)
    {
        var f = _cpu.Rflags & ~Status;
        if (unordered)
        {
            f |= ZF | PF | CF;
        }
        else if (less)
        {
            f |= CF;
        }
        else if (equal)
        {
            f |= ZF;
        }

        _cpu.Rflags = f;
    }

    /// <summary>CVT(T)Sx2SI: NaN or out of range gives the "integer indefinite" (the sign bit alone).</summary>
    private ulong ConvertToInteger(double value, int size, bool truncate)
    {
        if (!truncate)
        {
            value = ((_cpu.Mxcsr >> 13) & 3) switch
            {
                0 => Math.Round(value, MidpointRounding.ToEven),
                1 => Math.Floor(value),
                2 => Math.Ceiling(value),
                _ => Math.Truncate(value),
            };
        }
        else
        {
            value = Math.Truncate(value);
        }

        if (size == 8)
        {
            return double.IsNaN(value) || value >= 9.2233720368547758E18 || value < -9.2233720368547758E18
                ? 0x8000_0000_0000_0000UL
                : (ulong)(long)value;
        }

        return double.IsNaN(value) || value >= 2147483648.0 || value < -2147483648.0
            ? 0x8000_0000UL
            : (uint)(int)value;
    }

    private static Vector128<byte> Interleave(Vector128<byte> a, Vector128<byte> b, int element, bool high)
    {
        Span<byte> x = stackalloc byte[16];
        Span<byte> y = stackalloc byte[16];
        Span<byte> r = stackalloc byte[16];
        a.CopyTo(x);
        b.CopyTo(y);
        var start = high ? 8 : 0;
        for (int i = 0, o = 0; i < 8; i += element)
        {
            x.Slice(start + i, element).CopyTo(r[o..]);
            o += element;
            y.Slice(start + i, element).CopyTo(r[o..]);
            o += element;
        }

        return Vector128.Create((ReadOnlySpan<byte>)r);
    }

    private void PackedShift(in Instruction ins)
    {
        CheckSse();
        ulong count = ins.Op1Kind == OpKind.Immediate8 ? ins.Immediate8 : XmmSource(in ins, 1, 16, aligned: true).AsUInt64()[0];
        ref var d = ref Xmm(ins.Op0Register);
        var left = ins.Mnemonic is Mnemonic.Psllq or Mnemonic.Pslld or Mnemonic.Psllw;
        d = ins.Mnemonic switch
        {
            Mnemonic.Psllq or Mnemonic.Psrlq => count > 63 ? Vector128<byte>.Zero
                : (left ? d.AsUInt64() << (int)count : d.AsUInt64() >>> (int)count).AsByte(),
            Mnemonic.Pslld or Mnemonic.Psrld => count > 31 ? Vector128<byte>.Zero
                : (left ? d.AsUInt32() << (int)count : d.AsUInt32() >>> (int)count).AsByte(),
            _ => count > 15 ? Vector128<byte>.Zero
                : (left ? d.AsUInt16() << (int)count : d.AsUInt16() >>> (int)count).AsByte(),
        };
    }

    private void MovdMovq(in Instruction ins)
    {
        var size = ins.Mnemonic == Mnemonic.Movd ? 4 : 8;
        var r0 = ins.Op0Kind == OpKind.Register ? ins.Op0Register : Register.None;
        if (r0 is >= Register.XMM0 and <= Register.XMM15)
        {
            // To xmm: the low element, the rest zeroed.
            ulong value;
            if (ins.Op1Kind == OpKind.Register && ins.Op1Register is >= Register.XMM0 and <= Register.XMM15)
            {
                value = Xmm(ins.Op1Register).AsUInt64()[0];
            }
            else if (ins.Op1Kind == OpKind.Register)
            {
                var r1 = ins.Op1Register;
                if (!IsGpr(r1))
                {
                    throw Unimplemented(in ins); // MMX
                }

                value = Reg(r1);
            }
            else
            {
                value = Load(Ea(in ins), size);
            }

            Xmm(r0) = Vector128.Create(size == 4 ? value & 0xFFFF_FFFF : value, 0UL).AsByte();
            return;
        }

        var source = Xmm(ins.Op1Register).AsUInt64()[0];
        if (ins.Op0Kind == OpKind.Register)
        {
            if (!IsGpr(r0))
            {
                throw Unimplemented(in ins);
            }

            SetReg(r0, size == 4 ? source & 0xFFFF_FFFF : source);
            return;
        }

        Store(Ea(in ins), size, source);
    }

    private void Move128(in Instruction ins, bool aligned)
    {
        if (ins.Op0Kind == OpKind.Register)
        {
            var value = XmmSource(in ins, 1, 16, aligned);
            Xmm(ins.Op0Register) = value;
            return;
        }

        Store128(Ea(in ins), Xmm(ins.Op1Register), aligned);
    }

    private void MoveScalar(in Instruction ins, int size)
    {
        if (ins.Op0Kind == OpKind.Register)
        {
            ref var d = ref Xmm(ins.Op0Register);
            if (ins.Op1Kind == OpKind.Register)
            {
                // Register to register merges the low element.
                var s = Xmm(ins.Op1Register);
                d = size == 4
                    ? d.AsUInt32().WithElement(0, s.AsUInt32()[0]).AsByte()
                    : d.AsUInt64().WithElement(0, s.AsUInt64()[0]).AsByte();
            }
            else
            {
                d = XmmSource(in ins, 1, size, aligned: false); // from memory: the rest zeroed
            }

            return;
        }

        var low = Xmm(ins.Op1Register).AsUInt64()[0];
        Store(Ea(in ins), size, low);
    }

    private void MoveHalf(in Instruction ins, bool high)
    {
        var element = high ? 1 : 0;
        if (ins.Op0Kind == OpKind.Register)
        {
            var value = Load(Ea(in ins), 8);
            ref var d = ref Xmm(ins.Op0Register);
            d = d.AsUInt64().WithElement(element, value).AsByte();
            return;
        }

        Store(Ea(in ins), 8, Xmm(ins.Op1Register).AsUInt64()[element]);
    }

    /// <summary>FXSAVE's 512-byte image (SDM vol. 1, 10.5.1): FCW, MXCSR and xmm0–15; the x87 registers, which are not interpreted, save as zero.</summary>
    private void FxSave(ulong la)
    {
        if ((la & 15) != 0)
        {
            throw GeneralProtection();
        }

        Span<byte> image = stackalloc byte[512];
        image.Clear();
        Unsafe.WriteUnaligned(ref image[0], _cpu.FpuControlWord);
        Unsafe.WriteUnaligned(ref image[24], _cpu.Mxcsr);
        Unsafe.WriteUnaligned(ref image[28], MxcsrMask);
        for (var i = 0; i < 16; i++)
        {
            _cpu.Xmm[i].CopyTo(image.Slice(160 + (16 * i), 16));
        }

        // Translate every page first so a fault leaves memory untouched.
        var first = TranslateLoc(la, 256, Access.Write);
        var second = TranslateLoc(la + 256, 256, Access.Write);
        WriteBytes(first, image[..256]);
        WriteBytes(second, image[256..]);
    }

    private void FxRestore(ulong la)
    {
        if ((la & 15) != 0)
        {
            throw GeneralProtection();
        }

        Span<byte> image = stackalloc byte[512];
        ReadBytes(TranslateLoc(la, 256, Access.Read), image[..256]);
        ReadBytes(TranslateLoc(la + 256, 256, Access.Read), image[256..]);
        var mxcsr = Unsafe.ReadUnaligned<uint>(ref image[24]);
        if ((mxcsr & ~MxcsrMask) != 0)
        {
            throw GeneralProtection();
        }

        _cpu.FpuControlWord = Unsafe.ReadUnaligned<ushort>(ref image[0]);
        _cpu.Mxcsr = mxcsr;
        for (var i = 0; i < 16; i++)
        {
            _cpu.Xmm[i] = Vector128.Create((ReadOnlySpan<byte>)image.Slice(160 + (16 * i), 16));
        }
    }
}
