using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>The 16 general registers, indexed in encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8–r15).</summary>
[InlineArray(16)]
public struct GeneralRegisters
{
    private ulong _element;
}

/// <summary>xmm0–xmm15.</summary>
[InlineArray(16)]
public struct XmmRegisters
{
    private Vector128<byte> _element;
}

/// <summary>Register numbers as x86 encodes them.</summary>
public static class Gpr
{
    public const int Rax = 0, Rcx = 1, Rdx = 2, Rbx = 3, Rsp = 4, Rbp = 5, Rsi = 6, Rdi = 7;
    public const int R8 = 8, R9 = 9, R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15;
}

/// <summary>RFLAGS bits (Intel SDM vol. 1, 3.4.3).</summary>
public static class FlagBits
{
    public const ulong CF = 1UL << 0, Reserved1 = 1UL << 1, PF = 1UL << 2, AF = 1UL << 4, ZF = 1UL << 6, SF = 1UL << 7;
    public const ulong TF = 1UL << 8, IF = 1UL << 9, DF = 1UL << 10, OF = 1UL << 11, IOPL = 3UL << 12, NT = 1UL << 14;
    public const ulong RF = 1UL << 16, VM = 1UL << 17, AC = 1UL << 18, VIF = 1UL << 19, VIP = 1UL << 20, ID = 1UL << 21;

    /// <summary>The six status flags arithmetic instructions write.</summary>
    public const ulong Status = CF | PF | AF | ZF | SF | OF;
}

/// <summary>Control-register, EFER and page-table-entry bits the interpreter acts on.</summary>
public static class ControlBits
{
    public const ulong Cr0PE = 1UL << 0, Cr0MP = 1UL << 1, Cr0EM = 1UL << 2, Cr0TS = 1UL << 3, Cr0WP = 1UL << 16, Cr0PG = 1UL << 31;
    public const ulong Cr4TSD = 1UL << 2, Cr4PAE = 1UL << 5, Cr4PGE = 1UL << 7, Cr4OSFXSR = 1UL << 9;
    public const ulong EferSCE = 1UL << 0, EferLME = 1UL << 8, EferLMA = 1UL << 10, EferNXE = 1UL << 11;
}

/// <summary>
/// One vCPU's architectural state as the interpreter sees it: plain fields, so the machine
/// (the PV model, a test, a debugger) reads and writes them between <see cref="X86Interpreter.Run"/>
/// calls. Segments other than FS and GS have base 0 in 64-bit mode, so only their selectors are kept.
/// </summary>
public sealed class CpuState
{
    public GeneralRegisters Gpr;
    public ulong Rip;

    /// <summary>RFLAGS; bit 1 always reads as 1.</summary>
    public ulong Rflags = FlagBits.Reserved1;

    public ulong FsBase;
    public ulong GsBase;

    /// <summary>IA32_KERNEL_GS_BASE, exchanged with <see cref="GsBase"/> by <c>swapgs</c>.</summary>
    public ulong KernelGsBase;

    /// <summary>CR0. With PG clear the interpreter uses linear addresses as physical ones (flat mode).</summary>
    public ulong Cr0 = ControlBits.Cr0PE | ControlBits.Cr0MP;

    /// <summary>CR2: set to the linear address of every page fault the interpreter reports.</summary>
    public ulong Cr2;
    public ulong Cr3;
    public ulong Cr4 = ControlBits.Cr4PAE | ControlBits.Cr4OSFXSR;
    public ulong Efer = ControlBits.EferLME | ControlBits.EferLMA | ControlBits.EferSCE;

    public XmmRegisters Xmm;
    public uint Mxcsr = 0x1F80;

    /// <summary>The x87 control word (kept for <c>fxsave</c>/<c>fnstcw</c>; the x87 itself is not interpreted).</summary>
    public ushort FpuControlWord = 0x037F;

    /// <summary>IA32_TSC_AUX, returned in ecx by <c>rdtscp</c>.</summary>
    public uint TscAux;

    /// <summary>Current privilege level, 0–3. A PV kernel runs at 3 (deprivileged).</summary>
    public int Cpl;

    public ushort Cs, Ss, Ds, Es, Fs, Gs;
}
