using System.Runtime.CompilerServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>The shapes the fast path handles without going through Iced's operand accessors.</summary>
internal enum FastKind : byte
{
    None,
    AluRegReg,
    AluRegImm,
    Inc,
    Dec,
    MovRegReg,
    MovRegImm,
    Jcc,
    Jmp,
    Load,
    Store,
}

/// <summary>
/// A pre-digested form of the commonest instructions (32/64-bit register ALU, inc/dec, mov, and
/// direct jumps), made once when a block is decoded: register numbers, operand size and immediate
/// already extracted. Everything else runs through the general handlers on Iced's <see cref="Instruction"/>.
/// </summary>
internal struct FastOp
{
    public FastKind Kind;
    public byte Size;
    public byte Dst;
    public byte Src;
    public Mnemonic Op;
    public ConditionCode Condition;
    public ulong Imm;

    // Memory operand of Load/Store: base and index register numbers (NoRegister if absent), scale, displacement in Imm.
    public byte Base;
    public byte Index;
    public byte Scale;

    public const byte NoRegister = 0xFF;

    public static FastOp Classify(in Instruction ins)
    {
        var op = default(FastOp);
        if (ins.HasLockPrefix || ins.OpCount == 0)
        {
            return op;
        }

        var m = ins.Mnemonic;
        if (ins.Op0Kind == OpKind.NearBranch64)
        {
            if (m == Mnemonic.Jmp)
            {
                op.Kind = FastKind.Jmp;
                op.Imm = ins.NearBranch64;
            }
            else if (m is Mnemonic.Jo or Mnemonic.Jno or Mnemonic.Jb or Mnemonic.Jae or Mnemonic.Je or Mnemonic.Jne or Mnemonic.Jbe or Mnemonic.Ja
                or Mnemonic.Js or Mnemonic.Jns or Mnemonic.Jp or Mnemonic.Jnp or Mnemonic.Jl or Mnemonic.Jge or Mnemonic.Jle or Mnemonic.Jg)
            {
                op.Kind = FastKind.Jcc;
                op.Condition = ins.ConditionCode;
                op.Imm = ins.NearBranch64;
            }

            return op;
        }

        if (m == Mnemonic.Mov && ins.Op0Kind == OpKind.Memory && ins.Op1Kind == OpKind.Register && TryGpr(ins.Op1Register, out op.Src, out op.Size) && TryAddress(in ins, ref op))
        {
            op.Kind = FastKind.Store;
            return op;
        }

        if (ins.Op0Kind != OpKind.Register || !TryGpr(ins.Op0Register, out op.Dst, out op.Size))
        {
            return op;
        }

        if (m == Mnemonic.Mov && ins.Op1Kind == OpKind.Memory && TryAddress(in ins, ref op))
        {
            op.Kind = FastKind.Load;
            return op;
        }

        op.Op = m;
        switch (m)
        {
            case Mnemonic.Add:
            case Mnemonic.Or:
            case Mnemonic.Adc:
            case Mnemonic.Sbb:
            case Mnemonic.And:
            case Mnemonic.Sub:
            case Mnemonic.Xor:
            case Mnemonic.Cmp:
            case Mnemonic.Test:
            case Mnemonic.Mov:
                if (ins.Op1Kind == OpKind.Register)
                {
                    if (TryGpr(ins.Op1Register, out op.Src, out var size) && size == op.Size)
                    {
                        op.Kind = m == Mnemonic.Mov ? FastKind.MovRegReg : FastKind.AluRegReg;
                    }
                }
                else if (ins.Op1Kind is OpKind.Immediate8 or OpKind.Immediate32 or OpKind.Immediate64 or OpKind.Immediate8to32 or OpKind.Immediate8to64 or OpKind.Immediate32to64)
                {
                    op.Imm = ins.GetImmediate(1) & (op.Size == 8 ? ulong.MaxValue : 0xFFFF_FFFFUL);
                    op.Kind = m == Mnemonic.Mov ? FastKind.MovRegImm : FastKind.AluRegImm;
                }

                break;
            case Mnemonic.Inc:
                op.Kind = FastKind.Inc;
                break;
            case Mnemonic.Dec:
                op.Kind = FastKind.Dec;
                break;
        }

        return op;
    }

    /// <summary>A 64-bit address from general registers (or rip-relative, already absolute) in the flat segments: not FS/GS.</summary>
    private static bool TryAddress(in Instruction ins, ref FastOp op)
    {
        if (ins.MemorySegment is Register.FS or Register.GS)
        {
            return false;
        }

        op.Imm = ins.MemoryDisplacement64;
        op.Scale = (byte)ins.MemoryIndexScale;
        var b = ins.MemoryBase;
        var x = ins.MemoryIndex;
        if (b == Register.RIP || b == Register.None)
        {
            op.Base = NoRegister;
        }
        else if (b is >= Register.RAX and <= Register.R15)
        {
            op.Base = (byte)(b - Register.RAX);
        }
        else
        {
            return false;
        }

        if (x == Register.None)
        {
            op.Index = NoRegister;
        }
        else if (x is >= Register.RAX and <= Register.R15)
        {
            op.Index = (byte)(x - Register.RAX);
        }
        else
        {
            return false;
        }

        return true;
    }

    private static bool TryGpr(Register r, out byte index, out byte size)
    {
        if (r is >= Register.RAX and <= Register.R15)
        {
            (index, size) = ((byte)(r - Register.RAX), 8);
            return true;
        }

        if (r is >= Register.EAX and <= Register.R15D)
        {
            (index, size) = ((byte)(r - Register.EAX), 4);
            return true;
        }

        (index, size) = (0, 0);
        return false;
    }
}

public sealed partial class X86Interpreter
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExecuteFast(ref readonly FastOp f)
    {
        ref var gpr = ref _cpu.Gpr;
        switch (f.Kind)
        {
            case FastKind.AluRegReg:
            case FastKind.AluRegImm:
                {
                    ref var d = ref gpr[f.Dst];
                    var b = f.Kind == FastKind.AluRegReg ? gpr[f.Src] : f.Imm;
                    var r = Alu(f.Op, d, b, f.Size);
                    if (f.Op is not (Mnemonic.Cmp or Mnemonic.Test))
                    {
                        d = r; // Alu returns the result masked to the size: a 32-bit write zero-extends
                    }

                    break;
                }

            case FastKind.Inc:
            case FastKind.Dec:
                {
                    ref var d = ref gpr[f.Dst];
                    var cf = _cpu.Rflags & CF;
                    d = f.Kind == FastKind.Inc ? AddWithFlags(d, 1, 0, f.Size) : SubWithFlags(d, 1, 0, f.Size);
                    _cpu.Rflags = (_cpu.Rflags & ~CF) | cf;
                    break;
                }

            case FastKind.MovRegReg:
                gpr[f.Dst] = f.Size == 8 ? gpr[f.Src] : (uint)gpr[f.Src];
                break;
            case FastKind.MovRegImm:
                gpr[f.Dst] = f.Imm;
                break;
            case FastKind.Jcc:
                if (Condition(f.Condition))
                {
                    _cpu.Rip = f.Imm;
                }

                break;
            case FastKind.Load:
                {
                    var value = Load(FastAddress(in f), f.Size);
                    gpr[f.Dst] = value;
                    break;
                }

            case FastKind.Store:
                Store(FastAddress(in f), f.Size, gpr[f.Src]);
                break;
            default:
                _cpu.Rip = f.Imm;
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastAddress(ref readonly FastOp f)
    {
        var ea = f.Imm;
        if (f.Base != FastOp.NoRegister)
        {
            ea += _cpu.Gpr[f.Base];
        }

        if (f.Index != FastOp.NoRegister)
        {
            ea += _cpu.Gpr[f.Index] * f.Scale;
        }

        return ea;
    }
}
