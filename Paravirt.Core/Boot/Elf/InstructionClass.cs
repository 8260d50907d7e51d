using Iced.Intel;

namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// What a trap-and-emulate hypervisor would see if a deprivileged kernel ran the instruction
/// (the kernel at ring 1 or 3, IOPL 0). See docs/scan.md for the reasoning.
/// </summary>
public enum SensitivityKind
{
    /// <summary>Faults (#GP/#UD) outside ring 0 or above IOPL: the hypervisor catches and emulates it.</summary>
    Privileged,

    /// <summary>
    /// Reads or changes privileged state but does not fault outside ring 0: it silently gives the
    /// wrong answer or does nothing. Popek and Goldberg's condition fails here; this is why x86 could
    /// not be classically virtualized before VT-x/AMD-V, and why Xen PV replaces these with hypercalls.
    /// </summary>
    SensitiveUnprivileged,

    /// <summary>Traps only when the hypervisor turns a control on (CR4.TSD, CPUID faulting, CR4.PCE).</summary>
    Configurable,

    /// <summary>Enters the hypervisor on purpose: <c>syscall</c> (x86-64 PV hypercalls) or <c>vmcall</c>/<c>vmmcall</c> (HVM/PVH).</summary>
    HypervisorEntry,
}

/// <summary>The classes of sensitive x86-64 instructions the scanner counts.</summary>
public enum InstructionClass
{
    InterruptFlag,
    Halt,
    PortIo,
    DescriptorTableLoad,
    ControlRegister,
    DebugRegister,
    Msr,
    TlbInvalidate,
    CacheInvalidate,
    Swapgs,
    SysretSysexit,
    OtherPrivileged,
    DescriptorTableStore,
    Smsw,
    PushfPopf,
    SegmentCheck,
    SegmentRegister,
    Iret,
    FarTransfer,
    SoftwareInterrupt,
    Cpuid,
    Counters,
    Syscall,
    VmCall,
}

/// <summary>Labels, kinds and the classifier for <see cref="InstructionClass"/>.</summary>
public static class InstructionClasses
{
    /// <summary>Every class, in the order the report prints them.</summary>
    public static IReadOnlyList<InstructionClass> All { get; } = Enum.GetValues<InstructionClass>();

    /// <summary>The instructions of a class as one short label ("cli/sti").</summary>
    public static string Label(InstructionClass c) => c switch
    {
        InstructionClass.InterruptFlag => "cli/sti",
        InstructionClass.Halt => "hlt",
        InstructionClass.PortIo => "in/out/ins/outs",
        InstructionClass.DescriptorTableLoad => "lgdt/lidt/lldt/ltr",
        InstructionClass.ControlRegister => "mov CRn/clts/lmsw",
        InstructionClass.DebugRegister => "mov DRn",
        InstructionClass.Msr => "rdmsr/wrmsr",
        InstructionClass.TlbInvalidate => "invlpg/invpcid",
        InstructionClass.CacheInvalidate => "wbinvd/invd",
        InstructionClass.Swapgs => "swapgs",
        InstructionClass.SysretSysexit => "sysret/sysexit",
        InstructionClass.OtherPrivileged => "xsetbv/monitor/mwait",
        InstructionClass.DescriptorTableStore => "sgdt/sidt/sldt/str",
        InstructionClass.Smsw => "smsw",
        InstructionClass.PushfPopf => "pushf/popf",
        InstructionClass.SegmentCheck => "lar/lsl/verr/verw",
        InstructionClass.SegmentRegister => "mov/push/pop Sreg",
        InstructionClass.Iret => "iret",
        InstructionClass.FarTransfer => "far call/jmp/ret",
        InstructionClass.SoftwareInterrupt => "int n/int3/int1/into",
        InstructionClass.Cpuid => "cpuid",
        InstructionClass.Counters => "rdtsc/rdtscp/rdpmc",
        InstructionClass.Syscall => "syscall",
        InstructionClass.VmCall => "vmcall/vmmcall",
        _ => c.ToString(),
    };

    /// <summary>How a trap-and-emulate hypervisor meets the class.</summary>
    public static SensitivityKind Kind(InstructionClass c) => c switch
    {
        InstructionClass.DescriptorTableStore or InstructionClass.Smsw or InstructionClass.PushfPopf
            or InstructionClass.SegmentCheck or InstructionClass.SegmentRegister or InstructionClass.Iret
            or InstructionClass.FarTransfer or InstructionClass.SoftwareInterrupt => SensitivityKind.SensitiveUnprivileged,
        InstructionClass.Cpuid or InstructionClass.Counters => SensitivityKind.Configurable,
        InstructionClass.Syscall or InstructionClass.VmCall => SensitivityKind.HypervisorEntry,
        _ => SensitivityKind.Privileged,
    };

    /// <summary>Short text of a kind for tables.</summary>
    public static string KindLabel(SensitivityKind k) => k switch
    {
        SensitivityKind.Privileged => "privileged (traps)",
        SensitivityKind.SensitiveUnprivileged => "sensitive, no trap",
        SensitivityKind.Configurable => "traps if configured",
        SensitivityKind.HypervisorEntry => "hypervisor entry",
        _ => k.ToString(),
    };

    /// <summary>The class of a decoded instruction, or null when it is not sensitive.</summary>
    internal static InstructionClass? Classify(in Instruction i)
    {
        switch (i.Mnemonic)
        {
            case Mnemonic.Cli or Mnemonic.Sti:
                return InstructionClass.InterruptFlag;
            case Mnemonic.Hlt:
                return InstructionClass.Halt;
            case Mnemonic.In or Mnemonic.Out or Mnemonic.Insb or Mnemonic.Insw or Mnemonic.Insd
                or Mnemonic.Outsb or Mnemonic.Outsw or Mnemonic.Outsd:
                return InstructionClass.PortIo;
            case Mnemonic.Lgdt or Mnemonic.Lidt or Mnemonic.Lldt or Mnemonic.Ltr:
                return InstructionClass.DescriptorTableLoad;
            case Mnemonic.Clts or Mnemonic.Lmsw:
                return InstructionClass.ControlRegister;
            case Mnemonic.Rdmsr or Mnemonic.Wrmsr:
                return InstructionClass.Msr;
            case Mnemonic.Invlpg or Mnemonic.Invpcid:
                return InstructionClass.TlbInvalidate;
            case Mnemonic.Wbinvd or Mnemonic.Invd:
                return InstructionClass.CacheInvalidate;
            case Mnemonic.Swapgs:
                return InstructionClass.Swapgs;
            case Mnemonic.Sysret or Mnemonic.Sysretq or Mnemonic.Sysexit or Mnemonic.Sysexitq:
                return InstructionClass.SysretSysexit;
            case Mnemonic.Xsetbv or Mnemonic.Monitor or Mnemonic.Mwait:
                return InstructionClass.OtherPrivileged;
            case Mnemonic.Sgdt or Mnemonic.Sidt or Mnemonic.Sldt or Mnemonic.Str:
                return InstructionClass.DescriptorTableStore;
            case Mnemonic.Smsw:
                return InstructionClass.Smsw;
            case Mnemonic.Pushf or Mnemonic.Pushfd or Mnemonic.Pushfq or Mnemonic.Popf or Mnemonic.Popfd or Mnemonic.Popfq:
                return InstructionClass.PushfPopf;
            case Mnemonic.Lar or Mnemonic.Lsl or Mnemonic.Verr or Mnemonic.Verw:
                return InstructionClass.SegmentCheck;
            case Mnemonic.Iret or Mnemonic.Iretd or Mnemonic.Iretq:
                return InstructionClass.Iret;
            case Mnemonic.Retf:
                return InstructionClass.FarTransfer;
            case Mnemonic.Call or Mnemonic.Jmp:
                return IsFar(i) ? InstructionClass.FarTransfer : null;
            case Mnemonic.Int or Mnemonic.Int1 or Mnemonic.Int3 or Mnemonic.Into:
                return InstructionClass.SoftwareInterrupt;
            case Mnemonic.Cpuid:
                return InstructionClass.Cpuid;
            case Mnemonic.Rdtsc or Mnemonic.Rdtscp or Mnemonic.Rdpmc:
                return InstructionClass.Counters;
            case Mnemonic.Syscall:
                return InstructionClass.Syscall;
            case Mnemonic.Vmcall or Mnemonic.Vmmcall:
                return InstructionClass.VmCall;
            case Mnemonic.Push or Mnemonic.Pop:
                return i.OpCount == 1 && i.Op0Kind == OpKind.Register && i.Op0Register.IsSegmentRegister() ? InstructionClass.SegmentRegister : null;
            case Mnemonic.Mov:
                return RegisterMove(i);
            default:
                return null;
        }
    }

    private static bool IsFar(in Instruction i) =>
        i.Op0Kind is OpKind.FarBranch16 or OpKind.FarBranch32
        || (i.Op0Kind == OpKind.Memory && i.MemorySize is MemorySize.SegPtr16 or MemorySize.SegPtr32 or MemorySize.SegPtr64);

    private static InstructionClass? RegisterMove(in Instruction i)
    {
        for (var k = 0; k < 2; k++)
        {
            if (i.GetOpKind(k) != OpKind.Register)
            {
                continue;
            }

            var r = i.GetOpRegister(k);
            if (r.IsCR())
            {
                return InstructionClass.ControlRegister;
            }

            if (r.IsDR())
            {
                return InstructionClass.DebugRegister;
            }

            if (r.IsSegmentRegister())
            {
                return InstructionClass.SegmentRegister;
            }
        }

        return null;
    }
}
