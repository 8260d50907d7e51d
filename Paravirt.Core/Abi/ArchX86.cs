using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/arch-x86/xen.h and xen/arch-x86/xen-x86_64.h (Xen 4.17, x86-64).
// Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// Constants of <c>xen/arch-x86/xen.h</c> and <c>xen/arch-x86/xen-x86_64.h</c>: reserved GDT
/// entries, flat selectors, Xen's virtual address range, <c>VGCF_*</c>, <c>SEGBASE_*</c>.
/// </summary>
public static class ArchX86
{
    // ---- arch-x86/xen.h ----

    /// <summary><see cref="start_info"/> and the PV entry ABI exist on this architecture (always 1 on x86).</summary>
    public const int XEN_HAVE_PV_GUEST_ENTRY = 1;
    /// <summary><see cref="vcpu_info.evtchn_upcall_mask"/> exists (always 1 on x86).</summary>
    public const int XEN_HAVE_PV_UPCALL_MASK = 1;

    /// <summary>First GDT page Xen reserves for itself (the far end of the GDT).</summary>
    public const int FIRST_RESERVED_GDT_PAGE = 14;
    public const int FIRST_RESERVED_GDT_BYTE = FIRST_RESERVED_GDT_PAGE * 4096;
    public const int FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_BYTE / 8;

    /// <summary>vCPUs with a <see cref="vcpu_info"/> in <see cref="shared_info"/>.</summary>
    public const int XEN_LEGACY_MAX_VCPUS = 32;

    // vcpu_guest_context.flags.
    public const int VGCF_I387_VALID = 1 << 0;
    public const int VGCF_IN_KERNEL = 1 << 2;
    public const int _VGCF_i387_valid = 0;
    /// <summary><see cref="vcpu_guest_context.fpu_ctxt"/> is valid.</summary>
    public const int VGCF_i387_valid = 1 << _VGCF_i387_valid;
    public const int _VGCF_in_kernel = 2;
    /// <summary>The vCPU is in guest-kernel mode.</summary>
    public const int VGCF_in_kernel = 1 << _VGCF_in_kernel;
    public const int _VGCF_failsafe_disables_events = 3;
    /// <summary>Entering the failsafe callback masks events.</summary>
    public const int VGCF_failsafe_disables_events = 1 << _VGCF_failsafe_disables_events;
    public const int _VGCF_syscall_disables_events = 4;
    /// <summary>Entering the syscall callback masks events.</summary>
    public const int VGCF_syscall_disables_events = 1 << _VGCF_syscall_disables_events;
    public const int _VGCF_online = 5;
    /// <summary>The vCPU is online.</summary>
    public const int VGCF_online = 1 << _VGCF_online;

    /// <summary><see cref="xen_cpuid_leaf.subleaf"/> of a leaf without subleaves.</summary>
    public const uint XEN_CPUID_NO_SUBLEAF = 0xffffffffu;

    /// <summary>The "port E9 hack": each byte written to this I/O port goes to Xen's console.</summary>
    public const int XEN_HVM_DEBUGCONS_IOPORT = 0xe9;

    /// <summary>
    /// The forced-emulation prefix, as the C header spells it for inline assembly: the bytes
    /// 0f 0b 78 65 6e (<c>ud2</c> then "xen"). Xen emulates the instruction that follows.
    /// </summary>
    public const string XEN_EMULATE_PREFIX = ".byte 0x0f,0x0b,0x78,0x65,0x6e ; ";
    /// <summary>CPUID behind the forced-emulation prefix: Xen emulates it (the only instruction it does so for).</summary>
    public const string XEN_CPUID = XEN_EMULATE_PREFIX + "cpuid";

    // ---- arch-x86/xen-x86_64.h ----

    // Flat segment selectors in Xen's part of every GDT (also in the initial GDT).
    /// <summary>GDT index 260.</summary>
    public const int FLAT_RING3_CS32 = 0xe023;
    /// <summary>GDT index 262.</summary>
    public const int FLAT_RING3_CS64 = 0xe033;
    /// <summary>GDT index 261.</summary>
    public const int FLAT_RING3_DS32 = 0xe02b;
    /// <summary>The null selector.</summary>
    public const int FLAT_RING3_DS64 = 0x0000;
    /// <summary>GDT index 261.</summary>
    public const int FLAT_RING3_SS32 = 0xe02b;
    /// <summary>GDT index 261.</summary>
    public const int FLAT_RING3_SS64 = 0xe02b;

    public const int FLAT_KERNEL_DS64 = FLAT_RING3_DS64;
    public const int FLAT_KERNEL_DS32 = FLAT_RING3_DS32;
    public const int FLAT_KERNEL_DS = FLAT_KERNEL_DS64;
    public const int FLAT_KERNEL_CS64 = FLAT_RING3_CS64;
    public const int FLAT_KERNEL_CS32 = FLAT_RING3_CS32;
    public const int FLAT_KERNEL_CS = FLAT_KERNEL_CS64;
    public const int FLAT_KERNEL_SS64 = FLAT_RING3_SS64;
    public const int FLAT_KERNEL_SS32 = FLAT_RING3_SS32;
    public const int FLAT_KERNEL_SS = FLAT_KERNEL_SS64;

    public const int FLAT_USER_DS64 = FLAT_RING3_DS64;
    public const int FLAT_USER_DS32 = FLAT_RING3_DS32;
    public const int FLAT_USER_DS = FLAT_USER_DS64;
    public const int FLAT_USER_CS64 = FLAT_RING3_CS64;
    public const int FLAT_USER_CS32 = FLAT_RING3_CS32;
    public const int FLAT_USER_CS = FLAT_USER_CS64;
    public const int FLAT_USER_SS64 = FLAT_RING3_SS64;
    public const int FLAT_USER_SS32 = FLAT_RING3_SS32;
    public const int FLAT_USER_SS = FLAT_USER_SS64;

    // Xen's slice of every 64-bit PV guest's virtual address space.
    public const ulong __HYPERVISOR_VIRT_START = 0xFFFF800000000000;
    public const ulong __HYPERVISOR_VIRT_END = 0xFFFF880000000000;
    public const ulong __MACH2PHYS_VIRT_START = 0xFFFF800000000000;
    public const ulong __MACH2PHYS_VIRT_END = 0xFFFF804000000000;
    public const ulong HYPERVISOR_VIRT_START = __HYPERVISOR_VIRT_START;
    public const ulong HYPERVISOR_VIRT_END = __HYPERVISOR_VIRT_END;
    /// <summary>The read-only machine-to-phys table mapped into every PV guest.</summary>
    public const ulong MACH2PHYS_VIRT_START = __MACH2PHYS_VIRT_START;
    public const ulong MACH2PHYS_VIRT_END = __MACH2PHYS_VIRT_END;
    /// <summary>Entries (8 bytes each) of the machine-to-phys table.</summary>
    public const ulong MACH2PHYS_NR_ENTRIES = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;

    // HYPERVISOR_set_segment_base(which, base).
    public const int SEGBASE_FS = 0;
    public const int SEGBASE_GS_USER = 1;
    public const int SEGBASE_GS_KERNEL = 2;
    /// <summary>Load the user %gs selector given in base[15:0].</summary>
    public const int SEGBASE_GS_USER_SEL = 3;

    /// <summary>HYPERVISOR_iret: the guest left in SYSCALL context; return with SYSRET semantics.</summary>
    public const int _VGCF_in_syscall = 8;
    public const int VGCF_in_syscall = 1 << _VGCF_in_syscall;
    public const int VGCF_IN_SYSCALL = VGCF_in_syscall;
}

/// <summary>One virtual IDT entry for <c>HYPERVISOR_set_trap_table</c> (IN); the array ends with <c>address == 0</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct trap_info
{
    /// <summary>Exception vector.</summary>
    public byte vector;
    /// <summary>Bits 0-1: privilege level that may raise it with INT; bit 2: mask events on entry.</summary>
    public byte flags;
    /// <summary>Code selector.</summary>
    public ushort cs;
    /// <summary>Handler address.</summary>
    public ulong address;
}

/// <summary>A vCPU's full PV context (VCPUOP_initialise IN, domctl get/set).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct vcpu_guest_context
{
    /// <summary>FXSAVE image of the user-level FPU registers.</summary>
    public FpuCtxt fpu_ctxt;
    /// <summary><c>VGCF_*</c>.</summary>
    public ulong flags;
    /// <summary>User-level CPU registers.</summary>
    public cpu_user_regs user_regs;
    /// <summary>The virtual IDT.</summary>
    public TrapCtxtArray trap_ctxt;
    /// <summary>LDT linear address.</summary>
    public ulong ldt_base;
    /// <summary>LDT entries.</summary>
    public ulong ldt_ents;
    /// <summary>GDT machine frames.</summary>
    public fixed ulong gdt_frames[16];
    /// <summary>GDT entries.</summary>
    public ulong gdt_ents;
    /// <summary>Virtual TSS: kernel stack segment (SS1).</summary>
    public ulong kernel_ss;
    /// <summary>Virtual TSS: kernel stack pointer (SP1).</summary>
    public ulong kernel_sp;
    /// <summary>CR0-CR7; on x86-64 the user page table is in ctrlreg[1].</summary>
    public fixed ulong ctrlreg[8];
    /// <summary>DR0-DR7.</summary>
    public fixed ulong debugreg[8];
    public ulong event_callback_eip;
    public ulong failsafe_callback_eip;
    public ulong syscall_callback_eip;
    /// <summary>Bitmap of <c>VMASST_TYPE_*</c>.</summary>
    public ulong vm_assist;
    /// <summary>Segment base addresses.</summary>
    public ulong fs_base;
    public ulong gs_base_kernel;
    public ulong gs_base_user;

    [StructLayout(LayoutKind.Sequential)]
    public struct FpuCtxt
    {
        public fixed byte x[512];
    }

    [InlineArray(256)]
    public struct TrapCtxtArray
    {
        private trap_info _element0;
    }
}

/// <summary>The x86 part of <see cref="shared_info"/>: where to find the guest's P2M.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct arch_shared_info
{
    /// <summary>[GST] number of valid entries in the P2M table(s).</summary>
    public ulong max_pfn;
    /// <summary>[GST] frame of the list of frames of lists of P2M frames; ~0 when the 3-level tree is unusable.</summary>
    public ulong pfn_to_mfn_frame_list_list;
    /// <summary>[XEN] why an NMI was delivered.</summary>
    public ulong nmi_reason;
    /// <summary>[GST] cr3 of the address space where <see cref="p2m_vaddr"/> is valid (0: not set).</summary>
    public ulong p2m_cr3;
    /// <summary>[GST] virtual address of the linear P2M list.</summary>
    public ulong p2m_vaddr;
    /// <summary>[GST] incremented before and after each P2M mapping change (odd: in progress).</summary>
    public ulong p2m_generation;
}

/// <summary>One CPUID leaf, the serialised form of a CPUID policy.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_cpuid_leaf
{
    public uint leaf;
    /// <summary><see cref="ArchX86.XEN_CPUID_NO_SUBLEAF"/> if the leaf has none.</summary>
    public uint subleaf;
    public uint a;
    public uint b;
    public uint c;
    public uint d;
}

/// <summary>One MSR, the serialised form of an MSR policy.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_msr_entry
{
    public uint idx;
    /// <summary>Reserved, must be zero.</summary>
    public uint flags;
    public ulong val;
}

/// <summary>The frame <c>HYPERVISOR_iret</c> pops from the guest kernel stack (IN), top (%rsp at the hypercall) first.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct iret_context
{
    public ulong rax;
    public ulong r11;
    public ulong rcx;
    /// <summary><c>VGCF_in_syscall</c>: restore only RAX, RIP, RFLAGS, RSP.</summary>
    public ulong flags;
    public ulong rip;
    public ulong cs;
    public ulong rflags;
    public ulong rsp;
    public ulong ss;
}

/// <summary>
/// x86-64 guest registers. C also names the low halves (<c>eax</c>, ...) through anonymous unions; only the
/// 64-bit names are mirrored.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct cpu_user_regs
{
    public ulong r15;
    public ulong r14;
    public ulong r13;
    public ulong r12;
    public ulong rbp;
    public ulong rbx;
    public ulong r11;
    public ulong r10;
    public ulong r9;
    public ulong r8;
    public ulong rax;
    public ulong rcx;
    public ulong rdx;
    public ulong rsi;
    public ulong rdi;
    /// <summary>Private to Xen.</summary>
    public uint error_code;
    /// <summary>Private to Xen.</summary>
    public uint entry_vector;
    public ulong rip;
    public ushort cs;
    public fixed ushort _pad0[1];
    /// <summary>The event mask saved with the frame; <c>rflags.IF == !saved_upcall_mask</c>.</summary>
    public byte saved_upcall_mask;
    public fixed byte _pad1[3];
    public ulong rflags;
    public ulong rsp;
    public ushort ss;
    public fixed ushort _pad2[3];
    public ushort es;
    public fixed ushort _pad3[3];
    public ushort ds;
    public fixed ushort _pad4[3];
    public ushort fs;
    public fixed ushort _pad5[3];
    public ushort gs;
    public fixed ushort _pad6[3];
}

/// <summary>The x86 part of <see cref="vcpu_info"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct arch_vcpu_info
{
    /// <summary>[XEN] faulting address of the last page fault bounced to the guest.</summary>
    public ulong cr2;
    /// <summary>Keeps sizeof(vcpu_info) == 64.</summary>
    public ulong pad;
}
