using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Pv;

// A secondary vCPU's start from its VCPUOP_initialise context (Xen's arch_set_info_guest for a
// 64-bit PV vCPU), once the memory model has taken its page-table bases.
internal sealed partial class PvCpu
{
    /// <summary>
    /// Loads registers, selectors (RPL forced to 3), rflags (IF on, IOPL off), the trap table, the
    /// kernel stack, segment bases and debug registers from <paramref name="c"/>, in kernel mode
    /// unless VGCF_in_kernel is clear. The callbacks were recorded by VCPUOP_initialise itself.
    /// </summary>
    internal unsafe void LoadContext(in vcpu_guest_context c)
    {
        var r = c.user_regs;
        ref var g = ref State.Gpr;
        g[Gpr.Rax] = r.rax;
        g[Gpr.Rcx] = r.rcx;
        g[Gpr.Rdx] = r.rdx;
        g[Gpr.Rbx] = r.rbx;
        g[Gpr.Rsp] = r.rsp;
        g[Gpr.Rbp] = r.rbp;
        g[Gpr.Rsi] = r.rsi;
        g[Gpr.Rdi] = r.rdi;
        g[Gpr.R8] = r.r8;
        g[Gpr.R9] = r.r9;
        g[Gpr.R10] = r.r10;
        g[Gpr.R11] = r.r11;
        g[Gpr.R12] = r.r12;
        g[Gpr.R13] = r.r13;
        g[Gpr.R14] = r.r14;
        g[Gpr.R15] = r.r15;
        State.Rip = r.rip;
        State.Rflags = (r.rflags & ~(IOPL | VM | RF)) | IF | Reserved1;
        Iopl = r.rflags & IOPL; // arch_set_info_guest: the virtual IOPL comes from the context's eflags (Linux gives IOPL 1)
        State.Cs = FixupSelector(r.cs);
        State.Ss = FixupSelector(r.ss);
        State.Ds = r.ds;
        State.Es = r.es;
        State.Fs = r.fs;
        State.Gs = r.gs;
        for (var v = 0; v < 256; v++)
        {
            var t = c.trap_ctxt[v];
            _traps[v] = new TrapEntry { Address = t.address, Cs = FixupSelector(t.cs), Flags = t.flags };
        }

        KernelSs = FixupSelector((ushort)c.kernel_ss);
        KernelSp = c.kernel_sp;
        State.FsBase = c.fs_base;
        State.GsBase = c.gs_base_kernel;
        State.KernelGsBase = c.gs_base_user;
        for (var i = 0; i < 8; i++)
        {
            if (i is not (4 or 5))
            {
                SetDebugreg(i, c.debugreg[i]);
            }
        }

        if ((c.flags & ArchX86.VGCF_in_kernel) == 0)
        {
            Vcpu.Pv.KernelMode = false;
            (State.GsBase, State.KernelGsBase) = (State.KernelGsBase, State.GsBase);
        }
    }
}
