using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;
using Paravirt.Core.Time;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// The CPUID policy a 64-bit PV vCPU on the interpreter sees, for plain <c>cpuid</c> and for the
/// forced-emulation <c>XEN_CPUID</c> alike (as on a host with CPUID faulting, where Xen answers
/// both from the domain's policy). Features are exactly what the interpreter executes; the
/// hypervisor leaves at 0x40000000 follow Xen 4.17's <c>cpuid_hypervisor_leaves</c> for a PV
/// domain without Viridian.
/// </summary>
internal static class PvCpuid
{
    public const uint HypervisorBase = 0x4000_0000;

    /// <summary>XEN_CPUID_MAX_NUM_LEAVES (arch-x86/cpuid.h): the hypervisor leaves are base .. base + 5.</summary>
    public const uint HypervisorLeaves = 5;

    // "GenuineIntel" as ebx, edx, ecx.
    private const uint VendorEbx = 0x756e_6547, VendorEdx = 0x4965_6e69, VendorEcx = 0x6c65_746e;

    // "XenVMMXenVMM" (XEN_CPUID_SIGNATURE_*).
    private const uint XenEbx = 0x566e_6558, XenEcx = 0x6558_4d4d, XenEdx = 0x4d4d_566e;

    // Leaf 1: FPU TSC MSR PAE CX8 CMOV PAT CLFSH FXSR SSE SSE2 (APIC, MTRR, PSE, PGE, MCE, SEP hidden as
    // Xen hides them from PV; no MMX: the interpreter has none); CX16 MOVBE POPCNT HYPERVISOR.
    public const uint Leaf1Edx = (1u << 0) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 24) | (1u << 25) | (1u << 26);
    public const uint Leaf1Ecx = (1u << 13) | (1u << 22) | (1u << 23) | (1u << 31);

    // 0x80000001: LAHF_LM, ABM (LZCNT); SYSCALL, NX, RDTSCP, LM.
    public const uint Ext1Ecx = (1u << 0) | (1u << 5);
    public const uint Ext1Edx = (1u << 11) | (1u << 20) | (1u << 27) | (1u << 29);

    public static CpuidResult Get(Vcpu vcpu, uint leaf, uint subleaf)
    {
        switch (leaf)
        {
            case 0:
                return new CpuidResult(7, VendorEbx, VendorEcx, VendorEdx);
            case 1:
                // Family 6; CLFLUSH line 8 qwords; one logical processor per package; initial APIC id 0 on
                // every vCPU (guest_cpuid puts the vCPU id there for HVM only).
                return new CpuidResult(0x0003_06C3, (8u << 8) | (1u << 16), Leaf1Ecx, Leaf1Edx);
            case 0x8000_0000:
                return new CpuidResult(0x8000_0008, VendorEbx, VendorEcx, VendorEdx);
            case 0x8000_0001:
                return new CpuidResult(0, 0, Ext1Ecx, Ext1Edx);
            case 0x8000_0008:
                return new CpuidResult((48u << 8) | MachineAddressBits(vcpu), 0, 0, 0);
        }

        if (leaf - HypervisorBase <= HypervisorLeaves)
        {
            return Hypervisor(vcpu, leaf - HypervisorBase, subleaf);
        }

        return default; // leaves 2..7 and the rest: nothing to report
    }

    private static CpuidResult Hypervisor(Vcpu vcpu, uint index, uint subleaf)
    {
        switch (index)
        {
            case 0:
                return new CpuidResult(HypervisorBase + HypervisorLeaves, XenEbx, XenEcx, XenEdx);
            case 1:
                return new CpuidResult((uint)((Domains.Hypervisor.MajorVersion << 16) | Domains.Hypervisor.MinorVersion), 0, 0, 0);
            case 2:
                // One hypercall page, its MSR at 0x40000000; ecx: XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD
                // (bit 0, arch-x86/cpuid.h), which mmu_update implements.
                return new CpuidResult(1, HypervisorBase, 1u << 0, 0);
            case 3:
                {
                    var clock = vcpu.Domain.Hypervisor.Clock;
                    var khz = (uint)(Clock.TscFrequency / 1000);
                    return subleaf switch
                    {
                        // Not emulated (bit 0 clear), the TSC is safe (bit 1) and rdtscp exists (bit 2); tsc_mode 0 (default).
                        0 => new CpuidResult((1u << 1) | (1u << 2), 0, khz, 0),
                        1 => new CpuidResult(0, 0, clock.TscToSystemMul, (uint)(int)clock.TscShift),
                        2 => new CpuidResult(khz, 0, 0, 0),
                        _ => default,
                    };
                }

            case 5:
                // PV-specific: ebx = the machine address width (flsl of the highest MFN + PAGE_SHIFT).
                return subleaf == 0 ? new CpuidResult(0, MachineAddressBits(vcpu), 0, 0) : default;
            default:
                return default; // leaf 4 is HVM-only
        }
    }

    private static uint MachineAddressBits(Vcpu vcpu)
    {
        var frames = (ulong)vcpu.Domain.Hypervisor.Frames.TotalFrames;
        return (uint)(64 - ulong.LeadingZeroCount(Math.Max(frames - 1, 1))) + 12;
    }
}
