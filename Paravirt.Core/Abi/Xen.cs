using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/xen.h (Xen 4.17, x86-64). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// Constants of <c>xen/xen.h</c>: hypercall numbers, VIRQs, MMU and MMUEXT ops, <c>UVMF_*</c>,
/// <c>VMASST_*</c>, domain ids, start-of-day flags.
/// </summary>
public static class Xen
{
    // Hypercall numbers (` enum hypercall_num). On x86-64 the guest calls hypercall_page + 32 * number.
    public const int __HYPERVISOR_set_trap_table = 0;
    public const int __HYPERVISOR_mmu_update = 1;
    public const int __HYPERVISOR_set_gdt = 2;
    public const int __HYPERVISOR_stack_switch = 3;
    public const int __HYPERVISOR_set_callbacks = 4;
    public const int __HYPERVISOR_fpu_taskswitch = 5;
    /// <summary>Compat since interface 0x00030101; use <see cref="__HYPERVISOR_sched_op"/>.</summary>
    public const int __HYPERVISOR_sched_op_compat = 6;
    public const int __HYPERVISOR_platform_op = 7;
    public const int __HYPERVISOR_set_debugreg = 8;
    public const int __HYPERVISOR_get_debugreg = 9;
    public const int __HYPERVISOR_update_descriptor = 10;
    // 11 is unused.
    public const int __HYPERVISOR_memory_op = 12;
    public const int __HYPERVISOR_multicall = 13;
    public const int __HYPERVISOR_update_va_mapping = 14;
    public const int __HYPERVISOR_set_timer_op = 15;
    /// <summary>Compat since interface 0x00030202; use <see cref="__HYPERVISOR_event_channel_op"/>.</summary>
    public const int __HYPERVISOR_event_channel_op_compat = 16;
    public const int __HYPERVISOR_xen_version = 17;
    public const int __HYPERVISOR_console_io = 18;
    /// <summary>Compat since interface 0x00030202; use <see cref="__HYPERVISOR_physdev_op"/>.</summary>
    public const int __HYPERVISOR_physdev_op_compat = 19;
    public const int __HYPERVISOR_grant_table_op = 20;
    public const int __HYPERVISOR_vm_assist = 21;
    public const int __HYPERVISOR_update_va_mapping_otherdomain = 22;
    /// <summary>x86 only.</summary>
    public const int __HYPERVISOR_iret = 23;
    public const int __HYPERVISOR_vcpu_op = 24;
    /// <summary>x86-64 only.</summary>
    public const int __HYPERVISOR_set_segment_base = 25;
    public const int __HYPERVISOR_mmuext_op = 26;
    public const int __HYPERVISOR_xsm_op = 27;
    public const int __HYPERVISOR_nmi_op = 28;
    public const int __HYPERVISOR_sched_op = 29;
    public const int __HYPERVISOR_callback_op = 30;
    public const int __HYPERVISOR_xenoprof_op = 31;
    public const int __HYPERVISOR_event_channel_op = 32;
    public const int __HYPERVISOR_physdev_op = 33;
    public const int __HYPERVISOR_hvm_op = 34;
    public const int __HYPERVISOR_sysctl = 35;
    public const int __HYPERVISOR_domctl = 36;
    public const int __HYPERVISOR_kexec_op = 37;
    public const int __HYPERVISOR_tmem_op = 38;
    public const int __HYPERVISOR_argo_op = 39;
    public const int __HYPERVISOR_xenpmu_op = 40;
    public const int __HYPERVISOR_dm_op = 41;
    public const int __HYPERVISOR_hypfs_op = 42;

    // Architecture-specific hypercalls.
    public const int __HYPERVISOR_arch_0 = 48;
    public const int __HYPERVISOR_arch_1 = 49;
    public const int __HYPERVISOR_arch_2 = 50;
    public const int __HYPERVISOR_arch_3 = 51;
    public const int __HYPERVISOR_arch_4 = 52;
    public const int __HYPERVISOR_arch_5 = 53;
    public const int __HYPERVISOR_arch_6 = 54;
    public const int __HYPERVISOR_arch_7 = 55;

    // Virtual interrupts (` enum virq). "V." per-vCPU, bound once per vCPU; "G." global, bound once per guest.
    /// <summary>V. Timebase update, and/or requested timeout.</summary>
    public const int VIRQ_TIMER = 0;
    /// <summary>V. Request guest to dump debug info.</summary>
    public const int VIRQ_DEBUG = 1;
    /// <summary>G. (dom0) Bytes received on emergency console.</summary>
    public const int VIRQ_CONSOLE = 2;
    /// <summary>G. (dom0) Exceptional event for some domain.</summary>
    public const int VIRQ_DOM_EXC = 3;
    /// <summary>G. (dom0) Trace buffer has records available.</summary>
    public const int VIRQ_TBUF = 4;
    /// <summary>G. (dom0) A domain has paused for debugging.</summary>
    public const int VIRQ_DEBUGGER = 6;
    /// <summary>V. XenOprofile interrupt: new sample available.</summary>
    public const int VIRQ_XENOPROF = 7;
    /// <summary>G. (dom0) Bytes received on console.</summary>
    public const int VIRQ_CON_RING = 8;
    /// <summary>G. (dom0) PCPU state changed.</summary>
    public const int VIRQ_PCPU_STATE = 9;
    /// <summary>G. (dom0) A memory event has occurred.</summary>
    public const int VIRQ_MEM_EVENT = 10;
    /// <summary>G. Argo interdomain message notification.</summary>
    public const int VIRQ_ARGO = 11;
    /// <summary>G. (dom0) Low on heap memory.</summary>
    public const int VIRQ_ENOMEM = 12;
    /// <summary>V. PMC interrupt.</summary>
    public const int VIRQ_XENPMU = 13;
    public const int VIRQ_ARCH_0 = 16;
    public const int VIRQ_ARCH_1 = 17;
    public const int VIRQ_ARCH_2 = 18;
    public const int VIRQ_ARCH_3 = 19;
    public const int VIRQ_ARCH_4 = 20;
    public const int VIRQ_ARCH_5 = 21;
    public const int VIRQ_ARCH_6 = 22;
    public const int VIRQ_ARCH_7 = 23;
    public const int NR_VIRQS = 24;

    // HYPERVISOR_mmu_update: the command is in mmu_update.ptr[1:0].
    /// <summary>Checked <c>*ptr = val</c>; <c>ptr</c> is a machine address.</summary>
    public const int MMU_NORMAL_PT_UPDATE = 0;
    /// <summary><c>ptr</c> is the machine address of the frame whose M2P entry to set to <c>val</c>.</summary>
    public const int MMU_MACHPHYS_UPDATE = 1;
    /// <summary>Atomically <c>*ptr = val | (*ptr &amp; (A|D))</c>.</summary>
    public const int MMU_PT_UPDATE_PRESERVE_AD = 2;
    /// <summary>Checked <c>*ptr = val</c>; <c>val</c> is never translated.</summary>
    public const int MMU_PT_UPDATE_NO_TRANSLATE = 3;

    // HYPERVISOR_mmuext_op commands (` enum mmuext_cmd), in mmuext_op.cmd.
    /// <summary><c>arg1.mfn</c>: frame to pin as an L1 page table.</summary>
    public const int MMUEXT_PIN_L1_TABLE = 0;
    public const int MMUEXT_PIN_L2_TABLE = 1;
    public const int MMUEXT_PIN_L3_TABLE = 2;
    public const int MMUEXT_PIN_L4_TABLE = 3;
    /// <summary><c>arg1.mfn</c>: frame to unpin (any level).</summary>
    public const int MMUEXT_UNPIN_TABLE = 4;
    /// <summary><c>arg1.mfn</c>: new page-table base (kernel mode).</summary>
    public const int MMUEXT_NEW_BASEPTR = 5;
    public const int MMUEXT_TLB_FLUSH_LOCAL = 6;
    /// <summary><c>arg1.linear_addr</c>: address to flush from the local TLB.</summary>
    public const int MMUEXT_INVLPG_LOCAL = 7;
    /// <summary><c>arg2.vcpumask</c>: vCPUs whose TLBs to flush.</summary>
    public const int MMUEXT_TLB_FLUSH_MULTI = 8;
    /// <summary><c>arg1.linear_addr</c>, <c>arg2.vcpumask</c>.</summary>
    public const int MMUEXT_INVLPG_MULTI = 9;
    public const int MMUEXT_TLB_FLUSH_ALL = 10;
    /// <summary><c>arg1.linear_addr</c>: address to flush from every vCPU's TLB.</summary>
    public const int MMUEXT_INVLPG_ALL = 11;
    public const int MMUEXT_FLUSH_CACHE = 12;
    /// <summary><c>arg1.linear_addr</c> (page-aligned LDT base), <c>arg2.nr_ents</c>.</summary>
    public const int MMUEXT_SET_LDT = 13;
    /// <summary>x86-64 only. <c>arg1.mfn</c>: page-table base used in user mode.</summary>
    public const int MMUEXT_NEW_USER_BASEPTR = 15;
    /// <summary><c>arg1.mfn</c>: frame to zero.</summary>
    public const int MMUEXT_CLEAR_PAGE = 16;
    /// <summary><c>arg1.mfn</c> destination, <c>arg2.src_mfn</c> source.</summary>
    public const int MMUEXT_COPY_PAGE = 17;
    public const int MMUEXT_FLUSH_CACHE_GLOBAL = 18;
    /// <summary><c>arg1.mfn</c>: head of a superpage.</summary>
    public const int MMUEXT_MARK_SUPER = 19;
    public const int MMUEXT_UNMARK_SUPER = 20;

    // HYPERVISOR_update_va_mapping flags (` enum uvm_flags); UVMF_MULTI is ORed with a vCPU bitmap pointer.
    /// <summary>No flushing at all.</summary>
    public const ulong UVMF_NONE = 0UL << 0;
    /// <summary>Flush entire TLB(s).</summary>
    public const ulong UVMF_TLB_FLUSH = 1UL << 0;
    /// <summary>Flush only one entry.</summary>
    public const ulong UVMF_INVLPG = 2UL << 0;
    public const ulong UVMF_FLUSHTYPE_MASK = 3UL << 0;
    /// <summary>Flush a subset of TLBs (OR in a pointer to a vCPU bitmap).</summary>
    public const ulong UVMF_MULTI = 0UL << 2;
    /// <summary>Flush the local TLB: <see cref="UVMF_MULTI"/> with a null bitmap.</summary>
    public const ulong UVMF_LOCAL = 0UL << 2;
    /// <summary>Flush all TLBs.</summary>
    public const ulong UVMF_ALL = 1UL << 2;

    // HYPERVISOR_console_io commands.
    /// <summary>Write the buffer to Xen's console.</summary>
    public const int CONSOLEIO_write = 0;
    /// <summary>Read up to count characters from Xen's console.</summary>
    public const int CONSOLEIO_read = 1;

    // HYPERVISOR_vm_assist.
    public const int VMASST_CMD_enable = 0;
    public const int VMASST_CMD_disable = 1;
    /// <summary>x86-32 guests: simulate full 4GB segment limits.</summary>
    public const int VMASST_TYPE_4gb_segments = 0;
    /// <summary>x86-32 guests: trap (vector 15) whenever the above is used.</summary>
    public const int VMASST_TYPE_4gb_segments_notify = 1;
    /// <summary>x86 guests: Xen emulates writes to bottom-level PTEs.</summary>
    public const int VMASST_TYPE_writable_pagetables = 2;
    /// <summary>x86 PAE guests: PDPTs above 4GB.</summary>
    public const int VMASST_TYPE_pae_extended_cr3 = 3;
    /// <summary>x86 guests: sane virtual IOPL (updated by iret, reported in bounce frames).</summary>
    public const int VMASST_TYPE_architectural_iopl = 4;
    /// <summary>All guests: set <c>XEN_RUNSTATE_UPDATE</c> in the runstate area during updates.</summary>
    public const int VMASST_TYPE_runstate_update_flag = 5;
    /// <summary>x86-64 guests: strictly hide the M2P from user mode.</summary>
    public const int VMASST_TYPE_m2p_strict = 32;

    // Domain ids (domid_t). Ids at or above DOMID_FIRST_RESERVED are never ordinary domains.
    public const ushort DOMID_FIRST_RESERVED = 0x7FF0;
    /// <summary>The calling domain.</summary>
    public const ushort DOMID_SELF = 0x7FF0;
    /// <summary>As a foreign domain in mmu_update: permit only I/O mappings.</summary>
    public const ushort DOMID_IO = 0x7FF1;
    /// <summary>Lets privileged domains map restricted parts of Xen's heap.</summary>
    public const ushort DOMID_XEN = 0x7FF2;
    /// <summary>Owner of sharable pages.</summary>
    public const ushort DOMID_COW = 0x7FF3;
    /// <summary>Owner of pages with unknown owner.</summary>
    public const ushort DOMID_INVALID = 0x7FF4;
    /// <summary>The idle domain.</summary>
    public const ushort DOMID_IDLE = 0x7FFF;
    /// <summary>Mask for valid domain id values.</summary>
    public const ushort DOMID_MASK = 0x7FFF;

    // vcpu_time_info.flags.
    /// <summary>The TSC is stable across vCPUs.</summary>
    public const int XEN_PVCLOCK_TSC_STABLE_BIT = 1 << 0;
    /// <summary>The guest was stopped (e.g. paused or migrated).</summary>
    public const int XEN_PVCLOCK_GUEST_STOPPED = 1 << 1;

    /// <summary>Length of <see cref="start_info.cmd_line"/>.</summary>
    public const int MAX_GUEST_CMDLINE = 1024;

    // start_info.flags.
    /// <summary>Is the domain privileged?</summary>
    public const int SIF_PRIVILEGED = 1 << 0;
    /// <summary>Is this the initial control domain?</summary>
    public const int SIF_INITDOMAIN = 1 << 1;
    /// <summary>Is mod_start a multiboot module?</summary>
    public const int SIF_MULTIBOOT_MOD = 1 << 2;
    /// <summary>Is mod_start a PFN?</summary>
    public const int SIF_MOD_START_PFN = 1 << 3;
    /// <summary>Do Xen tools understand a virtually mapped P2M (no 3-level tree)?</summary>
    public const int SIF_VIRT_P2M_4TOOLS = 1 << 4;
    /// <summary>One byte reserved for xen-pm options.</summary>
    public const int SIF_PM_MASK = 0xFF << 8;

    // dom0_vga_console_info.video_type.
    public const int XEN_VGATYPE_TEXT_MODE_3 = 0x03;
    public const int XEN_VGATYPE_VESA_LFB = 0x23;
    public const int XEN_VGATYPE_EFI_LFB = 0x70;
}

/// <summary>One operation of <c>HYPERVISOR_mmuext_op</c> (IN). Which argument applies depends on <see cref="cmd"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct mmuext_op
{
    /// <summary>IN: <c>MMUEXT_*</c>.</summary>
    public uint cmd;
    /// <summary>IN</summary>
    public Arg1 arg1;
    /// <summary>IN</summary>
    public Arg2 arg2;

    [StructLayout(LayoutKind.Explicit)]
    public struct Arg1
    {
        /// <summary>[UN]PIN_TABLE, NEW_BASEPTR, NEW_USER_BASEPTR, CLEAR_PAGE, COPY_PAGE, [UN]MARK_SUPER.</summary>
        [FieldOffset(0)] public ulong mfn;
        /// <summary>INVLPG_LOCAL, INVLPG_ALL, SET_LDT.</summary>
        [FieldOffset(0)] public ulong linear_addr;
    }

    [StructLayout(LayoutKind.Explicit)]
    public struct Arg2
    {
        /// <summary>SET_LDT.</summary>
        [FieldOffset(0)] public uint nr_ents;
        /// <summary>TLB_FLUSH_MULTI, INVLPG_MULTI: guest address of a vCPU bitmap.</summary>
        [FieldOffset(0)] public ulong vcpumask;
        /// <summary>COPY_PAGE.</summary>
        [FieldOffset(0)] public ulong src_mfn;
    }
}

/// <summary>One request of <c>HYPERVISOR_mmu_update</c> (IN): <c>ptr[1:0]</c> is the <c>MMU_*</c> command.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct mmu_update
{
    /// <summary>IN: machine address of the PTE (or frame), low two bits the command.</summary>
    public ulong ptr;
    /// <summary>IN: new contents of the PTE.</summary>
    public ulong val;
}

/// <summary>One entry of <c>HYPERVISOR_multicall</c>'s list.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct multicall_entry
{
    /// <summary>IN: the hypercall number.</summary>
    public ulong op;
    /// <summary>OUT: the hypercall's return value.</summary>
    public ulong result;
    /// <summary>IN: the hypercall's arguments.</summary>
    public fixed ulong args[6];
}

/// <summary>
/// Per-vCPU time base, inside <see cref="vcpu_info"/>. [XEN] writes it; an odd <see cref="version"/>
/// means an update is in progress (read it like a seqlock).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct vcpu_time_info
{
    /// <summary>[XEN] incremented before and after each update.</summary>
    public uint version;
    public uint pad0;
    /// <summary>[XEN] TSC at last update of the time values.</summary>
    public ulong tsc_timestamp;
    /// <summary>[XEN] nanoseconds since boot at <see cref="tsc_timestamp"/>.</summary>
    public ulong system_time;
    /// <summary>[XEN] now = system_time + ((((tsc - tsc_timestamp) &lt;&lt; tsc_shift) * tsc_to_system_mul) &gt;&gt; 32).</summary>
    public uint tsc_to_system_mul;
    /// <summary>[XEN] signed shift applied to the TSC delta.</summary>
    public sbyte tsc_shift;
    /// <summary>[XEN] <c>XEN_PVCLOCK_*</c>.</summary>
    public byte flags;
    public fixed byte pad1[2];
}

/// <summary>Per-vCPU shared data, in <see cref="shared_info"/> (or registered with VCPUOP_register_vcpu_info). 64 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_info
{
    /// <summary>[XEN] sets non-zero for a pending upcall; [GST] clears it before checking for work.</summary>
    public byte evtchn_upcall_pending;
    /// <summary>[GST] non-zero masks event upcalls to this vCPU (the virtual IF flag, inverted).</summary>
    public byte evtchn_upcall_mask;
    /// <summary>[XEN] sets, [GST] clears: one bit per word of <see cref="shared_info.evtchn_pending"/>.</summary>
    public ulong evtchn_pending_sel;
    public arch_vcpu_info arch;
    /// <summary>[XEN]</summary>
    public vcpu_time_info time;
}

/// <summary>The shared-info page: per-vCPU data, 2-level event-channel bitmaps, wallclock. [XEN] and [GST] share it.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct shared_info
{
    /// <summary>The first <see cref="ArchX86.XEN_LEGACY_MAX_VCPUS"/> vCPUs' <see cref="Abi.vcpu_info"/>.</summary>
    public VcpuInfoArray vcpu_info;
    /// <summary>[XEN] sets, [GST] clears: one bit per port.</summary>
    public fixed ulong evtchn_pending[sizeof(ulong) * 8];
    /// <summary>[GST] sets and clears; read-only to Xen: one bit per port.</summary>
    public fixed ulong evtchn_mask[sizeof(ulong) * 8];
    /// <summary>[XEN] version counter of the wallclock, as <see cref="vcpu_time_info.version"/>.</summary>
    public uint wc_version;
    /// <summary>[XEN] wallclock at system time 0: seconds since the epoch (low 32 bits).</summary>
    public uint wc_sec;
    /// <summary>[XEN]</summary>
    public uint wc_nsec;
    /// <summary>[XEN] high 32 bits of the seconds.</summary>
    public uint wc_sec_hi;
    public arch_shared_info arch;

    [InlineArray(ArchX86.XEN_LEGACY_MAX_VCPUS)]
    public struct VcpuInfoArray
    {
        private vcpu_info _element0;
    }
}

/// <summary>
/// Start-of-day information for a PV guest, at the address in <c>%rsi</c> on entry. [XEN] (the domain
/// builder) fills it; the fields after <see cref="console"/> only on initial boot, not on resume.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct start_info
{
    /// <summary>"xen-&lt;version&gt;-&lt;platform&gt;".</summary>
    public fixed byte magic[32];
    /// <summary>Total pages allocated to this domain.</summary>
    public ulong nr_pages;
    /// <summary>Machine address of the shared-info page.</summary>
    public ulong shared_info;
    /// <summary><c>SIF_*</c>.</summary>
    public uint flags;
    /// <summary>Machine frame of the xenstore ring page.</summary>
    public ulong store_mfn;
    /// <summary>Event channel for xenstore.</summary>
    public uint store_evtchn;
    public Console console;
    /// <summary>Virtual address of the page directory.</summary>
    public ulong pt_base;
    /// <summary>Number of bootstrap page-table frames.</summary>
    public ulong nr_pt_frames;
    /// <summary>Virtual address of the page-frame list.</summary>
    public ulong mfn_list;
    /// <summary>Virtual address (PFN if <c>SIF_MOD_START_PFN</c>) of the pre-loaded module.</summary>
    public ulong mod_start;
    /// <summary>Size in bytes of the pre-loaded module.</summary>
    public ulong mod_len;
    /// <summary>The kernel command line, NUL-terminated.</summary>
    public fixed sbyte cmd_line[Xen.MAX_GUEST_CMDLINE];
    /// <summary>First PFN forming the initial P2M table.</summary>
    public ulong first_p2m_pfn;
    /// <summary>Number of PFNs forming the initial P2M table.</summary>
    public ulong nr_p2m_frames;

    [StructLayout(LayoutKind.Explicit)]
    public struct Console
    {
        /// <summary>Unprivileged domains.</summary>
        [FieldOffset(0)] public DomU domU;
        /// <summary>The initial domain.</summary>
        [FieldOffset(0)] public Dom0 dom0;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct DomU
    {
        /// <summary>Machine frame of the console ring page.</summary>
        public ulong mfn;
        /// <summary>Event channel for the console page.</summary>
        public uint evtchn;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Dom0
    {
        /// <summary>Offset of the <see cref="dom0_vga_console_info"/> in this page.</summary>
        public uint info_off;
        /// <summary>Size of the console info from its start.</summary>
        public uint info_size;
    }
}

/// <summary>A module descriptor at the start of a multiboot module; the list ends with <c>mod_start == 0</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_multiboot_mod_list
{
    /// <summary>Address of the first byte of the module (relative to the multiboot module).</summary>
    public uint mod_start;
    /// <summary>Address of the last byte of the module (inclusive).</summary>
    public uint mod_end;
    /// <summary>Address of the zero-terminated command line.</summary>
    public uint cmdline;
    /// <summary>Unused, must be zero.</summary>
    public uint pad;
}

/// <summary>Dom0's VGA/VESA console, at <c>start_info.console.dom0.info_off</c>. [XEN] fills it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct dom0_vga_console_info
{
    /// <summary><c>XEN_VGATYPE_*</c>.</summary>
    public byte video_type;
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        [FieldOffset(0)] public TextMode3 text_mode_3;
        [FieldOffset(0)] public VesaLfb vesa_lfb;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct TextMode3
    {
        /// <summary>Font height, in pixels.</summary>
        public ushort font_height;
        /// <summary>Cursor column.</summary>
        public ushort cursor_x;
        /// <summary>Cursor row.</summary>
        public ushort cursor_y;
        /// <summary>Number of rows (characters).</summary>
        public ushort rows;
        /// <summary>Number of columns (characters).</summary>
        public ushort columns;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct VesaLfb
    {
        /// <summary>Width in pixels.</summary>
        public ushort width;
        /// <summary>Height in pixels.</summary>
        public ushort height;
        /// <summary>Bytes per scan line.</summary>
        public ushort bytes_per_line;
        public ushort bits_per_pixel;
        /// <summary>Physical address of the linear frame buffer (low 32 bits).</summary>
        public uint lfb_base;
        /// <summary>Size of the frame buffer in 64kB units.</summary>
        public uint lfb_size;
        // RGB mask offsets and sizes, as defined by VBE 1.2+.
        public byte red_pos;
        public byte red_size;
        public byte green_pos;
        public byte green_size;
        public byte blue_pos;
        public byte blue_size;
        public byte rsvd_pos;
        public byte rsvd_size;
        /// <summary>VESA capabilities (offset 0xa, VESA command 0x4f00).</summary>
        public uint gbl_caps;
        /// <summary>Mode attributes (offset 0x0, VESA command 0x4f01).</summary>
        public ushort mode_attrs;
        public ushort pad;
        /// <summary>High 32 bits of <see cref="lfb_base"/>.</summary>
        public uint ext_lfb_base;
    }
}

/// <summary>A UUID as 16 bytes in big-endian (RFC 4122) order, as Linux and libuuid lay it out.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xen_uuid_t
{
    public fixed byte a[16];
}
