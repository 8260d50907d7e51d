using Iced.Intel;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>The four registers <c>cpuid</c> returns.</summary>
public readonly record struct CpuidResult(uint Eax, uint Ebx, uint Ecx, uint Edx);

/// <summary>
/// What the interpreter asks of the machine beyond memory: the CPUID policy, the clock, the
/// privileged instructions it may emulate, and a log for gaps. The second of the two interfaces
/// (with <see cref="IGuestMemoryBus"/>) that separate the interpreter from any hypervisor.
/// </summary>
public interface IInterpreterPlatform
{
    /// <summary><c>cpuid</c> with eax = <paramref name="leaf"/>, ecx = <paramref name="subleaf"/>: the machine's CPUID policy.</summary>
    CpuidResult Cpuid(uint leaf, uint subleaf);

    /// <summary>CPUID faulting is on for the current mode: <c>cpuid</c> raises #GP(0) instead of answering.</summary>
    bool CpuidFaults => false;

    /// <summary>The guest's time stamp counter for <c>rdtsc</c>/<c>rdtscp</c>.</summary>
    ulong ReadTsc();

    /// <summary>
    /// A privileged instruction (or one the interpreter leaves to the machine, such as <c>rdmsr</c>
    /// of an MSR it does not keep) is about to raise #GP(0). Return true after emulating it on
    /// <paramref name="cpu"/> (the interpreter then steps rip past it), false to let #GP(0) reach the guest.
    /// </summary>
    bool TryEmulatePrivileged(CpuState cpu, in Instruction instruction);

    /// <summary>The interpreter met an instruction it does not implement and raised #UD; called once per mnemonic.</summary>
    void LogUnimplemented(string mnemonic);
}
