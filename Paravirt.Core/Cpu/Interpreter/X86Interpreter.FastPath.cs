using System.Runtime.CompilerServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// The shapes the fast path handles without going through Iced's operand accessors, one value per
/// shape so the run loop dispatches with a single jump table. The ALU kinds keep their encoding
/// order (ADD OR ADC SBB AND SUB XOR CMP) then TEST.
/// </summary>
internal enum FastKind : byte
{
    None,

    // reg op= reg/imm (Src = NoRegister: the source is Imm)
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
    Inc,
    Dec,
    Neg,
    Not,
    Mov,
    Jcc,
    Jmp,
    Load,

    /// <summary>mov r8/r16, [mem]: merged into the register.</summary>
    LoadNarrow,
    Store,
    StoreImm,

    /// <summary>movzx/movsx/movsxd from a register (SrcSize bytes, Signed).</summary>
    Extend,

    /// <summary>movzx/movsx/movsxd from memory.</summary>
    LoadExtend,
    Lea,

    /// <summary>shl/shr/sar/rol/ror by an immediate count (Mn names which).</summary>
    ShiftImm,

    /// <summary>shl/shr/sar/rol/ror by CL.</summary>
    ShiftCl,

    /// <summary>imul reg, reg.</summary>
    Imul,

    /// <summary>imul reg, reg, imm.</summary>
    ImulImm,
    Push,
    Pop,
    Call,

    /// <summary>call reg / call [mem] (Src, or the memory operand when Src = NoRegister).</summary>
    CallIndirect,

    /// <summary>jmp reg / jmp [mem].</summary>
    JmpIndirect,
    Ret,
    Setcc,
    Cmov,
    Nop,

    /// <summary>reg op= [mem] (Mn names the ALU operation).</summary>
    AluLoad,

    /// <summary>cmp/test [mem], reg/imm: memory read, flags written.</summary>
    AluMem,
}

/// <summary>
/// A pre-digested form of the commonest instructions of compiled code (register and simple memory
/// ALU, shifts, multiplies, extensions, moves, stack and direct branches), made once when a block
/// is decoded: register numbers, operand sizes, immediates and the next rip already extracted.
/// Everything else (and every form these shapes do not cover: AH–BH, 16-bit registers, FS/GS and
/// 32-bit addressing, lock prefixes) runs through the general handlers on Iced's <see cref="Instruction"/>.
/// </summary>
internal struct FastOp
{
    /// <summary>Immediate, memory displacement (absolute for rip-relative) or branch target.</summary>
    public ulong Imm;

    /// <summary>The rip of the next instruction.</summary>
    public ulong Next;
    public FastKind Kind;
    public byte Size;
    public byte Dst;

    /// <summary>Source register, or <see cref="NoRegister"/> when the source is <see cref="Imm"/>.</summary>
    public byte Src;

    // Memory operand: base and index register numbers (NoRegister if absent) and scale; displacement in Imm.
    public byte Base;
    public byte Index;
    public byte Scale;
    public byte SrcSize;

    /// <summary>8 when the source register of an extension is AH–BH, else 0.</summary>
    public byte SrcShift;
    public bool Signed;
    public ConditionCode Condition;
    public Mnemonic Mn;

    /// <summary>An immediate of StoreImm/AluMem/ImulImm, whose Imm holds the displacement or is otherwise taken.</summary>
    public ulong Imm2;

    public const byte NoRegister = 0xFF;

    public static FastOp Classify(in Instruction ins)
    {
        var op = new FastOp { Next = ins.NextIP, Src = NoRegister, Base = NoRegister, Index = NoRegister };
        if (ins.HasLockPrefix || ins.HasRepPrefix || ins.HasRepnePrefix)
        {
            return op;
        }

        op.Kind = ClassifyKind(in ins, ref op);
        return op;
    }

    /// <summary>The form that sends the instruction to the general handlers.</summary>
    public static FastOp General(in Instruction ins) => new() { Next = ins.NextIP, Src = NoRegister, Base = NoRegister, Index = NoRegister };

    private static FastKind ClassifyKind(in Instruction ins, ref FastOp op)
    {
        var m = ins.Mnemonic;
        op.Mn = m;
        switch (m)
        {
            case Mnemonic.Nop:
                return FastKind.Nop;
            case Mnemonic.Ret:
                return ins.OpCount == 0 && ins.Code == Code.Retnq ? FastKind.Ret : FastKind.None;
            case Mnemonic.Call:
                if (ins.Op0Kind == OpKind.NearBranch64)
                {
                    op.Imm = ins.NearBranch64;
                    return FastKind.Call;
                }

                return ins.Code == Code.Call_rm64 && TryIndirectTarget(in ins, ref op) ? FastKind.CallIndirect : FastKind.None;
            case Mnemonic.Jmp:
                if (ins.Op0Kind == OpKind.NearBranch64)
                {
                    op.Imm = ins.NearBranch64;
                    return FastKind.Jmp;
                }

                return ins.Code == Code.Jmp_rm64 && TryIndirectTarget(in ins, ref op) ? FastKind.JmpIndirect : FastKind.None;
            case Mnemonic.Jo or Mnemonic.Jno or Mnemonic.Jb or Mnemonic.Jae or Mnemonic.Je or Mnemonic.Jne or Mnemonic.Jbe or Mnemonic.Ja
                or Mnemonic.Js or Mnemonic.Jns or Mnemonic.Jp or Mnemonic.Jnp or Mnemonic.Jl or Mnemonic.Jge or Mnemonic.Jle or Mnemonic.Jg:
                if (ins.Op0Kind == OpKind.NearBranch64)
                {
                    op.Condition = ins.ConditionCode;
                    op.Imm = ins.NearBranch64;
                    return FastKind.Jcc;
                }

                return FastKind.None;
            case Mnemonic.Push:
                return ins.Code == Code.Push_r64 && TryGpr(ins.Op0Register, out op.Src, out _, wide: true) ? FastKind.Push : FastKind.None;
            case Mnemonic.Pop:
                return ins.Code == Code.Pop_r64 && TryGpr(ins.Op0Register, out op.Dst, out _, wide: true) ? FastKind.Pop : FastKind.None;
        }

        if (ins.OpCount == 0)
        {
            return FastKind.None;
        }

        if (ins.Op0Kind == OpKind.Memory)
        {
            return ClassifyMemoryDestination(in ins, ref op);
        }

        if (ins.Op0Kind != OpKind.Register || !TryGpr(ins.Op0Register, out op.Dst, out op.Size, wide: false))
        {
            return FastKind.None;
        }

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
                {
                    var kind = m switch
                    {
                        Mnemonic.Add => FastKind.Add,
                        Mnemonic.Or => FastKind.Or,
                        Mnemonic.Adc => FastKind.Adc,
                        Mnemonic.Sbb => FastKind.Sbb,
                        Mnemonic.And => FastKind.And,
                        Mnemonic.Sub => FastKind.Sub,
                        Mnemonic.Xor => FastKind.Xor,
                        Mnemonic.Cmp => FastKind.Cmp,
                        Mnemonic.Test => FastKind.Test,
                        _ => FastKind.Mov,
                    };
                    if (ins.Op1Kind == OpKind.Register)
                    {
                        return TryGpr(ins.Op1Register, out op.Src, out var size, wide: false) && size == op.Size ? kind : FastKind.None;
                    }

                    if (IsImmediate(ins.Op1Kind))
                    {
                        op.Imm = ins.GetImmediate(1) & Mask(op.Size);
                        return kind;
                    }

                    if (ins.Op1Kind == OpKind.Memory && TryAddress(in ins, ref op))
                    {
                        return kind != FastKind.Mov ? FastKind.AluLoad : op.Size >= 4 ? FastKind.Load : FastKind.LoadNarrow;
                    }

                    return FastKind.None;
                }

            case Mnemonic.Inc:
                return FastKind.Inc;
            case Mnemonic.Dec:
                return FastKind.Dec;
            case Mnemonic.Neg:
                return FastKind.Neg;
            case Mnemonic.Not:
                return FastKind.Not;
            case Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror:
                if (ins.OpCount == 1)
                {
                    op.Imm = 1; // the D0/D1 forms shift by one
                    return FastKind.ShiftImm;
                }

                if (ins.Op1Kind == OpKind.Immediate8)
                {
                    op.Imm = ins.Immediate8;
                    return FastKind.ShiftImm;
                }

                return ins.Op1Kind == OpKind.Register && ins.Op1Register == Register.CL ? FastKind.ShiftCl : FastKind.None;
            case Mnemonic.Movzx or Mnemonic.Movsx or Mnemonic.Movsxd:
                if (op.Size < 4)
                {
                    return FastKind.None;
                }

                op.Signed = m != Mnemonic.Movzx;
                if (ins.Op1Kind == OpKind.Register)
                {
                    if (ins.Op1Register is >= Register.AH and <= Register.BH)
                    {
                        (op.Src, op.SrcSize, op.SrcShift) = ((byte)(ins.Op1Register - Register.AH), 1, 8);
                        return FastKind.Extend;
                    }

                    return TryGpr(ins.Op1Register, out op.Src, out op.SrcSize, wide: false) ? FastKind.Extend : FastKind.None;
                }

                op.SrcSize = (byte)ins.MemorySize.GetSize();
                return op.SrcSize is 1 or 2 or 4 && TryAddress(in ins, ref op) ? FastKind.LoadExtend : FastKind.None;
            case Mnemonic.Lea:
                return op.Size >= 4 && TryAddress(in ins, ref op) ? FastKind.Lea : FastKind.None;
            case Mnemonic.Imul when ins.OpCount >= 2 && op.Size >= 4 && ins.Op1Kind == OpKind.Register:
                if (!TryGpr(ins.Op1Register, out op.Src, out var factorSize, wide: false) || factorSize != op.Size)
                {
                    return FastKind.None;
                }

                if (ins.OpCount == 2)
                {
                    return FastKind.Imul;
                }

                op.Imm2 = ins.GetImmediate(2);
                return FastKind.ImulImm;
            case Mnemonic.Seto or Mnemonic.Setno or Mnemonic.Setb or Mnemonic.Setae or Mnemonic.Sete or Mnemonic.Setne or Mnemonic.Setbe or Mnemonic.Seta
                or Mnemonic.Sets or Mnemonic.Setns or Mnemonic.Setp or Mnemonic.Setnp or Mnemonic.Setl or Mnemonic.Setge or Mnemonic.Setle or Mnemonic.Setg:
                op.Condition = ins.ConditionCode;
                return FastKind.Setcc;
            case Mnemonic.Cmovo or Mnemonic.Cmovno or Mnemonic.Cmovb or Mnemonic.Cmovae or Mnemonic.Cmove or Mnemonic.Cmovne or Mnemonic.Cmovbe or Mnemonic.Cmova
                or Mnemonic.Cmovs or Mnemonic.Cmovns or Mnemonic.Cmovp or Mnemonic.Cmovnp or Mnemonic.Cmovl or Mnemonic.Cmovge or Mnemonic.Cmovle or Mnemonic.Cmovg:
                op.Condition = ins.ConditionCode;
                return op.Size >= 4 && ins.Op1Kind == OpKind.Register && TryGpr(ins.Op1Register, out op.Src, out var s, wide: false) && s == op.Size
                    ? FastKind.Cmov
                    : FastKind.None;
            default:
                return FastKind.None;
        }
    }

    /// <summary>mov [mem], reg/imm and cmp/test [mem], reg/imm.</summary>
    private static FastKind ClassifyMemoryDestination(in Instruction ins, ref FastOp op)
    {
        var m = ins.Mnemonic;
        if (ins.OpCount != 2 || m is not (Mnemonic.Mov or Mnemonic.Cmp or Mnemonic.Test) || !TryAddress(in ins, ref op))
        {
            return FastKind.None;
        }

        if (ins.Op1Kind == OpKind.Register)
        {
            if (!TryGpr(ins.Op1Register, out op.Src, out op.Size, wide: false))
            {
                return FastKind.None;
            }

            return m == Mnemonic.Mov ? FastKind.Store : FastKind.AluMem;
        }

        if (!IsImmediate(ins.Op1Kind))
        {
            return FastKind.None;
        }

        op.Size = (byte)ins.MemorySize.GetSize();
        if (op.Size is not (1 or 2 or 4 or 8))
        {
            return FastKind.None;
        }

        op.Imm2 = ins.GetImmediate(1) & Mask(op.Size);
        return m == Mnemonic.Mov ? FastKind.StoreImm : FastKind.AluMem;
    }

    /// <summary>The operand of call/jmp qword reg or [mem].</summary>
    private static bool TryIndirectTarget(in Instruction ins, ref FastOp op)
    {
        if (ins.Op0Kind == OpKind.Register)
        {
            return TryGpr(ins.Op0Register, out op.Src, out _, wide: true);
        }

        return ins.Op0Kind == OpKind.Memory && ins.MemorySize is MemorySize.UInt64 or MemorySize.QwordOffset && TryAddress(in ins, ref op);
    }

    private static bool IsImmediate(OpKind kind) =>
        kind is OpKind.Immediate8 or OpKind.Immediate16 or OpKind.Immediate32 or OpKind.Immediate64 or OpKind.Immediate8to16
            or OpKind.Immediate8to32 or OpKind.Immediate8to64 or OpKind.Immediate32to64;

    private static ulong Mask(int size) => size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

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

    /// <summary>
    /// A general register the fast path can name by number: a 64-bit one, or (unless
    /// <paramref name="wide"/>) a 32, 16 or low-byte one (AL–BL, SPL–DIL, R8L–R15L). AH–BH are
    /// left to the general handlers.
    /// </summary>
    private static bool TryGpr(Register r, out byte index, out byte size, bool wide)
    {
        if (r is >= Register.RAX and <= Register.R15)
        {
            (index, size) = ((byte)(r - Register.RAX), 8);
            return true;
        }

        if (wide)
        {
            (index, size) = (0, 0);
            return false;
        }

        if (r is >= Register.EAX and <= Register.R15D)
        {
            (index, size) = ((byte)(r - Register.EAX), 4);
            return true;
        }

        if (r is >= Register.AX and <= Register.R15W)
        {
            (index, size) = ((byte)(r - Register.AX), 2);
            return true;
        }

        if (r is >= Register.AL and <= Register.BL)
        {
            (index, size) = ((byte)(r - Register.AL), 1);
            return true;
        }

        if (r is >= Register.SPL and <= Register.R15L)
        {
            (index, size) = ((byte)(r - Register.SPL + 4), 1);
            return true;
        }

        (index, size) = (0, 0);
        return false;
    }
}

public sealed partial class X86Interpreter
{
    /// <summary>Writes an operation's result (already masked to <paramref name="size"/>) to a register: 32-bit writes zero-extend, 8 and 16-bit ones merge.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteSized(ref ulong register, ulong value, int size) =>
        register = size >= 4 ? value : (register & ~Mask(size)) | value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExecuteFast(ref readonly FastOp f)
    {
        // Register numbers in a FastOp are below 16 by construction (Classify), so the registers
        // are reached without a bounds check or a span over the inline array.
        ref var gpr0 = ref Unsafe.As<GeneralRegisters, ulong>(ref _cpu.Gpr);
        switch (f.Kind)
        {
            case FastKind.Add:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazyAdd(d, f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src), f.Size), f.Size);
                    break;
                }

            case FastKind.Or:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazyLogic(d | (f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src)), f.Size), f.Size);
                    break;
                }

            case FastKind.Adc:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    var cf = CurrentCf();
                    _lazy = LazyFlags.None;
                    WriteSized(ref d, AddWithFlags(d, f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src), cf, f.Size), f.Size);
                    break;
                }

            case FastKind.Sbb:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    var cf = CurrentCf();
                    _lazy = LazyFlags.None;
                    WriteSized(ref d, SubWithFlags(d, f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src), cf, f.Size), f.Size);
                    break;
                }

            case FastKind.And:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazyLogic(d & (f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src)), f.Size), f.Size);
                    break;
                }

            case FastKind.Sub:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazySub(d, f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src), f.Size), f.Size);
                    break;
                }

            case FastKind.Xor:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazyLogic(d ^ (f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src)), f.Size), f.Size);
                    break;
                }

            case FastKind.Cmp:
                LazySub(Unsafe.Add(ref gpr0, f.Dst), f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src), f.Size);
                break;
            case FastKind.Test:
                LazyLogic(Unsafe.Add(ref gpr0, f.Dst) & (f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src)), f.Size);
                break;
            case FastKind.Inc:
            case FastKind.Dec:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazyIncDec(d, f.Kind == FastKind.Inc, f.Size), f.Size);
                    break;
                }

            case FastKind.Mov:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, (f.Src == FastOp.NoRegister ? f.Imm : Unsafe.Add(ref gpr0, f.Src)) & Mask(f.Size), f.Size);
                    break;
                }

            case FastKind.Jcc:
                if (LazyCondition(f.Condition))
                {
                    _cpu.Rip = f.Imm;
                }

                break;
            case FastKind.Jmp:
                _cpu.Rip = f.Imm;
                break;
            case FastKind.Load:
                Unsafe.Add(ref gpr0, f.Dst) = Load(FastAddress(in f), f.Size); // a 32-bit load zero-extends
                break;
            case FastKind.Store:
                Store(FastAddress(in f), f.Size, Unsafe.Add(ref gpr0, f.Src));
                break;
            case FastKind.Nop:
                break;
            default:
                ExecuteFastOther(in f);
                break;
        }
    }

    /// <summary>The fast path's less frequent shapes: out of line, so the common ones inline into the run loop.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ExecuteFastOther(ref readonly FastOp f)
    {
        ref var gpr0 = ref Unsafe.As<GeneralRegisters, ulong>(ref _cpu.Gpr);
        switch (f.Kind)
        {
            case FastKind.Neg:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, LazySub(0, d, f.Size), f.Size);
                    break;
                }

            case FastKind.Not:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, ~d & Mask(f.Size), f.Size);
                    break;
                }

            case FastKind.StoreImm:
                Store(FastAddress(in f), f.Size, f.Imm2);
                break;
            case FastKind.Extend:
                {
                    var v = (Unsafe.Add(ref gpr0, f.Src) >> f.SrcShift) & Mask(f.SrcSize);
                    Unsafe.Add(ref gpr0, f.Dst) = (f.Signed ? SignExtend(v, f.SrcSize) : v) & Mask(f.Size);
                    break;
                }

            case FastKind.LoadExtend:
                {
                    var v = Load(FastAddress(in f), f.SrcSize);
                    Unsafe.Add(ref gpr0, f.Dst) = (f.Signed ? SignExtend(v, f.SrcSize) : v) & Mask(f.Size);
                    break;
                }

            case FastKind.Lea:
                Unsafe.Add(ref gpr0, f.Dst) = FastAddress(in f) & Mask(f.Size);
                break;
            case FastKind.ShiftImm:
                {
                    MaterializeFlags();
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, Shift(f.Mn, d, f.Imm, f.Size), f.Size);
                    break;
                }

            case FastKind.LoadNarrow:
                {
                    var value = Load(FastAddress(in f), f.Size);
                    WriteSized(ref Unsafe.Add(ref gpr0, f.Dst), value, f.Size);
                    break;
                }

            case FastKind.ShiftCl:
                {
                    MaterializeFlags();
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    WriteSized(ref d, Shift(f.Mn, d, Unsafe.Add(ref gpr0, Gpr.Rcx) & 0xFF, f.Size), f.Size);
                    break;
                }

            case FastKind.Imul:
                MaterializeFlags();
                Unsafe.Add(ref gpr0, f.Dst) = MultiplyTruncating(Unsafe.Add(ref gpr0, f.Dst), Unsafe.Add(ref gpr0, f.Src), f.Size);
                break;
            case FastKind.ImulImm:
                MaterializeFlags();
                Unsafe.Add(ref gpr0, f.Dst) = MultiplyTruncating(Unsafe.Add(ref gpr0, f.Src), f.Imm2, f.Size);
                break;
            case FastKind.Push:
                Push(Unsafe.Add(ref gpr0, f.Src), 8);
                break;
            case FastKind.Pop:
                {
                    var value = Pop(8);
                    Unsafe.Add(ref gpr0, f.Dst) = value; // pop rsp: the loaded value wins over the increment
                    break;
                }

            case FastKind.Call:
                Push(f.Next, 8);
                _cpu.Rip = f.Imm;
                break;
            case FastKind.CallIndirect:
                {
                    var target = f.Src != FastOp.NoRegister ? Unsafe.Add(ref gpr0, f.Src) : Load(FastAddress(in f), 8);
                    Push(f.Next, 8);
                    _cpu.Rip = target;
                    break;
                }

            case FastKind.JmpIndirect:
                _cpu.Rip = f.Src != FastOp.NoRegister ? Unsafe.Add(ref gpr0, f.Src) : Load(FastAddress(in f), 8);
                break;
            case FastKind.Ret:
                {
                    ref var rsp = ref Unsafe.Add(ref gpr0, Gpr.Rsp);
                    var target = Load(rsp, 8);
                    rsp += 8;
                    _cpu.Rip = target;
                    break;
                }

            case FastKind.Setcc:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    d = (d & ~0xFFUL) | (LazyCondition(f.Condition) ? 1UL : 0UL);
                    break;
                }

            case FastKind.Cmov:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    d = (LazyCondition(f.Condition) ? Unsafe.Add(ref gpr0, f.Src) : d) & Mask(f.Size);
                    break;
                }

            case FastKind.AluLoad:
                {
                    ref var d = ref Unsafe.Add(ref gpr0, f.Dst);
                    var r = LazyAlu(f.Mn, d, Load(FastAddress(in f), f.Size), f.Size);
                    if (f.Mn is not (Mnemonic.Cmp or Mnemonic.Test))
                    {
                        WriteSized(ref d, r, f.Size);
                    }

                    break;
                }

            case FastKind.AluMem:
                LazyAlu(f.Mn, Load(FastAddress(in f), f.Size), f.Src == FastOp.NoRegister ? f.Imm2 : Unsafe.Add(ref gpr0, f.Src), f.Size);
                break;
            default:
                Unreachable();
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastAddress(ref readonly FastOp f)
    {
        ref var gpr0 = ref Unsafe.As<GeneralRegisters, ulong>(ref _cpu.Gpr);
        var ea = f.Imm;
        if (f.Base != FastOp.NoRegister)
        {
            ea += Unsafe.Add(ref gpr0, f.Base);
        }

        if (f.Index != FastOp.NoRegister)
        {
            ea += Unsafe.Add(ref gpr0, f.Index) * f.Scale;
        }

        return ea;
    }
}
