namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>Why <see cref="X86Interpreter.Run"/> returned.</summary>
public enum ExitReason
{
    /// <summary>The instruction budget is spent; the vCPU can run again at once.</summary>
    SliceDone,

    /// <summary><c>syscall</c> executed (a Xen PV hypercall or system call); rip is past it, rcx and r11 untouched.</summary>
    Syscall,

    /// <summary>An exception the guest must handle (<see cref="CpuExit.Vector"/>); rip is at the faulting instruction, or past it for traps (#BP, <c>int n</c>).</summary>
    Exception,

    /// <summary><c>hlt</c> at CPL 0; rip is past it.</summary>
    Halt,

    /// <summary>A physical address the bus does not back (<see cref="CpuExit.Address"/>): the machine's bug or a hostile page table; rip is at the instruction.</summary>
    BusError,
}

/// <summary>x86 exception vectors.</summary>
public static class Vectors
{
    public const int DE = 0, DB = 1, BP = 3, OF = 4, UD = 6, NM = 7, DF = 8, TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, XM = 19;
}

/// <summary>Page-fault error-code bits (Intel SDM vol. 3, 4.7).</summary>
public static class PageFaultErrorCode
{
    public const uint Present = 1, Write = 2, User = 4, Reserved = 8, InstructionFetch = 16;
}

/// <summary>The result of <see cref="X86Interpreter.Run"/>.</summary>
/// <param name="Reason">Why the run stopped.</param>
/// <param name="Instructions">Instructions retired in this run (a faulting instruction does not count).</param>
/// <param name="Vector">For <see cref="ExitReason.Exception"/>: the vector.</param>
/// <param name="ErrorCode">For exceptions that push one (#GP, #PF, …): the error code, else null.</param>
/// <param name="Address">For #PF: the faulting linear address (also in CR2); for <see cref="ExitReason.BusError"/>: the physical address.</param>
/// <param name="SoftwareInterrupt">For <see cref="ExitReason.Exception"/>: raised by <c>int n</c> (rip past it), not by a fault or by <c>int3</c>/<c>int1</c>.</param>
public readonly record struct CpuExit(ExitReason Reason, long Instructions, int Vector = 0, uint? ErrorCode = null, ulong Address = 0, bool SoftwareInterrupt = false)
{
    public override string ToString() => Reason switch
    {
        ExitReason.Exception => $"{(SoftwareInterrupt ? "int " : "exception ")}{Vector}{(ErrorCode is { } e ? $" error 0x{e:x}" : "")}{(Vector == Vectors.PF ? $" at 0x{Address:x}" : "")} after {Instructions} instructions",
        ExitReason.BusError => $"bus error at physical 0x{Address:x} after {Instructions} instructions",
        _ => $"{Reason} after {Instructions} instructions",
    };
}
