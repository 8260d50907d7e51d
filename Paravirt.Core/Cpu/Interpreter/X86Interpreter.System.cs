using Iced.Intel;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Interpreter;

// System instructions. A PV kernel runs at CPL 3, where the privileged ones raise #GP(0): the
// machine gets the first look (IInterpreterPlatform.TryEmulatePrivileged) so it can emulate the few
// Xen emulates for PV guests. At CPL 0 (flat tests, or a future HVM-like mode) the interpreter
// performs the ones it keeps state for.
public sealed partial class X86Interpreter
{
    private const uint MsrEfer = 0xC000_0080, MsrFsBase = 0xC000_0100, MsrGsBase = 0xC000_0101, MsrKernelGsBase = 0xC000_0102, MsrTscAux = 0xC000_0103;

    private void ExecuteSystemOrSse(in Instruction ins)
    {
        switch (ins.Mnemonic)
        {
            case Mnemonic.Cpuid:
                {
                    if (_platform.CpuidFaults)
                    {
                        throw GeneralProtection();
                    }

                    var r = _platform.Cpuid((uint)_cpu.Gpr[Gpr.Rax], (uint)_cpu.Gpr[Gpr.Rcx]);
                    _cpu.Gpr[Gpr.Rax] = r.Eax;
                    _cpu.Gpr[Gpr.Rbx] = r.Ebx;
                    _cpu.Gpr[Gpr.Rcx] = r.Ecx;
                    _cpu.Gpr[Gpr.Rdx] = r.Edx;
                    break;
                }

            case Mnemonic.Rdtsc:
            case Mnemonic.Rdtscp:
                {
                    if ((_cpu.Cr4 & ControlBits.Cr4TSD) != 0 && _cpu.Cpl != 0)
                    {
                        PrivilegedOrGp(in ins);
                        break;
                    }

                    var tsc = _platform.ReadTsc();
                    _cpu.Gpr[Gpr.Rax] = (uint)tsc;
                    _cpu.Gpr[Gpr.Rdx] = tsc >> 32;
                    if (ins.Mnemonic == Mnemonic.Rdtscp)
                    {
                        _cpu.Gpr[Gpr.Rcx] = _cpu.TscAux;
                    }

                    break;
                }

            case Mnemonic.Syscall:
                if ((_cpu.Efer & ControlBits.EferSCE) == 0)
                {
                    throw InvalidOpcode();
                }

                Exit(ExitReason.Syscall);
                break;
            case Mnemonic.Int3:
                throw Raise(Vectors.BP, trap: true);
            case Mnemonic.Int1:
                throw Raise(Vectors.DB, trap: true);
            case Mnemonic.Int:
                {
                    var e = Raise(ins.Immediate8, trap: true);
                    e.IsSoftware = true;
                    throw e;
                }

            case Mnemonic.Ud0:
            case Mnemonic.Ud1:
            case Mnemonic.Ud2:
            case Mnemonic.INVALID:
                throw InvalidOpcode();
            case Mnemonic.Pushf:
            case Mnemonic.Pushfq:
                // VM and RF are never pushed (SDM: PUSHF).
                Push(_cpu.Rflags & ~(RF | VM), ins.Mnemonic == Mnemonic.Pushf ? 2 : 8);
                break;
            case Mnemonic.Popf:
            case Mnemonic.Popfq:
                Popf(ins.Mnemonic == Mnemonic.Popf ? 2 : 8);
                break;
            case Mnemonic.Cli:
            case Mnemonic.Sti:
                // Allowed when CPL <= IOPL; otherwise #GP(0) (no VME/PVI in 64-bit mode).
                if (_cpu.Cpl > (int)((_cpu.Rflags & IOPL) >> 12))
                {
                    PrivilegedOrGp(in ins);
                    break;
                }

                _cpu.Rflags = ins.Mnemonic == Mnemonic.Cli ? _cpu.Rflags & ~IF : _cpu.Rflags | IF;
                break;
            case Mnemonic.Hlt:
                if (_cpu.Cpl != 0)
                {
                    PrivilegedOrGp(in ins);
                    break;
                }

                Exit(ExitReason.Halt);
                break;
            case Mnemonic.Swapgs:
                if (_cpu.Cpl != 0)
                {
                    PrivilegedOrGp(in ins);
                    break;
                }

                (_cpu.GsBase, _cpu.KernelGsBase) = (_cpu.KernelGsBase, _cpu.GsBase);
                break;
            case Mnemonic.Invlpg:
                if (_cpu.Cpl != 0)
                {
                    PrivilegedOrGp(in ins);
                    break;
                }

                _mmu.Invalidate(Ea(in ins));
                _endBlock = true;
                break;
            case Mnemonic.Rdmsr:
            case Mnemonic.Wrmsr:
                Msr(in ins);
                break;
            case Mnemonic.Clts:
                if (_cpu.Cpl != 0)
                {
                    PrivilegedOrGp(in ins);
                    break;
                }

                _cpu.Cr0 &= ~ControlBits.Cr0TS;
                break;
            case Mnemonic.Wbinvd:
            case Mnemonic.Invd:
                if (_cpu.Cpl != 0)
                {
                    PrivilegedOrGp(in ins);
                }

                break;
            case Mnemonic.In:
            case Mnemonic.Out:
            case Mnemonic.Insb:
            case Mnemonic.Insw:
            case Mnemonic.Insd:
            case Mnemonic.Outsb:
            case Mnemonic.Outsw:
            case Mnemonic.Outsd:
            case Mnemonic.Lgdt:
            case Mnemonic.Lidt:
            case Mnemonic.Lldt:
            case Mnemonic.Ltr:
            case Mnemonic.Lmsw:
            case Mnemonic.Iret:
            case Mnemonic.Iretd:
            case Mnemonic.Iretq:
            case Mnemonic.Sysret:
            case Mnemonic.Sysretq:
            case Mnemonic.Sysexit:
            case Mnemonic.Sysexitq:
            case Mnemonic.Rdpmc:
            case Mnemonic.Invpcid:
            case Mnemonic.Xsetbv:
                // No port I/O, descriptor tables or privilege transitions here: the machine emulates them or the guest gets #GP(0).
                PrivilegedOrGp(in ins);
                break;
            default:
                ExecuteSse(in ins);
                break;
        }
    }

    /// <summary>Ends the run after this instruction with <paramref name="reason"/>; rip is already past it.</summary>
    private void Exit(ExitReason reason)
    {
        _pendingExit = reason;
        _endBlock = true;
    }

    /// <summary>The #GP(0) path of a privileged instruction: the machine may emulate it (then rip moves past it).</summary>
    private void PrivilegedOrGp(in Instruction ins)
    {
        var rip = _cpu.Rip;
        _cpu.Rip = ins.IP;
        if (_platform.TryEmulatePrivileged(_cpu, in ins))
        {
            if (_cpu.Rip == ins.IP)
            {
                _cpu.Rip = rip;
            }

            // The machine may have changed anything (CR3, CPL, memory): decode and translate afresh.
            _mmu.FlushAll();
            _endBlock = true;
            return;
        }

        throw GeneralProtection();
    }

    private void Popf(int size)
    {
        var value = Pop(size);
        var iopl = (int)((_cpu.Rflags & IOPL) >> 12);
        var writable = CF | PF | AF | ZF | SF | TF | DF | OF | NT | AC | ID | IF | IOPL;
        if (_cpu.Cpl != 0)
        {
            // IOPL changes only at CPL 0; IF only when CPL <= IOPL (silently kept otherwise, no fault).
            writable &= ~IOPL;
            if (_cpu.Cpl > iopl)
            {
                writable &= ~IF;
            }
        }

        if (size == 2)
        {
            writable &= 0xFFFF;
        }

        _cpu.Rflags = (_cpu.Rflags & ~writable & ~RF) | (value & writable) | Reserved1;
    }

    private void MoveToSpecial(in Instruction ins)
    {
        var r = ins.Op0Register;
        if (r is >= Register.CR0 and <= Register.CR15 && _cpu.Cpl == 0)
        {
            var value = Reg(ins.Op1Register);
            switch (r)
            {
                case Register.CR0:
                    _cpu.Cr0 = value | ControlBits.Cr0PE;
                    _mmu.FlushAll();
                    break;
                case Register.CR2:
                    _cpu.Cr2 = value;
                    break;
                case Register.CR3:
                    _cpu.Cr3 = value;
                    _mmu.FlushNonGlobal();
                    break;
                case Register.CR4:
                    _cpu.Cr4 = value;
                    _mmu.FlushAll();
                    break;
                case Register.CR8:
                    break;
                default:
                    throw InvalidOpcode();
            }

            _endBlock = true;
            return;
        }

        // mov to a segment register, a debug register, or a control register at CPL > 0.
        PrivilegedOrGp(in ins);
    }

    private void MoveFromSpecial(in Instruction ins)
    {
        var r = ins.Op1Register;
        ulong value;
        switch (r)
        {
            case Register.ES: value = _cpu.Es; break;
            case Register.CS: value = _cpu.Cs; break;
            case Register.SS: value = _cpu.Ss; break;
            case Register.DS: value = _cpu.Ds; break;
            case Register.FS: value = _cpu.Fs; break;
            case Register.GS: value = _cpu.Gs; break;
            case Register.CR0 when _cpu.Cpl == 0: value = _cpu.Cr0; break;
            case Register.CR2 when _cpu.Cpl == 0: value = _cpu.Cr2; break;
            case Register.CR3 when _cpu.Cpl == 0: value = _cpu.Cr3; break;
            case Register.CR4 when _cpu.Cpl == 0: value = _cpu.Cr4; break;
            case Register.CR8 when _cpu.Cpl == 0: value = 0; break;
            default:
                PrivilegedOrGp(in ins);
                return;
        }

        // A selector stored to memory is 16 bits; to a register it is zero-extended.
        if (ins.Op0Kind == OpKind.Register)
        {
            SetReg(ins.Op0Register, value);
        }
        else
        {
            Store(Ea(in ins), 2, value);
        }
    }

    private void Msr(in Instruction ins)
    {
        if (_cpu.Cpl != 0)
        {
            PrivilegedOrGp(in ins);
            return;
        }

        var msr = (uint)_cpu.Gpr[Gpr.Rcx];
        if (ins.Mnemonic == Mnemonic.Rdmsr)
        {
            ulong value;
            switch (msr)
            {
                case MsrEfer: value = _cpu.Efer; break;
                case MsrFsBase: value = _cpu.FsBase; break;
                case MsrGsBase: value = _cpu.GsBase; break;
                case MsrKernelGsBase: value = _cpu.KernelGsBase; break;
                case MsrTscAux: value = _cpu.TscAux; break;
                default:
                    PrivilegedOrGp(in ins);
                    return;
            }

            _cpu.Gpr[Gpr.Rax] = (uint)value;
            _cpu.Gpr[Gpr.Rdx] = value >> 32;
            return;
        }

        var v = (_cpu.Gpr[Gpr.Rdx] << 32) | (uint)_cpu.Gpr[Gpr.Rax];
        switch (msr)
        {
            case MsrEfer:
                _cpu.Efer = v;
                _mmu.FlushAll();
                _endBlock = true;
                break;
            case MsrFsBase: _cpu.FsBase = v; break;
            case MsrGsBase: _cpu.GsBase = v; break;
            case MsrKernelGsBase: _cpu.KernelGsBase = v; break;
            case MsrTscAux: _cpu.TscAux = (uint)v; break;
            default:
                PrivilegedOrGp(in ins);
                break;
        }
    }
}
