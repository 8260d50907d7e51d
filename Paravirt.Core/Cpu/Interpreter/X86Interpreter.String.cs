using System.Runtime.InteropServices;
using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

// MOVS, STOS, LODS, CMPS, SCAS with REP/REPE/REPNE and DF (64-bit addressing). A repeated
// instruction runs at most 4,096 iterations per step and then leaves rip on itself, so a huge rcx
// cannot hold the vCPU past its slice; a fault mid-way leaves rcx, rsi and rdi at the faulting
// iteration, as on hardware.
public sealed partial class X86Interpreter
{
    private enum StringKind
    {
        Movs,
        Stos,
        Lods,
        Cmps,
        Scas,
    }

    private void StringInstruction(in Instruction ins)
    {
        var (kind, size) = ins.Mnemonic switch
        {
            Mnemonic.Movsb => (StringKind.Movs, 1),
            Mnemonic.Movsw => (StringKind.Movs, 2),
            Mnemonic.Movsd => (StringKind.Movs, 4),
            Mnemonic.Movsq => (StringKind.Movs, 8),
            Mnemonic.Stosb => (StringKind.Stos, 1),
            Mnemonic.Stosw => (StringKind.Stos, 2),
            Mnemonic.Stosd => (StringKind.Stos, 4),
            Mnemonic.Stosq => (StringKind.Stos, 8),
            Mnemonic.Lodsb => (StringKind.Lods, 1),
            Mnemonic.Lodsw => (StringKind.Lods, 2),
            Mnemonic.Lodsd => (StringKind.Lods, 4),
            Mnemonic.Lodsq => (StringKind.Lods, 8),
            Mnemonic.Cmpsb => (StringKind.Cmps, 1),
            Mnemonic.Cmpsw => (StringKind.Cmps, 2),
            Mnemonic.Cmpsd => (StringKind.Cmps, 4),
            Mnemonic.Cmpsq => (StringKind.Cmps, 8),
            Mnemonic.Scasb => (StringKind.Scas, 1),
            Mnemonic.Scasw => (StringKind.Scas, 2),
            Mnemonic.Scasd => (StringKind.Scas, 4),
            _ => (StringKind.Scas, 8),
        };

        if (ins.MemoryBase is Register.ESI or Register.EDI || ins.Op0Kind is OpKind.MemorySegESI or OpKind.MemoryESEDI || ins.Op1Kind is OpKind.MemorySegESI or OpKind.MemoryESEDI)
        {
            throw Unimplemented(in ins); // 32-bit addressing (67h) string instructions
        }

        var sourceBase = SegmentBase(ins.MemorySegment);
        var step = Flag(DF) ? unchecked((ulong)-size) : (ulong)size;
        var repeat = ins.HasRepPrefix || ins.HasRepePrefix || ins.HasRepnePrefix;
        if (!repeat)
        {
            StringIteration(kind, size, sourceBase, step);
            return;
        }

        if (kind is StringKind.Movs or StringKind.Stos && step == (ulong)size && TryFastRepeat(kind, size, sourceBase))
        {
            if (_cpu.Gpr[Gpr.Rcx] != 0)
            {
                _cpu.Rip = ins.IP;
            }

            return;
        }

        var conditional = kind is StringKind.Cmps or StringKind.Scas;
        var whileEqual = ins.HasRepePrefix;
        for (var n = 0; n < MaxRepIterations; n++)
        {
            if (_cpu.Gpr[Gpr.Rcx] == 0)
            {
                return;
            }

            StringIteration(kind, size, sourceBase, step);
            _cpu.Gpr[Gpr.Rcx]--;
            if (conditional && Flag(ZF) != whileEqual)
            {
                return;
            }
        }

        if (_cpu.Gpr[Gpr.Rcx] != 0)
        {
            _cpu.Rip = ins.IP;
        }
    }

    private void StringIteration(StringKind kind, int size, ulong sourceBase, ulong step)
    {
        ref var rsi = ref _cpu.Gpr[Gpr.Rsi];
        ref var rdi = ref _cpu.Gpr[Gpr.Rdi];
        switch (kind)
        {
            case StringKind.Movs:
                Store(rdi, size, Load(rsi + sourceBase, size));
                rsi += step;
                rdi += step;
                break;
            case StringKind.Stos:
                Store(rdi, size, _cpu.Gpr[Gpr.Rax]);
                rdi += step;
                break;
            case StringKind.Lods:
                SetGpr(Gpr.Rax, size, Load(rsi + sourceBase, size));
                rsi += step;
                break;
            case StringKind.Cmps:
                {
                    var a = Load(rsi + sourceBase, size);
                    var b = Load(rdi, size);
                    SubWithFlags(a, b, 0, size);
                    rsi += step;
                    rdi += step;
                    break;
                }

            default:
                SubWithFlags(_cpu.Gpr[Gpr.Rax], Load(rdi, size), 0, size);
                rdi += step;
                break;
        }
    }

    /// <summary>
    /// Forward <c>rep movs</c>/<c>rep stos</c> a page run at a time: both sides are translated once
    /// per page and the bytes move as one block. Used only when the element count fits the pages, the
    /// elements do not straddle a page, and (for movs) source and destination do not overlap
    /// physically, where byte-at-a-time semantics would differ from a block copy.
    /// </summary>
    private bool TryFastRepeat(StringKind kind, int size, ulong sourceBase)
    {
        Span<byte> buffer = stackalloc byte[512];
        var budget = MaxRepIterations;
        while (budget > 0 && _cpu.Gpr[Gpr.Rcx] != 0)
        {
            var rdi = _cpu.Gpr[Gpr.Rdi];
            var src = _cpu.Gpr[Gpr.Rsi] + sourceBase;
            var room = 4096 - (int)(rdi & 0xFFF);
            if (kind == StringKind.Movs)
            {
                room = Math.Min(room, 4096 - (int)(src & 0xFFF));
            }

            var count = (int)Math.Min(_cpu.Gpr[Gpr.Rcx], (ulong)Math.Min(room / size, Math.Min(budget, buffer.Length / size)));
            if (count == 0)
            {
                // An element straddles a page: one slow iteration.
                StringIteration(kind, size, sourceBase, (ulong)size);
                _cpu.Gpr[Gpr.Rcx]--;
                budget--;
                continue;
            }

            var bytes = buffer[..(count * size)];
            if (kind == StringKind.Movs)
            {
                var spa = Translate(src, Access.Read);
                var dpa = Translate(rdi, Access.Write);
                if (dpa > spa && dpa < spa + (ulong)bytes.Length)
                {
                    return budget != MaxRepIterations || SlowRepeatFallback();
                }

                if (!_bus.TryRead(spa, bytes))
                {
                    throw BusError(spa);
                }

                if (!_bus.TryWrite(dpa, bytes))
                {
                    throw BusError(dpa);
                }

                NoteWrite(dpa);
                _cpu.Gpr[Gpr.Rsi] += (ulong)bytes.Length;
            }
            else
            {
                var dpa = Translate(rdi, Access.Write);
                var value = _cpu.Gpr[Gpr.Rax];
                switch (size)
                {
                    case 1: bytes.Fill((byte)value); break;
                    case 2: MemoryMarshal.Cast<byte, ushort>(bytes).Fill((ushort)value); break;
                    case 4: MemoryMarshal.Cast<byte, uint>(bytes).Fill((uint)value); break;
                    default: MemoryMarshal.Cast<byte, ulong>(bytes).Fill(value); break;
                }

                if (!_bus.TryWrite(dpa, bytes))
                {
                    throw BusError(dpa);
                }

                NoteWrite(dpa);
            }

            _cpu.Gpr[Gpr.Rdi] += (ulong)bytes.Length;
            _cpu.Gpr[Gpr.Rcx] -= (ulong)count;
            budget -= count;
        }

        return true;
    }

    // Overlap on the first chunk: let the element-at-a-time loop do the whole step.
    private static bool SlowRepeatFallback() => false;
}
