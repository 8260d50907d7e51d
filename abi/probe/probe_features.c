/* xen/features.h */
#include "probe.h"

#include <xen/features.h>

void probe_features(void)
{
    probe_header("features.h");

    CONST(XENFEAT_writable_page_tables);
    CONST(XENFEAT_writable_descriptor_tables);
    CONST(XENFEAT_auto_translated_physmap);
    CONST(XENFEAT_supervisor_mode_kernel);
    CONST(XENFEAT_pae_pgdir_above_4gb);
    CONST(XENFEAT_mmu_pt_update_preserve_ad);
    CONST(XENFEAT_highmem_assist);
    CONST(XENFEAT_gnttab_map_avail_bits);
    CONST(XENFEAT_hvm_callback_vector);
    CONST(XENFEAT_hvm_safe_pvclock);
    CONST(XENFEAT_hvm_pirqs);
    CONST(XENFEAT_dom0);
    /* 12 (XENFEAT_grant_map_identity) is commented out in the header: deprecated. */
    CONST(XENFEAT_memory_op_vnode_supported);
    CONST(XENFEAT_ARM_SMCCC_supported);
    CONST(XENFEAT_linux_rsdp_unrestricted);
    CONST(XENFEAT_not_direct_mapped);
    CONST(XENFEAT_direct_mapped);
    CONST(XENFEAT_NR_SUBMAPS);
}
