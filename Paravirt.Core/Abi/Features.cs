namespace Paravirt.Core.Abi;

// Mirrors xen/features.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// <c>XENFEAT_*</c> bit numbers, reported by XENVER_get_features (<see cref="xen_feature_info"/>) and
/// named, without the prefix, in a guest's <c>XEN_ELFNOTE_(SUPPORTED_)FEATURES</c>.
/// </summary>
public static class Features
{
    /// <summary>The guest may update its page tables by direct writes (no write protection).</summary>
    public const int XENFEAT_writable_page_tables = 0;
    /// <summary>The guest may update its descriptor tables by direct writes.</summary>
    public const int XENFEAT_writable_descriptor_tables = 1;
    /// <summary>Xen translates pseudo-physical to machine addresses (no P2M work in the guest).</summary>
    public const int XENFEAT_auto_translated_physmap = 2;
    /// <summary>The guest kernel runs in supervisor mode (x86 ring 0).</summary>
    public const int XENFEAT_supervisor_mode_kernel = 3;
    /// <summary>PAE page directories need not be below 4GB.</summary>
    public const int XENFEAT_pae_pgdir_above_4gb = 4;
    /// <summary>x86: <c>MMU_PT_UPDATE_PRESERVE_AD</c> is supported.</summary>
    public const int XENFEAT_mmu_pt_update_preserve_ad = 5;
    /// <summary>x86: <c>MMUEXT_CLEAR_PAGE</c> / <c>MMUEXT_COPY_PAGE</c> are supported.</summary>
    public const int XENFEAT_highmem_assist = 6;
    /// <summary>GNTTABOP_map_grant_ref honours flags for the PTE's available bits.</summary>
    public const int XENFEAT_gnttab_map_avail_bits = 7;
    /// <summary>x86: the HVM callback vector type is supported.</summary>
    public const int XENFEAT_hvm_callback_vector = 8;
    /// <summary>x86: the pvclock algorithm is safe on HVM.</summary>
    public const int XENFEAT_hvm_safe_pvclock = 9;
    /// <summary>x86: HVM guests may use PIRQs.</summary>
    public const int XENFEAT_hvm_pirqs = 10;
    /// <summary>Operation as dom0 is supported.</summary>
    public const int XENFEAT_dom0 = 11;
    // 12 was XENFEAT_grant_map_identity: deprecated, commented out in the header.
    /// <summary>XENMEMF_vnode may name a virtual node in memory ops.</summary>
    public const int XENFEAT_memory_op_vnode_supported = 13;
    /// <summary>Arm: the SMC calling convention is supported.</summary>
    public const int XENFEAT_ARM_SMCCC_supported = 14;
    /// <summary>x86 PVH: the ACPI RSDP may be anywhere, not only below 1MB (Linux guests).</summary>
    public const int XENFEAT_linux_rsdp_unrestricted = 15;
    /// <summary>The domain is not direct-mapped (gfn != mfn).</summary>
    public const int XENFEAT_not_direct_mapped = 16;
    /// <summary>The domain is direct-mapped (gfn == mfn).</summary>
    public const int XENFEAT_direct_mapped = 17;

    /// <summary>Number of 32-bit submaps XENVER_get_features reports.</summary>
    public const int XENFEAT_NR_SUBMAPS = 1;
}
