namespace Paravirt.Core.Abi;

// Mirrors xen/elfnote.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// Types of the ELF notes named "Xen" (in a PT_NOTE segment) that describe a PV kernel to the domain
/// builder. Numeric notes are 4 or 8 bytes, string notes are NUL-terminated ASCII.
/// </summary>
public static class ElfNote
{
    /// <summary>NAME=VALUE pair (string).</summary>
    public const int XEN_ELFNOTE_INFO = 0;
    /// <summary>Virtual address of the entry point (numeric).</summary>
    public const int XEN_ELFNOTE_ENTRY = 1;
    /// <summary>Virtual address of the hypercall page (numeric).</summary>
    public const int XEN_ELFNOTE_HYPERCALL_PAGE = 2;
    /// <summary>Virtual address the image is mapped at (numeric, default 0).</summary>
    public const int XEN_ELFNOTE_VIRT_BASE = 3;
    /// <summary>Offset of the ELF paddr fields from the pseudo-physical address (numeric, default 0).</summary>
    public const int XEN_ELFNOTE_PADDR_OFFSET = 4;
    /// <summary>The Xen version the kernel works with (string).</summary>
    public const int XEN_ELFNOTE_XEN_VERSION = 5;
    /// <summary>Guest operating system name (string).</summary>
    public const int XEN_ELFNOTE_GUEST_OS = 6;
    /// <summary>Guest operating system version (string).</summary>
    public const int XEN_ELFNOTE_GUEST_VERSION = 7;
    /// <summary>Loader type (string).</summary>
    public const int XEN_ELFNOTE_LOADER = 8;
    /// <summary>PAE support, x86-32 only: "yes", "no" or "bimodal" (string).</summary>
    public const int XEN_ELFNOTE_PAE_MODE = 9;
    /// <summary>'|'-separated XENFEAT_ names, '!' marking required ones (string).</summary>
    public const int XEN_ELFNOTE_FEATURES = 10;
    /// <summary>Load the symbol table: "yes" or "no" (string).</summary>
    public const int XEN_ELFNOTE_BSD_SYMTAB = 11;
    /// <summary>Lowest address the hypervisor hole may start at (numeric).</summary>
    public const int XEN_ELFNOTE_HV_START_LOW = 12;
    /// <summary>Mask/value pairs recognising non-present L1 entries that hold valid MFNs (numeric).</summary>
    public const int XEN_ELFNOTE_L1_MFN_VALID = 13;
    /// <summary>Supports cooperative suspend cancellation (numeric, default 0).</summary>
    public const int XEN_ELFNOTE_SUSPEND_CANCEL = 14;
    /// <summary>Where the initial P2M map should be placed (numeric; x86-64 only).</summary>
    public const int XEN_ELFNOTE_INIT_P2M = 15;
    /// <summary>Can take an initrd not mapped by the initial page tables (numeric).</summary>
    public const int XEN_ELFNOTE_MOD_START_PFN = 16;
    /// <summary>Bitmap of supported XENFEAT_ features (numeric).</summary>
    public const int XEN_ELFNOTE_SUPPORTED_FEATURES = 17;
    /// <summary>32-bit physical entry point for PVH (numeric).</summary>
    public const int XEN_ELFNOTE_PHYS32_ENTRY = 18;
    /// <summary>The highest guest kernel note type.</summary>
    public const int XEN_ELFNOTE_MAX = XEN_ELFNOTE_PHYS32_ENTRY;

    /// <summary>Crash note: system information (kexec/kdump).</summary>
    public const int XEN_ELFNOTE_CRASH_INFO = 0x1000001;
    /// <summary>Crash note: per-CPU registers not in the "CORE" note.</summary>
    public const int XEN_ELFNOTE_CRASH_REGS = 0x1000002;
    /// <summary>Dump-core note marking a Xen dump-core file.</summary>
    public const int XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000;
    /// <summary>Dump-core header note.</summary>
    public const int XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001;
    /// <summary>Dump-core note with the XENVER version.</summary>
    public const int XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002;
    /// <summary>Dump-core format version note.</summary>
    public const int XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003;
}
