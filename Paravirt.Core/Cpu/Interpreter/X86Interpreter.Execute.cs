using System.Runtime.CompilerServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

// The dispatcher and the integer instruction set. Each handler leaves rip at the next instruction
// (the run loop set it) unless it branches; on a fault the run loop puts rip back.
public sealed partial class X86Interpreter
{
    private void Execute(in Instruction ins)
    {
        switch (ins.Mnemonic)
        {
            case Mnemonic.Mov:
                Mov(in ins);
                break;
            case Mnemonic.Add:
            case Mnemonic.Or:
            case Mnemonic.Adc:
            case Mnemonic.Sbb:
            case Mnemonic.And:
            case Mnemonic.Sub:
            case Mnemonic.Xor:
                AluRmw(in ins);
                break;
            case Mnemonic.Cmp:
            case Mnemonic.Test:
                {
                    var size = OperandSize(in ins, 0);
                    Alu(ins.Mnemonic, Read(in ins, 0, size), Read(in ins, 1, size), size);
                    break;
                }

            case Mnemonic.Inc:
            case Mnemonic.Dec:
            case Mnemonic.Neg:
            case Mnemonic.Not:
                Unary(in ins);
                break;
            case Mnemonic.Shl:
            case Mnemonic.Sal:
            case Mnemonic.Shr:
            case Mnemonic.Sar:
            case Mnemonic.Rol:
            case Mnemonic.Ror:
            case Mnemonic.Rcl:
            case Mnemonic.Rcr:
                {
                    var size = OperandSize(in ins, 0);
                    var count = ins.OpCount > 1 ? Read(in ins, 1, 1) : 1;
                    Modify(in ins, size, (self, a) => self.Shift(self._op, a, self._count, self._size), ins.Mnemonic, count);
                    break;
                }

            case Mnemonic.Shld:
            case Mnemonic.Shrd:
                DoubleShiftInstruction(in ins);
                break;
            case Mnemonic.Mul:
            case Mnemonic.Imul when ins.OpCount == 1:
                MulOneOperand(in ins);
                break;
            case Mnemonic.Imul:
                ImulTruncating(in ins);
                break;
            case Mnemonic.Div:
            case Mnemonic.Idiv:
                Divide(in ins);
                break;
            case Mnemonic.Movzx:
                SetReg(ins.Op0Register, Read(in ins, 1, OperandSize(in ins, 1)));
                break;
            case Mnemonic.Movsx:
            case Mnemonic.Movsxd:
                {
                    var s = OperandSize(in ins, 1);
                    SetReg(ins.Op0Register, SignExtend(Read(in ins, 1, s), s));
                    break;
                }

            case Mnemonic.Lea:
                SetReg(ins.Op0Register, EffectiveAddress(in ins));
                break;
            case Mnemonic.Xchg:
                Exchange(in ins);
                break;
            case Mnemonic.Cmpxchg:
                CompareExchangeInstruction(in ins);
                break;
            case Mnemonic.Cmpxchg8b:
            case Mnemonic.Cmpxchg16b:
                CompareExchangeDouble(in ins);
                break;
            case Mnemonic.Xadd:
                ExchangeAdd(in ins);
                break;
            case Mnemonic.Bswap:
                {
                    var r = ins.Op0Register;
                    var v = Reg(r);
                    SetReg(r, RegSize(r) switch
                    {
                        8 => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v),
                        4 => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v),
                        _ => 0, // bswap r16 is undefined; this interpreter writes zero to the 16-bit register
                    });
                    break;
                }

            case Mnemonic.Bt:
            case Mnemonic.Bts:
            case Mnemonic.Btr:
            case Mnemonic.Btc:
                BitTest(in ins);
                break;
            case Mnemonic.Bsf:
            case Mnemonic.Bsr:
            case Mnemonic.Tzcnt:
            case Mnemonic.Lzcnt:
            case Mnemonic.Popcnt:
                BitScan(in ins);
                break;
            case Mnemonic.Seto:
            case Mnemonic.Setno:
            case Mnemonic.Setb:
            case Mnemonic.Setae:
            case Mnemonic.Sete:
            case Mnemonic.Setne:
            case Mnemonic.Setbe:
            case Mnemonic.Seta:
            case Mnemonic.Sets:
            case Mnemonic.Setns:
            case Mnemonic.Setp:
            case Mnemonic.Setnp:
            case Mnemonic.Setl:
            case Mnemonic.Setge:
            case Mnemonic.Setle:
            case Mnemonic.Setg:
                Write0(in ins, 1, Condition(ins.ConditionCode) ? 1UL : 0UL);
                break;
            case Mnemonic.Cmovo:
            case Mnemonic.Cmovno:
            case Mnemonic.Cmovb:
            case Mnemonic.Cmovae:
            case Mnemonic.Cmove:
            case Mnemonic.Cmovne:
            case Mnemonic.Cmovbe:
            case Mnemonic.Cmova:
            case Mnemonic.Cmovs:
            case Mnemonic.Cmovns:
            case Mnemonic.Cmovp:
            case Mnemonic.Cmovnp:
            case Mnemonic.Cmovl:
            case Mnemonic.Cmovge:
            case Mnemonic.Cmovle:
            case Mnemonic.Cmovg:
                {
                    // The source is read (and may fault) whatever the condition; a 32-bit destination is zero-extended either way.
                    var r = ins.Op0Register;
                    var src = Read(in ins, 1, RegSize(r));
                    SetReg(r, Condition(ins.ConditionCode) ? src : Reg(r));
                    break;
                }

            case Mnemonic.Jo:
            case Mnemonic.Jno:
            case Mnemonic.Jb:
            case Mnemonic.Jae:
            case Mnemonic.Je:
            case Mnemonic.Jne:
            case Mnemonic.Jbe:
            case Mnemonic.Ja:
            case Mnemonic.Js:
            case Mnemonic.Jns:
            case Mnemonic.Jp:
            case Mnemonic.Jnp:
            case Mnemonic.Jl:
            case Mnemonic.Jge:
            case Mnemonic.Jle:
            case Mnemonic.Jg:
                if (Condition(ins.ConditionCode))
                {
                    _cpu.Rip = ins.NearBranch64;
                }

                break;
            case Mnemonic.Jrcxz:
            case Mnemonic.Jecxz:
                if ((ins.Mnemonic == Mnemonic.Jrcxz ? _cpu.Gpr[Gpr.Rcx] : (uint)_cpu.Gpr[Gpr.Rcx]) == 0)
                {
                    _cpu.Rip = ins.NearBranch64;
                }

                break;
            case Mnemonic.Loop:
            case Mnemonic.Loope:
            case Mnemonic.Loopne:
                {
                    var rcx = --_cpu.Gpr[Gpr.Rcx];
                    var zf = Flag(ZF);
                    if (rcx != 0 && (ins.Mnemonic == Mnemonic.Loop || (ins.Mnemonic == Mnemonic.Loope ? zf : !zf)))
                    {
                        _cpu.Rip = ins.NearBranch64;
                    }

                    break;
                }

            case Mnemonic.Jmp:
                _cpu.Rip = BranchTarget(in ins);
                break;
            case Mnemonic.Call:
                {
                    var target = BranchTarget(in ins);
                    Push(ins.NextIP, 8);
                    _cpu.Rip = target;
                    break;
                }

            case Mnemonic.Ret:
                {
                    var target = Load(_cpu.Gpr[Gpr.Rsp], 8);
                    _cpu.Gpr[Gpr.Rsp] += 8 + (ins.OpCount > 0 ? (ulong)ins.Immediate16 : 0);
                    _cpu.Rip = target;
                    break;
                }

            case Mnemonic.Push:
                PushInstruction(in ins);
                break;
            case Mnemonic.Pop:
                PopInstruction(in ins);
                break;
            case Mnemonic.Enter:
                Enter(in ins);
                break;
            case Mnemonic.Leave:
                {
                    var size = ins.Code == Code.Leavew ? 2 : 8;
                    var rbp = _cpu.Gpr[Gpr.Rbp];
                    var value = Load(rbp, size);
                    _cpu.Gpr[Gpr.Rsp] = rbp + (ulong)size;
                    SetGpr(Gpr.Rbp, size, value);
                    break;
                }

            case Mnemonic.Cbw:
                SetGpr(Gpr.Rax, 2, SignExtend(_cpu.Gpr[Gpr.Rax], 1));
                break;
            case Mnemonic.Cwde:
                SetGpr(Gpr.Rax, 4, SignExtend(_cpu.Gpr[Gpr.Rax], 2));
                break;
            case Mnemonic.Cdqe:
                SetGpr(Gpr.Rax, 8, SignExtend(_cpu.Gpr[Gpr.Rax], 4));
                break;
            case Mnemonic.Cwd:
                SetGpr(Gpr.Rdx, 2, (_cpu.Gpr[Gpr.Rax] & 0x8000) != 0 ? ulong.MaxValue : 0);
                break;
            case Mnemonic.Cdq:
                SetGpr(Gpr.Rdx, 4, (_cpu.Gpr[Gpr.Rax] & 0x8000_0000) != 0 ? ulong.MaxValue : 0);
                break;
            case Mnemonic.Cqo:
                SetGpr(Gpr.Rdx, 8, (long)_cpu.Gpr[Gpr.Rax] < 0 ? ulong.MaxValue : 0);
                break;
            case Mnemonic.Lahf:
                SetReg(Register.AH, _cpu.Rflags & (SF | ZF | AF | PF | CF | Reserved1));
                break;
            case Mnemonic.Sahf:
                _cpu.Rflags = (_cpu.Rflags & ~(SF | ZF | AF | PF | CF)) | ((_cpu.Gpr[Gpr.Rax] >> 8) & (SF | ZF | AF | PF | CF));
                break;
            case Mnemonic.Clc:
                _cpu.Rflags &= ~CF;
                break;
            case Mnemonic.Stc:
                _cpu.Rflags |= CF;
                break;
            case Mnemonic.Cmc:
                _cpu.Rflags ^= CF;
                break;
            case Mnemonic.Cld:
                _cpu.Rflags &= ~DF;
                break;
            case Mnemonic.Std:
                _cpu.Rflags |= DF;
                break;
            case Mnemonic.Xlatb:
                {
                    var la = _cpu.Gpr[Gpr.Rbx] + (byte)_cpu.Gpr[Gpr.Rax] + SegmentBase(ins.MemorySegment);
                    SetReg(Register.AL, Load(la, 1));
                    break;
                }

            case Mnemonic.Movbe:
                {
                    var size = OperandSize(in ins, 0);
                    var v = Read(in ins, 1, size);
                    v = size switch
                    {
                        8 => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v),
                        4 => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v),
                        _ => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)v),
                    };
                    Write0(in ins, size, v);
                    break;
                }

            case Mnemonic.Nop:
            case Mnemonic.Pause:
            case Mnemonic.Lfence:
            case Mnemonic.Sfence:
            case Mnemonic.Endbr64:
            case Mnemonic.Prefetchnta:
            case Mnemonic.Prefetcht0:
            case Mnemonic.Prefetcht1:
            case Mnemonic.Prefetcht2:
            case Mnemonic.Prefetchw:
                break;
            case Mnemonic.Clflush:
            case Mnemonic.Clflushopt:
                // No cache to flush, but the line must be addressable (a fault otherwise).
                Translate(Ea(in ins), Access.Read);
                break;
            case Mnemonic.Mfence:
                Interlocked.MemoryBarrier();
                break;
            case Mnemonic.Movsb:
            case Mnemonic.Movsw:
            case Mnemonic.Movsq:
            case Mnemonic.Stosb:
            case Mnemonic.Stosw:
            case Mnemonic.Stosd:
            case Mnemonic.Stosq:
            case Mnemonic.Lodsb:
            case Mnemonic.Lodsw:
            case Mnemonic.Lodsd:
            case Mnemonic.Lodsq:
            case Mnemonic.Cmpsb:
            case Mnemonic.Cmpsw:
            case Mnemonic.Cmpsq:
            case Mnemonic.Scasb:
            case Mnemonic.Scasw:
            case Mnemonic.Scasd:
            case Mnemonic.Scasq:
                StringInstruction(in ins);
                break;
            case Mnemonic.Movsd when ins.Code == Code.Movsd_m32_m32:
            case Mnemonic.Cmpsd when ins.Code == Code.Cmpsd_m32_m32:
                StringInstruction(in ins);
                break;
            default:
                ExecuteSystemOrSse(in ins);
                break;
        }
    }

    // ---- operands -----------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Read(in Instruction ins, int op, int size)
    {
        switch (ins.GetOpKind(op))
        {
            case OpKind.Register:
                return Reg(ins.GetOpRegister(op));
            case OpKind.Memory:
                return Load(Ea(in ins), size);
            default:
                return ins.GetImmediate(op) & Mask(size);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Write0(in Instruction ins, int size, ulong value)
    {
        if (ins.Op0Kind == OpKind.Register)
        {
            SetReg(ins.Op0Register, value);
        }
        else
        {
            Store(Ea(in ins), size, value);
        }
    }

    private void Mov(in Instruction ins)
    {
        if (ins.Op0Kind == OpKind.Register)
        {
            var r0 = ins.Op0Register;
            if (r0 > Register.R15)
            {
                MoveToSpecial(in ins);
                return;
            }

            if (ins.Op1Kind == OpKind.Register)
            {
                var r1 = ins.Op1Register;
                if (r1 > Register.R15)
                {
                    MoveFromSpecial(in ins);
                    return;
                }

                SetReg(r0, Reg(r1));
                return;
            }

            SetReg(r0, Read(in ins, 1, RegSize(r0)));
            return;
        }

        if (ins.Op1Kind == OpKind.Register && ins.Op1Register > Register.R15)
        {
            MoveFromSpecial(in ins);
            return;
        }

        var size = ins.MemorySize.GetSize();
        Store(Ea(in ins), size, Read(in ins, 1, size));
    }

    // Fields that carry a read-modify-write's parameters into its (static, non-capturing) lambda.
    private Mnemonic _op;
    private ulong _count;
    private int _size;

    /// <summary>
    /// Read-modify-write of operand 0 with <paramref name="compute"/>: on a register, or on memory
    /// translated once for writing (a read-only page faults with W=1 before anything is read);
    /// with a LOCK prefix, a compare-exchange loop, so the update is atomic against other vCPUs.
    /// </summary>
    private void Modify(in Instruction ins, int size, Func<X86Interpreter, ulong, ulong> compute, Mnemonic op, ulong operand)
    {
        _op = op;
        _count = operand;
        _size = size;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            SetReg(r, compute(this, Reg(r)));
            return;
        }

        var loc = TranslateLoc(Ea(in ins), size, Access.Write);
        if (!ins.HasLockPrefix)
        {
            WriteLoc(loc, size, compute(this, ReadLoc(loc, size)));
            return;
        }

        var old = ReadLoc(loc, size);
        while (true)
        {
            var updated = compute(this, old);
            var found = CompareExchange(loc, size, updated, old);
            if (found == old)
            {
                return;
            }

            old = found;
        }
    }

    private static readonly Func<X86Interpreter, ulong, ulong> AluCompute = (self, a) => self.Alu(self._op, a, self._count, self._size);

    private void AluRmw(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var b = Read(in ins, 1, size);
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            SetReg(r, Alu(ins.Mnemonic, Reg(r), b, size));
            return;
        }

        Modify(in ins, size, AluCompute, ins.Mnemonic, b);
    }

    private static readonly Func<X86Interpreter, ulong, ulong> UnaryCompute = (self, a) =>
    {
        var size = self._size;
        switch (self._op)
        {
            case Mnemonic.Inc:
                {
                    var cf = self._cpu.Rflags & CF;
                    var r = self.AddWithFlags(a, 1, 0, size);
                    self._cpu.Rflags = (self._cpu.Rflags & ~CF) | cf;
                    return r;
                }

            case Mnemonic.Dec:
                {
                    var cf = self._cpu.Rflags & CF;
                    var r = self.SubWithFlags(a, 1, 0, size);
                    self._cpu.Rflags = (self._cpu.Rflags & ~CF) | cf;
                    return r;
                }

            case Mnemonic.Neg:
                return self.SubWithFlags(0, a, 0, size);
            default:
                return ~a & Mask(size);
        }
    };

    private void Unary(in Instruction ins) => Modify(in ins, OperandSize(in ins, 0), UnaryCompute, ins.Mnemonic, 0);

    private void DoubleShiftInstruction(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var b = Reg(ins.Op1Register);
        var count = Read(in ins, 2, 1);
        var left = ins.Mnemonic == Mnemonic.Shld;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            SetReg(r, DoubleShift(left, Reg(r), b, count, size));
            return;
        }

        var loc = TranslateLoc(Ea(in ins), size, Access.Write);
        WriteLoc(loc, size, DoubleShift(left, ReadLoc(loc, size), b, count, size));
    }

    private void MulOneOperand(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var src = Read(in ins, 0, size);
        var signed = ins.Mnemonic == Mnemonic.Imul;
        var rax = _cpu.Gpr[Gpr.Rax];
        bool overflow;
        switch (size)
        {
            case 1:
                {
                    ulong r;
                    if (signed)
                    {
                        r = (ulong)(ushort)(short)((sbyte)rax * (sbyte)src);
                        overflow = (short)r != (sbyte)r;
                    }
                    else
                    {
                        r = (byte)rax * (src & 0xFF);
                        overflow = (r >> 8) != 0;
                    }

                    SetGpr(Gpr.Rax, 2, r);
                    break;
                }

            case 2:
            case 4:
                {
                    var bits = size * 8;
                    var r = signed ? (ulong)((long)SignExtend(rax, size) * (long)SignExtend(src, size)) : (rax & Mask(size)) * src;
                    SetGpr(Gpr.Rax, size, r);
                    SetGpr(Gpr.Rdx, size, r >> bits);
                    overflow = signed ? (long)SignExtend(r, size) != (long)r : (r >> bits) != 0;
                    break;
                }

            default:
                if (signed)
                {
                    var high = Math.BigMul((long)rax, (long)src, out var low);
                    _cpu.Gpr[Gpr.Rax] = (ulong)low;
                    _cpu.Gpr[Gpr.Rdx] = (ulong)high;
                    overflow = high != (low >> 63);
                }
                else
                {
                    var high = Math.BigMul(rax, src, out var low);
                    _cpu.Gpr[Gpr.Rax] = low;
                    _cpu.Gpr[Gpr.Rdx] = high;
                    overflow = high != 0;
                }

                break;
        }

        // CF = OF = "the upper half is significant"; SF, ZF, AF and PF are undefined (kept).
        _cpu.Rflags = (_cpu.Rflags & ~(CF | OF)) | (overflow ? CF | OF : 0);
    }

    private void ImulTruncating(in Instruction ins)
    {
        var r = ins.Op0Register;
        var size = RegSize(r);
        var result = ins.OpCount == 2
            ? MultiplyTruncating(Reg(r), Read(in ins, 1, size), size)
            : MultiplyTruncating(Read(in ins, 1, size), ins.GetImmediate(2), size);
        SetReg(r, result);
    }

    /// <summary>
    /// The two and three-operand IMUL: the signed product of <paramref name="a"/> and
    /// <paramref name="b"/> (both taken as <paramref name="size"/>-byte values) truncated to
    /// <paramref name="size"/> bytes; CF = OF = 1 when the truncation lost significant bits.
    /// SF, ZF, AF and PF are undefined (kept).
    /// </summary>
    private ulong MultiplyTruncating(ulong a, ulong b, int size)
    {
        var x = (long)SignExtend(a, size);
        var y = (long)SignExtend(b, size);
        bool overflow;
        ulong result;
        if (size == 8)
        {
            var high = Math.BigMul(x, y, out var low);
            result = (ulong)low;
            overflow = high != (low >> 63);
        }
        else
        {
            var full = x * y;
            result = (ulong)full & Mask(size);
            overflow = (long)SignExtend(result, size) != full;
        }

        _cpu.Rflags = (_cpu.Rflags & ~(CF | OF)) | (overflow ? CF | OF : 0);
        return result;
    }

    /// <summary>DIV/IDIV: #DE on a zero divisor or a quotient that does not fit. Flags are undefined (kept).</summary>
    private void Divide(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var divisor = Read(in ins, 0, size);
        if (divisor == 0)
        {
            throw Raise(Vectors.DE);
        }

        var rax = _cpu.Gpr[Gpr.Rax];
        var rdx = _cpu.Gpr[Gpr.Rdx];
        if (ins.Mnemonic == Mnemonic.Div)
        {
            UInt128 dividend = size switch
            {
                1 => (ushort)rax,
                2 => ((rdx & 0xFFFF) << 16) | (rax & 0xFFFF),
                4 => ((rdx & 0xFFFF_FFFF) << 32) | (rax & 0xFFFF_FFFF),
                _ => new UInt128(rdx, rax),
            };
            var (q, rem) = UInt128.DivRem(dividend, divisor);
            if (q > Mask(size))
            {
                throw Raise(Vectors.DE);
            }

            StoreQuotient(size, (ulong)q, (ulong)rem);
        }
        else
        {
            Int128 dividend = size switch
            {
                1 => (short)rax,
                2 => (int)(((rdx & 0xFFFF) << 16) | (rax & 0xFFFF)),
                4 => (long)(((rdx & 0xFFFF_FFFF) << 32) | (rax & 0xFFFF_FFFF)),
                _ => (Int128)new UInt128(rdx, rax),
            };
            var d = (long)SignExtend(divisor, size);
            if (d == -1 && dividend == Int128.MinValue)
            {
                throw Raise(Vectors.DE);
            }

            var (q, rem) = Int128.DivRem(dividend, d);
            var min = -(Int128)(SignBit(size));
            var max = (Int128)(SignBit(size) - 1);
            if (q < min || q > max)
            {
                throw Raise(Vectors.DE);
            }

            StoreQuotient(size, (ulong)(long)q, (ulong)(long)rem);
        }
    }

    private void StoreQuotient(int size, ulong q, ulong rem)
    {
        if (size == 1)
        {
            SetGpr(Gpr.Rax, 2, (q & 0xFF) | ((rem & 0xFF) << 8));
            return;
        }

        SetGpr(Gpr.Rax, size, q);
        SetGpr(Gpr.Rdx, size, rem);
    }

    private void Exchange(in Instruction ins)
    {
        var r1 = ins.Op1Register;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r0 = ins.Op0Register;
            var a = Reg(r0);
            var b = Reg(r1);
            SetReg(r0, b);
            SetReg(r1, a);
            return;
        }

        // xchg with memory is locked whether or not it says so.
        var size = RegSize(r1);
        var loc = TranslateLoc(Ea(in ins), size, Access.Write);
        var value = Reg(r1);
        var old = ReadLoc(loc, size);
        while (true)
        {
            var found = CompareExchange(loc, size, value, old);
            if (found == old)
            {
                break;
            }

            old = found;
        }

        SetReg(r1, old);
    }

    private void CompareExchangeInstruction(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var src = Reg(ins.Op1Register);
        var acc = _cpu.Gpr[Gpr.Rax] & Mask(size);
        ulong found;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            found = Reg(r);
            if (found == acc)
            {
                SetReg(r, src);
            }
        }
        else
        {
            // A compare-exchange with or without LOCK: atomic either way, which is at least as strong.
            var loc = TranslateLoc(Ea(in ins), size, Access.Write);
            found = CompareExchange(loc, size, src, acc);
        }

        SubWithFlags(acc, found, 0, size);
        if (found != acc)
        {
            SetGpr(Gpr.Rax, size, found);
        }
    }

    private void CompareExchangeDouble(in Instruction ins)
    {
        var la = Ea(in ins);
        if (ins.Mnemonic == Mnemonic.Cmpxchg16b)
        {
            if ((la & 15) != 0)
            {
                throw GeneralProtection();
            }

            var pa = Translate(la, Access.Write);
            var comparand = new UInt128(_cpu.Gpr[Gpr.Rdx], _cpu.Gpr[Gpr.Rax]);
            var value = new UInt128(_cpu.Gpr[Gpr.Rcx], _cpu.Gpr[Gpr.Rbx]);
            if (!_bus.TryCompareExchange16(pa, value, comparand, out var found))
            {
                throw BusError(pa);
            }

            if (found == comparand)
            {
                NoteWrite(pa);
                _cpu.Rflags |= ZF;
            }
            else
            {
                _cpu.Rflags &= ~ZF;
                _cpu.Gpr[Gpr.Rax] = (ulong)found;
                _cpu.Gpr[Gpr.Rdx] = (ulong)(found >> 64);
            }

            return;
        }

        var loc = TranslateLoc(la, 8, Access.Write);
        var cmp = ((_cpu.Gpr[Gpr.Rdx] & 0xFFFF_FFFF) << 32) | (_cpu.Gpr[Gpr.Rax] & 0xFFFF_FFFF);
        var val = ((_cpu.Gpr[Gpr.Rcx] & 0xFFFF_FFFF) << 32) | (_cpu.Gpr[Gpr.Rbx] & 0xFFFF_FFFF);
        var old = CompareExchange(loc, 8, val, cmp);
        if (old == cmp)
        {
            _cpu.Rflags |= ZF;
        }
        else
        {
            _cpu.Rflags &= ~ZF;
            _cpu.Gpr[Gpr.Rax] = old & 0xFFFF_FFFF;
            _cpu.Gpr[Gpr.Rdx] = old >> 32;
        }
    }

    private void ExchangeAdd(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var r1 = ins.Op1Register;
        var src = Reg(r1);
        if (ins.Op0Kind == OpKind.Register)
        {
            var r0 = ins.Op0Register;
            var dest = Reg(r0);
            var sum = AddWithFlags(dest, src, 0, size);
            SetReg(r1, dest);
            SetReg(r0, sum);
            return;
        }

        var loc = TranslateLoc(Ea(in ins), size, Access.Write);
        var old = ReadLoc(loc, size);
        if (!ins.HasLockPrefix)
        {
            WriteLoc(loc, size, AddWithFlags(old, src, 0, size));
        }
        else
        {
            while (true)
            {
                var sum = AddWithFlags(old, src, 0, size);
                var found = CompareExchange(loc, size, sum, old);
                if (found == old)
                {
                    break;
                }

                old = found;
            }
        }

        SetReg(r1, old);
    }

    private static readonly Func<X86Interpreter, ulong, ulong> BitCompute = (self, a) =>
    {
        var bit = 1UL << (int)self._count;
        self._cpu.Rflags = (self._cpu.Rflags & ~CF) | ((a & bit) != 0 ? CF : 0);
        return self._op switch
        {
            Mnemonic.Bts => a | bit,
            Mnemonic.Btr => a & ~bit,
            _ => a ^ bit,
        };
    };

    /// <summary>BT/BTS/BTR/BTC. CF = the bit; OF, SF, AF, PF are undefined (kept), ZF is unaffected.</summary>
    private void BitTest(in Instruction ins)
    {
        var size = OperandSize(in ins, 0);
        var bits = size * 8;
        ulong bitIndex;
        var la = 0UL;
        if (ins.Op1Kind == OpKind.Register)
        {
            var offset = Reg(ins.Op1Register);
            if (ins.Op0Kind == OpKind.Memory)
            {
                // A register bit offset addresses a bit string: it is signed and may reach far past the operand.
                var signed = (long)SignExtend(offset, size);
                la = Ea(in ins) + (ulong)((signed >> (size == 8 ? 6 : size == 4 ? 5 : size == 2 ? 4 : 3)) * size);
                bitIndex = (ulong)signed & (ulong)(bits - 1);
            }
            else
            {
                bitIndex = offset & (ulong)(bits - 1);
            }
        }
        else
        {
            bitIndex = ins.GetImmediate(1) & (ulong)(bits - 1);
            if (ins.Op0Kind == OpKind.Memory)
            {
                la = Ea(in ins);
            }
        }

        if (ins.Mnemonic == Mnemonic.Bt)
        {
            var value = ins.Op0Kind == OpKind.Register ? Reg(ins.Op0Register) : Load(la, size);
            _cpu.Rflags = (_cpu.Rflags & ~CF) | ((value >> (int)bitIndex) & 1);
            return;
        }

        _op = ins.Mnemonic;
        _count = bitIndex;
        _size = size;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            SetReg(r, BitCompute(this, Reg(r)));
            return;
        }

        var loc = TranslateLoc(la, size, Access.Write);
        var old = ReadLoc(loc, size);
        if (!ins.HasLockPrefix)
        {
            WriteLoc(loc, size, BitCompute(this, old));
            return;
        }

        while (true)
        {
            var found = CompareExchange(loc, size, BitCompute(this, old), old);
            if (found == old)
            {
                return;
            }

            old = found;
        }
    }

    private void BitScan(in Instruction ins)
    {
        var r = ins.Op0Register;
        var size = RegSize(r);
        var src = Read(in ins, 1, size) & Mask(size);
        var bits = size * 8;
        var f = _cpu.Rflags;
        switch (ins.Mnemonic)
        {
            case Mnemonic.Bsf:
            case Mnemonic.Bsr:
                // Source 0: ZF = 1 and the destination is left unchanged (as AMD documents and Intel processors do).
                if (src == 0)
                {
                    f |= ZF;
                }
                else
                {
                    f &= ~ZF;
                    SetReg(r, ins.Mnemonic == Mnemonic.Bsf ? (ulong)System.Numerics.BitOperations.TrailingZeroCount(src) : (ulong)(63 - System.Numerics.BitOperations.LeadingZeroCount(src)));
                }

                break;
            case Mnemonic.Tzcnt:
            case Mnemonic.Lzcnt:
                {
                    var n = src == 0 ? (ulong)bits
                        : ins.Mnemonic == Mnemonic.Tzcnt ? (ulong)System.Numerics.BitOperations.TrailingZeroCount(src)
                        : (ulong)(System.Numerics.BitOperations.LeadingZeroCount(src) - (64 - bits));
                    SetReg(r, n);
                    f = (f & ~(CF | ZF)) | (src == 0 ? CF : 0) | (n == 0 ? ZF : 0);
                    break;
                }

            default:
                SetReg(r, (ulong)System.Numerics.BitOperations.PopCount(src));
                f = (f & ~Status) | (src == 0 ? ZF : 0);
                break;
        }

        _cpu.Rflags = f;
    }

    private ulong BranchTarget(in Instruction ins)
    {
        switch (ins.Op0Kind)
        {
            case OpKind.NearBranch64:
                return ins.NearBranch64;
            case OpKind.Register:
                return Reg(ins.Op0Register);
            case OpKind.Memory when ins.MemorySize is MemorySize.UInt64 or MemorySize.QwordOffset:
                // Iced types the operand of jmp/call qword [mem] (jump tables, vtables) as a QwordOffset.
                return Load(Ea(in ins), 8);
            default:
                throw Unimplemented(in ins); // far jumps and calls
        }
    }

    private void PushInstruction(in Instruction ins)
    {
        var size = ins.Code switch
        {
            Code.Push_r16 or Code.Push_rm16 or Code.Pushw_imm8 or Code.Push_imm16 or Code.Pushw_FS or Code.Pushw_GS => 2,
            _ => 8,
        };
        ulong value;
        switch (ins.Op0Kind)
        {
            case OpKind.Register:
                {
                    var r = ins.Op0Register;
                    value = r == Register.FS ? _cpu.Fs : r == Register.GS ? _cpu.Gs : Reg(r);
                    break;
                }

            case OpKind.Memory:
                value = Load(Ea(in ins), size);
                break;
            default:
                value = ins.GetImmediate(0);
                break;
        }

        Push(value, size);
    }

    private void PopInstruction(in Instruction ins)
    {
        var size = ins.Code is Code.Pop_r16 or Code.Pop_rm16 or Code.Popw_FS or Code.Popw_GS ? 2 : 8;
        if (ins.Op0Kind == OpKind.Register)
        {
            var r = ins.Op0Register;
            if (!IsGpr(r))
            {
                // pop fs / pop gs load a segment: the machine's business.
                PrivilegedOrGp(in ins);
                return;
            }

            var value = Pop(size);
            SetReg(r, value);
            return;
        }

        // pop to memory computes the address with rsp already incremented (SDM: POP).
        var rsp = _cpu.Gpr[Gpr.Rsp];
        var v = Load(rsp, size);
        _cpu.Gpr[Gpr.Rsp] = rsp + (ulong)size;
        try
        {
            Store(Ea(in ins), size, v);
        }
        catch (GuestException)
        {
            _cpu.Gpr[Gpr.Rsp] = rsp;
            throw;
        }
    }

    private void Enter(in Instruction ins)
    {
        var size = ins.Code == Code.Enterw_imm16_imm8 ? 2 : 8;
        var allocation = (ulong)ins.Immediate16;
        var level = ins.Immediate8_2nd & 31;
        var rsp = _cpu.Gpr[Gpr.Rsp];
        var rbp = _cpu.Gpr[Gpr.Rbp];
        rsp -= (ulong)size;
        Store(rsp, size, rbp);
        var frame = rsp;
        for (var i = 1; i < level; i++)
        {
            rbp -= (ulong)size;
            var link = Load(rbp, size);
            rsp -= (ulong)size;
            Store(rsp, size, link);
        }

        if (level > 0)
        {
            rsp -= (ulong)size;
            Store(rsp, size, frame);
        }

        SetGpr(Gpr.Rbp, size, frame);
        _cpu.Gpr[Gpr.Rsp] = rsp - allocation;
    }
}
