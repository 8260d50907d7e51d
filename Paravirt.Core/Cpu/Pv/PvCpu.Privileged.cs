using System.Runtime.InteropServices;
using Iced.Intel;
using Microsoft.Extensions.Logging;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Pv;

// The privileged instructions Xen emulates for a 64-bit PV guest (pv/emul-priv-op.c): only in guest
// kernel mode (x86_emulate's mode_ring0() sees a faked DPL 0 there), except the IOPL-checked
// cli/sti and port I/O. Everything else stays #GP(0), which the guest gets through its trap table.
internal sealed partial class PvCpu
{
    public const uint MsrApicBase = 0x1B, MsrTsc = 0x10, MsrPat = 0x277, MsrEfer = 0xC000_0080;
    public const uint MsrFsBase = 0xC000_0100, MsrGsBase = 0xC000_0101, MsrShadowGsBase = 0xC000_0102, MsrTscAux = 0xC000_0103;
    public const uint MsrPlatformId = 0x17, MsrFeatureControl = 0x3A, MsrUcodeRev = 0x8B, MsrPlatformInfo = 0xCE;
    public const uint MsrMperf = 0xE7, MsrAperf = 0xE8, MsrMiscFeaturesEnables = 0x140, MsrPerfStatus = 0x198, MsrPerfCtl = 0x199;
    public const uint MsrThermControl = 0x19A, MsrThermStatus = 0x19C, MsrMiscEnable = 0x1A0, MsrEnergyPerfBias = 0x1B0;
    public const uint MsrPerfCapabilities = 0x345, MsrHypercallPage = 0x4000_0000;

    /// <summary>IA32_FEATURE_CONTROL_LOCK: locked, no VMX, no LMCE.</summary>
    public const ulong FeatureControlLock = 1;

    /// <summary>MSR_PLATFORM_INFO bit 31 and MSR_MISC_FEATURES_ENABLES bit 0: CPUID faulting.</summary>
    public const ulong PlatformInfoCpuidFaulting = 1UL << 31, MiscFeaturesCpuidFaulting = 1;

    /// <summary>
    /// guest_misc_enable of the virtual CPU's MISC_ENABLE (fast strings): Xen clears PERF_AVAIL and
    /// MONITOR_ENABLE and sets BTS_UNAVAIL, PEBS_UNAVAIL and XTPR_DISABLE.
    /// </summary>
    public const ulong GuestMiscEnable = 1 | (1UL << 11) | (1UL << 12) | (1UL << 23);

    /// <summary>Xen's XEN_MSR_PAT: the PAT every PV guest reads.</summary>
    public const ulong XenMsrPat = 0x0005_0100_0704_0406;

    /// <summary>APIC_BASE_ENABLE | APIC_DEFAULT_PHYS_BASE (Linux PV reads it); BSP added on vCPU 0.</summary>
    public const ulong ApicBase = 0xFEE0_0000 | (1UL << 11);

    // DR6/DR7 reserved bits (asm/debugreg.h).
    private const ulong Dr6ReservedOne = 0xFFFF_0FF0, Dr6ReservedZero = ~0xFFFF_EFFFUL;
    private const ulong Dr7ReservedOne = 0x400, Dr7ReservedZero = ~0xFFFF_27FFUL, Dr7GeneralDetect = 0x2000, Dr7Active = 0xFF;

    private readonly ulong[] _dr = new ulong[4];
    private ulong _dr6 = Dr6ReservedOne;
    private ulong _dr7 = Dr7ReservedOne;

    public bool TryEmulatePrivileged(CpuState cpu, in Instruction instruction)
    {
        var kernel = Vcpu.Pv.KernelMode;
        switch (instruction.Mnemonic)
        {
            case Mnemonic.Cli:
            case Mnemonic.Sti:
                // With enough virtual IOPL Xen lets them pass as no-ops (it never touches the upcall mask); else #GP.
                return IoplOk(kernel);
            case Mnemonic.In:
                if (!IoplOk(kernel) || instruction.Op0Kind != OpKind.Register)
                {
                    return false;
                }

                // No I/O ports are granted to a domU: reads float high (guest_io_read), writes vanish.
                WriteRegister(instruction.Op0Register, ulong.MaxValue);
                return true;
            case Mnemonic.Out:
                return IoplOk(kernel);
            case Mnemonic.Iretq:
                return SamePrivilegeIret();
            case Mnemonic.Mov when instruction.Op0Kind == OpKind.Register && instruction.Op0Register is Register.ES or Register.SS or Register.DS or Register.FS or Register.GS:
                // Not privileged on hardware: the interpreter hands segment loads to the machine, which owns the descriptors.
                return instruction.Op1Kind == OpKind.Register && LoadSegment(instruction.Op0Register, (ushort)ReadRegister(instruction.Op1Register));
        }

        if (!kernel)
        {
            return false;
        }

        switch (instruction.Mnemonic)
        {
            case Mnemonic.Mov:
                return EmulateMov(in instruction);
            case Mnemonic.Clts:
                FpuTaskswitch(false);
                return true;
            case Mnemonic.Wbinvd:
                return true; // an unprivileged domain's wbinvd is ignored
            case Mnemonic.Rdmsr:
                return ReadMsr((uint)State.Gpr[Gpr.Rcx]);
            case Mnemonic.Wrmsr:
                return WriteMsr((uint)State.Gpr[Gpr.Rcx], (State.Gpr[Gpr.Rdx] << 32) | (uint)State.Gpr[Gpr.Rax]);
            case Mnemonic.Rdtsc:
            case Mnemonic.Rdtscp:
                {
                    // Reached only with the guest's CR4.TSD set: kernel mode may still read the TSC.
                    var tsc = ReadTsc();
                    State.Gpr[Gpr.Rax] = (uint)tsc;
                    State.Gpr[Gpr.Rdx] = tsc >> 32;
                    if (instruction.Mnemonic == Mnemonic.Rdtscp)
                    {
                        State.Gpr[Gpr.Rcx] = State.TscAux;
                    }

                    return true;
                }

            default:
                return false;
        }
    }

    /// <summary>
    /// A data or stack segment load at the guest's ring 3, as the CPU checks it against Xen's GDT:
    /// the null selector (not for SS), Xen's flat ring-3 selectors, or an RPL-3 selector inside the
    /// guest's own GDT (set_gdt; the descriptor itself is not interpreted). In 64-bit mode the base
    /// is 0 for all of them; loading FS or GS therefore zeroes that base, as on hardware.
    /// </summary>
    private bool LoadSegment(Register segment, ushort selector)
    {
        var flat = selector is ArchX86.FLAT_RING3_DS32 or ArchX86.FLAT_RING3_CS64 or ArchX86.FLAT_RING3_CS32;
        var guest = (selector & 3) == 3 && (selector & 4) == 0 && (selector >> 3) is > 0 and var index && index < GdtEntries;
        var ok = selector < 4 ? segment != Register.SS : flat || guest;
        if (!ok)
        {
            return false;
        }

        switch (segment)
        {
            case Register.ES: State.Es = selector; break;
            case Register.SS: State.Ss = selector; break;
            case Register.DS: State.Ds = selector; break;
            case Register.FS:
                State.Fs = selector;
                State.FsBase = 0;
                break;
            default:
                State.Gs = selector;
                State.GsBase = 0;
                break;
        }

        return true;
    }

    /// <summary>
    /// <c>iretq</c> at the guest's ring 3 to ring 3 (Linux's <c>iret_to_self</c> in <c>sync_core</c>):
    /// hardware runs it natively under Xen, so it is executed here as the CPU would. It pops rip, cs,
    /// rflags, rsp and ss; cs and ss must be ring-3 selectors the CPU would accept (Xen's flat ones or
    /// the guest's GDT; 64-bit code only), rip canonical, NT clear. At CPL 3 with the real IOPL 0 the
    /// popped IF, IOPL, VIF and VIP are ignored: the guest's interrupt flag stays its upcall mask.
    /// A return to another privilege level is #GP(selector), as on the CPU; a fault reading the
    /// frame is a #PF at the instruction.
    /// </summary>
    private bool SamePrivilegeIret()
    {
        if ((State.Rflags & NT) != 0)
        {
            return false;
        }

        Span<ulong> frame = stackalloc ulong[5];
        var rsp = State.Gpr[Gpr.Rsp];
        if (!Interpreter.TryReadLinear(rsp, MemoryMarshal.AsBytes(frame), out var fault))
        {
            PageFault(fault, 0);
            return true;
        }

        var (rip, cs, rflags, newRsp, ss) = (frame[0], (ushort)frame[1], frame[2], frame[3], (ushort)frame[4]);
        var csOk = cs == ArchX86.FLAT_RING3_CS64 || IsGuestGdtSelector(cs);
        var ssOk = ss == ArchX86.FLAT_RING3_DS32 || IsGuestGdtSelector(ss);
        if ((cs & 3) != 3 || !csOk)
        {
            InjectException(Vectors.GP, (uint)(cs & ~3));
            return true;
        }

        if ((ss & 3) != 3 || !ssOk)
        {
            InjectException(Vectors.GP, (uint)(ss & ~3));
            return true;
        }

        if ((long)rip >> 47 is not (0 or -1))
        {
            return false;
        }

        const ulong Kept = IF | IOPL | VIF | VIP | VM;
        State.Rip = rip;
        State.Cs = cs;
        State.Rflags = (State.Rflags & Kept) | (rflags & ~Kept & 0x3F_7FD5) | Reserved1;
        State.Gpr[Gpr.Rsp] = newRsp;
        State.Ss = ss;

        // iretq serializes: sync_core's purpose is to make this CPU fetch code another CPU wrote
        // (text_poke on each CPU), so every decoded block is checked against memory before it runs again.
        Interpreter.SerializeCodeFetch();
        return true;
    }

    private bool IsGuestGdtSelector(ushort selector) =>
        (selector & 4) == 0 && (selector >> 3) is > 0 and var index && index < GdtEntries;

    /// <summary>iopl_ok: guest kernel mode counts as ring 1 (ring 0 with architectural IOPL), user mode as ring 3.</summary>
    private bool IoplOk(bool kernel)
    {
        var cpl = kernel ? ((Domain.VmAssist & (1UL << Xen.VMASST_TYPE_architectural_iopl)) != 0 ? 0UL : 1UL) : 3UL;
        return cpl <= (Iopl >> 12);
    }

    private bool EmulateMov(in Instruction ins)
    {
        if (ins.Op0Kind != OpKind.Register || ins.Op1Kind != OpKind.Register)
        {
            return false;
        }

        var to = ins.Op0Register;
        var from = ins.Op1Register;
        if (from is >= Register.CR0 and <= Register.CR15)
        {
            ulong value;
            switch (from)
            {
                case Register.CR0: value = (HostCr0 & ~ControlBits.Cr0TS) | (TaskSwitched ? ControlBits.Cr0TS : 0); break;
                case Register.CR2: value = Cr2; break;
                case Register.CR3: value = Vcpu.Pv.KernelBaseMfn << 12; break; // xen_pfn_to_cr3(guest_table): an MFN for classic PV
                case Register.CR4: value = Cr4; break;
                default: return false;
            }

            WriteRegister(to, value);
            return true;
        }

        if (to is >= Register.CR0 and <= Register.CR15)
        {
            var value = ReadRegister(from);
            switch (to)
            {
                case Register.CR0:
                    if (((value ^ HostCr0) & ~ControlBits.Cr0TS) != 0)
                    {
                        AddLog($"d{Domain.Id}v{Vcpu.Id}: attempt to change unmodifiable CR0 flags (0x{value:x})");
                        return false;
                    }

                    FpuTaskswitch((value & ControlBits.Cr0TS) != 0);
                    return true;
                case Register.CR2:
                    SetCr2(value);
                    return true;
                case Register.CR3:
                    {
                        if (Options.NewGuestCr3 is not { } newBase || newBase(Vcpu, value >> 12) != 0)
                        {
                            return false;
                        }

                        State.Cr3 = Vcpu.Pv.CurrentBaseMfn << 12; // the interpreter flushes its TLB after an emulation
                        Vcpu.Pv.TakeTlbFlushRequest();
                        return true;
                    }

                case Register.CR4:
                    SetCr4(value);
                    return true;
                default:
                    return false;
            }
        }

        if (from is >= Register.DR0 and <= Register.DR15)
        {
            var reg = from - Register.DR0;
            if (reg > 7)
            {
                return false;
            }

            WriteRegister(to, (ulong)GetDebugreg(reg));
            return true;
        }

        if (to is >= Register.DR0 and <= Register.DR15)
        {
            return SetDebugreg(to - Register.DR0, ReadRegister(from)) == 0;
        }

        return false;
    }

    /// <summary>pv_fixup_guest_cr4: the guest controls TSD (DE, FSGSBASE and OSXSAVE are outside the policy); it sees Xen's PAE, MCE, OSFXSR, OSXMMEXCPT.</summary>
    private void SetCr4(ulong value)
    {
        Cr4 = (value & ControlBits.Cr4TSD) | VisibleCr4;
        State.Cr4 = (State.Cr4 & ~ControlBits.Cr4TSD) | (value & ControlBits.Cr4TSD);
    }

    /// <summary>
    /// rdmsr in guest kernel mode: Xen 4.17's guest_rdmsr, then the PV read_msr, for an Intel policy
    /// without the MCE, SPEC_CTRL, ARCH_CAPS, XSAVES, x2APIC or vPMU features (vPMU off, as Xen's
    /// default). MSRs whose value Xen forwards from the host (PLATFORM_ID, UCODE_REV, MISC_ENABLE's
    /// host bits) answer a fixed virtual CPU's value. Everything else is #GP, as Xen's default without
    /// msr_relaxed.
    /// </summary>
    private bool ReadMsr(uint msr)
    {
        ulong value;
        switch (msr)
        {
            case MsrApicBase: value = ApicBase | (Vcpu.Id == 0 ? 1UL << 8 : 0); break;
            case MsrFsBase: value = State.FsBase; break;
            case MsrGsBase: value = State.GsBase; break;
            case MsrShadowGsBase: value = State.KernelGsBase; break; // gs_base_user, inactive in kernel mode
            case MsrTsc: value = ReadTsc(); break;
            case MsrEfer: value = State.Efer; break;
            case MsrPat: value = XenMsrPat; break;
            case MsrPlatformId: value = 0; break;
            case MsrFeatureControl: value = FeatureControlLock; break;
            case MsrUcodeRev: value = 0; break; // no microcode was loaded into the virtual CPU
            case MsrPlatformInfo: value = PlatformInfoCpuidFaulting; break; // Xen always offers PV guests CPUID faulting
            case MsrMiscFeaturesEnables: value = CpuidFaulting ? MiscFeaturesCpuidFaulting : 0; break;
            case MsrPerfStatus:
            case MsrPerfCtl:
            case MsrThermStatus:
            case MsrPerfCapabilities:
            case MsrHypercallPage: // write-only: reads as zero
                value = 0;
                break;
            case MsrMiscEnable: value = GuestMiscEnable; break;
            case MsrTscAux: value = State.TscAux; break;
            case var _ when IsPerfCounterMsr(msr):
                value = 0; // vPMU off: reads as zero (vpmu_do_rdmsr's nop)
                break;
            default:
                AddLog($"d{Domain.Id}v{Vcpu.Id}: rdmsr 0x{msr:x} unimplemented (#GP)", LogLevel.Information);
                return false;
        }

        State.Gpr[Gpr.Rax] = (uint)value;
        State.Gpr[Gpr.Rdx] = value >> 32;
        return true;
    }

    /// <summary>wrmsr in guest kernel mode: Xen 4.17's guest_wrmsr, then the PV write_msr (see <see cref="ReadMsr"/>).</summary>
    private bool WriteMsr(uint msr, ulong value)
    {
        switch (msr)
        {
            case MsrFsBase:
            case MsrGsBase:
            case MsrShadowGsBase:
                if ((long)value >> 47 is not (0 or -1))
                {
                    return false;
                }

                if (msr == MsrFsBase)
                {
                    State.FsBase = value;
                }
                else if (msr == MsrGsBase)
                {
                    State.GsBase = value;
                }
                else
                {
                    State.KernelGsBase = value;
                }

                return true;
            case MsrEfer:
                return value == State.Efer; // Linux writes back the value it read; any change is refused
            case MsrUcodeRev:
                return value == 0; // Intel's "write 0, cpuid, read" sequence
            case MsrMiscFeaturesEnables:
                if ((value & ~MiscFeaturesCpuidFaulting) != 0)
                {
                    return false;
                }

                CpuidFaulting = value != 0;
                return true;
            case MsrTscAux:
                if (value > uint.MaxValue)
                {
                    return false;
                }

                State.TscAux = (uint)value;
                return true;
            case MsrPerfCtl: // write-discard, as the RAZ read
            case MsrMperf:
            case MsrAperf:
            case MsrThermControl:
            case MsrEnergyPerfBias:
                return true;
            case MsrMiscEnable:
                if (value != GuestMiscEnable)
                {
                    // Xen warns "Domain attempted WRMSR" and ignores it, without a fault.
                    AddLog($"d{Domain.Id}v{Vcpu.Id}: wrmsr 0x{msr:x} from 0x{GuestMiscEnable:x} to 0x{value:x} ignored", LogLevel.Information);
                }

                return true;
            case var _ when IsPerfCounterMsr(msr):
                return true; // vPMU off: writes vanish
            default:
                AddLog($"d{Domain.Id}v{Vcpu.Id}: wrmsr 0x{msr:x} value 0x{value:x} unimplemented (#GP)", LogLevel.Information);
                return false;
        }
    }

    /// <summary>The Intel architectural and core performance-counter MSRs Xen hands to the vPMU.</summary>
    private static bool IsPerfCounterMsr(uint msr) =>
        msr is (>= 0xC1 and <= 0xC8) or (>= 0x186 and <= 0x189) or (>= 0x309 and <= 0x30B) or (>= 0x38D and <= 0x390);

    private ulong ReadRegister(Register r) => r switch
    {
        >= Register.RAX and <= Register.R15 => State.Gpr[r - Register.RAX],
        >= Register.EAX and <= Register.R15D => (uint)State.Gpr[r - Register.EAX],
        >= Register.AX and <= Register.R15W => (ushort)State.Gpr[r - Register.AX],
        _ => throw new InvalidOperationException($"unexpected register {r}"),
    };

    private void WriteRegister(Register r, ulong value)
    {
        switch (r)
        {
            case >= Register.RAX and <= Register.R15:
                State.Gpr[r - Register.RAX] = value;
                break;
            case >= Register.EAX and <= Register.R15D:
                State.Gpr[r - Register.EAX] = (uint)value;
                break;
            case >= Register.AX and <= Register.R15W:
                {
                    ref var g = ref State.Gpr[r - Register.AX];
                    g = (g & ~0xFFFFUL) | (ushort)value;
                    break;
                }

            case Register.AL:
                State.Gpr[0] = (State.Gpr[0] & ~0xFFUL) | (byte)value;
                break;
            default:
                throw new InvalidOperationException($"unexpected register {r}");
        }
    }

    // ---- fpu_taskswitch, debug registers (pv/misc-hypercalls.c) --------------------------------

    /// <summary>do_fpu_taskswitch: the guest's CR0.TS, which makes the next SSE/x87 instruction #NM.</summary>
    internal void FpuTaskswitch(bool set)
    {
        TaskSwitched = set;
        State.Cr0 = set ? State.Cr0 | ControlBits.Cr0TS : State.Cr0 & ~ControlBits.Cr0TS;
    }

    /// <summary>set_debugreg: -ENODEV (#UD) for no such register, -EINVAL for reserved bits, -EPERM for privileged ones.</summary>
    internal long SetDebugreg(int reg, ulong value)
    {
        switch (reg)
        {
            case >= 0 and <= 3:
                // __addr_ok: the lower half, or above Xen's reserved range.
                if (value >= 1UL << 47 && value < ArchX86.HYPERVISOR_VIRT_END)
                {
                    return -(long)Errno.EPERM;
                }

                _dr[reg] = value;
                return 0;
            case 4:
            case 6:
                if (value != (uint)value)
                {
                    return -(long)Errno.EINVAL;
                }

                _dr6 = (value & ~Dr6ReservedZero) | Dr6ReservedOne;
                return 0;
            case 5:
            case 7:
                {
                    if (value != (uint)value)
                    {
                        return -(long)Errno.EINVAL;
                    }

                    value = (value & ~Dr7ReservedZero) | Dr7ReservedOne;
                    if ((value & Dr7GeneralDetect) != 0)
                    {
                        return -(long)Errno.EPERM;
                    }

                    if ((value & Dr7Active) != 0)
                    {
                        for (var shift = 16; shift < 32; shift += 4)
                        {
                            if (((value >> shift) & 3) == 2)
                            {
                                return -(long)Errno.EPERM; // I/O breakpoints need CR4.DE, outside the policy
                            }
                        }
                    }

                    _dr7 = value;
                    return 0;
                }

            default:
                return -(long)Errno.ENODEV;
        }
    }

    /// <summary>get_debugreg (x86emul_read_dr): DR4/DR5 alias DR6/DR7 (CR4.DE is never set); others -ENODEV.</summary>
    internal long GetDebugreg(int reg) => reg switch
    {
        >= 0 and <= 3 => (long)_dr[reg],
        4 or 6 => (long)_dr6,
        5 or 7 => (long)_dr7,
        _ => -(long)Errno.ENODEV,
    };
}
