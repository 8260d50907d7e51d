/* xen/xen.h */
#include "probe.h"

#include <xen/xen.h>

void probe_xen(void)
{
    probe_header("xen.h");

    /* Hypercall numbers (enum hypercall_num). */
    CONST(__HYPERVISOR_set_trap_table);
    CONST(__HYPERVISOR_mmu_update);
    CONST(__HYPERVISOR_set_gdt);
    CONST(__HYPERVISOR_stack_switch);
    CONST(__HYPERVISOR_set_callbacks);
    CONST(__HYPERVISOR_fpu_taskswitch);
    CONST(__HYPERVISOR_sched_op_compat);
    CONST(__HYPERVISOR_platform_op);
    CONST(__HYPERVISOR_set_debugreg);
    CONST(__HYPERVISOR_get_debugreg);
    CONST(__HYPERVISOR_update_descriptor);
    CONST(__HYPERVISOR_memory_op);
    CONST(__HYPERVISOR_multicall);
    CONST(__HYPERVISOR_update_va_mapping);
    CONST(__HYPERVISOR_set_timer_op);
    CONST(__HYPERVISOR_event_channel_op_compat);
    CONST(__HYPERVISOR_xen_version);
    CONST(__HYPERVISOR_console_io);
    CONST(__HYPERVISOR_physdev_op_compat);
    CONST(__HYPERVISOR_grant_table_op);
    CONST(__HYPERVISOR_vm_assist);
    CONST(__HYPERVISOR_update_va_mapping_otherdomain);
    CONST(__HYPERVISOR_iret);
    CONST(__HYPERVISOR_vcpu_op);
    CONST(__HYPERVISOR_set_segment_base);
    CONST(__HYPERVISOR_mmuext_op);
    CONST(__HYPERVISOR_xsm_op);
    CONST(__HYPERVISOR_nmi_op);
    CONST(__HYPERVISOR_sched_op);
    CONST(__HYPERVISOR_callback_op);
    CONST(__HYPERVISOR_xenoprof_op);
    CONST(__HYPERVISOR_event_channel_op);
    CONST(__HYPERVISOR_physdev_op);
    CONST(__HYPERVISOR_hvm_op);
    CONST(__HYPERVISOR_sysctl);
    CONST(__HYPERVISOR_domctl);
    CONST(__HYPERVISOR_kexec_op);
    CONST(__HYPERVISOR_tmem_op);
    CONST(__HYPERVISOR_argo_op);
    CONST(__HYPERVISOR_xenpmu_op);
    CONST(__HYPERVISOR_dm_op);
    CONST(__HYPERVISOR_hypfs_op);
    CONST(__HYPERVISOR_arch_0);
    CONST(__HYPERVISOR_arch_1);
    CONST(__HYPERVISOR_arch_2);
    CONST(__HYPERVISOR_arch_3);
    CONST(__HYPERVISOR_arch_4);
    CONST(__HYPERVISOR_arch_5);
    CONST(__HYPERVISOR_arch_6);
    CONST(__HYPERVISOR_arch_7);

    /* Virtual interrupts (enum virq). */
    CONST(VIRQ_TIMER);
    CONST(VIRQ_DEBUG);
    CONST(VIRQ_CONSOLE);
    CONST(VIRQ_DOM_EXC);
    CONST(VIRQ_TBUF);
    CONST(VIRQ_DEBUGGER);
    CONST(VIRQ_XENOPROF);
    CONST(VIRQ_CON_RING);
    CONST(VIRQ_PCPU_STATE);
    CONST(VIRQ_MEM_EVENT);
    CONST(VIRQ_ARGO);
    CONST(VIRQ_ENOMEM);
    CONST(VIRQ_XENPMU);
    CONST(VIRQ_ARCH_0);
    CONST(VIRQ_ARCH_1);
    CONST(VIRQ_ARCH_2);
    CONST(VIRQ_ARCH_3);
    CONST(VIRQ_ARCH_4);
    CONST(VIRQ_ARCH_5);
    CONST(VIRQ_ARCH_6);
    CONST(VIRQ_ARCH_7);
    CONST(NR_VIRQS);

    /* HYPERVISOR_mmu_update: ptr[1:0]. */
    CONST(MMU_NORMAL_PT_UPDATE);
    CONST(MMU_MACHPHYS_UPDATE);
    CONST(MMU_PT_UPDATE_PRESERVE_AD);
    CONST(MMU_PT_UPDATE_NO_TRANSLATE);

    /* HYPERVISOR_mmuext_op (enum mmuext_cmd). */
    CONST(MMUEXT_PIN_L1_TABLE);
    CONST(MMUEXT_PIN_L2_TABLE);
    CONST(MMUEXT_PIN_L3_TABLE);
    CONST(MMUEXT_PIN_L4_TABLE);
    CONST(MMUEXT_UNPIN_TABLE);
    CONST(MMUEXT_NEW_BASEPTR);
    CONST(MMUEXT_TLB_FLUSH_LOCAL);
    CONST(MMUEXT_INVLPG_LOCAL);
    CONST(MMUEXT_TLB_FLUSH_MULTI);
    CONST(MMUEXT_INVLPG_MULTI);
    CONST(MMUEXT_TLB_FLUSH_ALL);
    CONST(MMUEXT_INVLPG_ALL);
    CONST(MMUEXT_FLUSH_CACHE);
    CONST(MMUEXT_SET_LDT);
    CONST(MMUEXT_NEW_USER_BASEPTR);
    CONST(MMUEXT_CLEAR_PAGE);
    CONST(MMUEXT_COPY_PAGE);
    CONST(MMUEXT_FLUSH_CACHE_GLOBAL);
    CONST(MMUEXT_MARK_SUPER);
    CONST(MMUEXT_UNMARK_SUPER);

    /* HYPERVISOR_update_va_mapping flags (enum uvm_flags). */
    CONST(UVMF_NONE);
    CONST(UVMF_TLB_FLUSH);
    CONST(UVMF_INVLPG);
    CONST(UVMF_FLUSHTYPE_MASK);
    CONST(UVMF_MULTI);
    CONST(UVMF_LOCAL);
    CONST(UVMF_ALL);

    /* HYPERVISOR_console_io. */
    CONST(CONSOLEIO_write);
    CONST(CONSOLEIO_read);

    /* HYPERVISOR_vm_assist. */
    CONST(VMASST_CMD_enable);
    CONST(VMASST_CMD_disable);
    CONST(VMASST_TYPE_4gb_segments);
    CONST(VMASST_TYPE_4gb_segments_notify);
    CONST(VMASST_TYPE_writable_pagetables);
    CONST(VMASST_TYPE_pae_extended_cr3);
    CONST(VMASST_TYPE_architectural_iopl);
    CONST(VMASST_TYPE_runstate_update_flag);
    CONST(VMASST_TYPE_m2p_strict);

    /* Domain ids. */
    CONST(DOMID_FIRST_RESERVED);
    CONST(DOMID_SELF);
    CONST(DOMID_IO);
    CONST(DOMID_XEN);
    CONST(DOMID_COW);
    CONST(DOMID_INVALID);
    CONST(DOMID_IDLE);
    CONST(DOMID_MASK);

    /* vcpu_time_info.flags. */
    CONST(XEN_PVCLOCK_TSC_STABLE_BIT);
    CONST(XEN_PVCLOCK_GUEST_STOPPED);

    /* start_info. */
    CONST(MAX_GUEST_CMDLINE);
    CONST(SIF_PRIVILEGED);
    CONST(SIF_INITDOMAIN);
    CONST(SIF_MULTIBOOT_MOD);
    CONST(SIF_MOD_START_PFN);
    CONST(SIF_VIRT_P2M_4TOOLS);
    CONST(SIF_PM_MASK);

    /* dom0_vga_console_info.video_type. */
    CONST(XEN_VGATYPE_TEXT_MODE_3);
    CONST(XEN_VGATYPE_VESA_LFB);
    CONST(XEN_VGATYPE_EFI_LFB);

    STRUCT(mmuext_op)
        FIELD(cmd) FIELD(arg1) FIELD(arg2)
        FIELD(arg1.mfn) FIELD(arg1.linear_addr)
        FIELD(arg2.nr_ents) FIELD(arg2.vcpumask) FIELD(arg2.src_mfn)
    END();
    STRUCT(mmu_update) FIELD(ptr) FIELD(val) END();
    STRUCT(multicall_entry) FIELD(op) FIELD(result) FIELD(args) END();
    STRUCT(vcpu_time_info)
        FIELD(version) FIELD(pad0) FIELD(tsc_timestamp) FIELD(system_time)
        FIELD(tsc_to_system_mul) FIELD(tsc_shift) FIELD(flags) FIELD(pad1)
    END();
    STRUCT(vcpu_info)
        FIELD(evtchn_upcall_pending) FIELD(evtchn_upcall_mask) FIELD(evtchn_pending_sel)
        FIELD(arch) FIELD(time)
        FIELD(arch.cr2)
        FIELD(time.version) FIELD(time.tsc_timestamp) FIELD(time.system_time)
        FIELD(time.tsc_to_system_mul) FIELD(time.tsc_shift) FIELD(time.flags)
    END();
    STRUCT(shared_info)
        FIELD(vcpu_info) FIELD(evtchn_pending) FIELD(evtchn_mask)
        FIELD(wc_version) FIELD(wc_sec) FIELD(wc_nsec) FIELD(wc_sec_hi) FIELD(arch)
        FIELD(arch.max_pfn) FIELD(arch.pfn_to_mfn_frame_list_list) FIELD(arch.nmi_reason)
        FIELD(arch.p2m_cr3) FIELD(arch.p2m_vaddr) FIELD(arch.p2m_generation)
    END();
    STRUCT(start_info)
        FIELD(magic) FIELD(nr_pages) FIELD(shared_info) FIELD(flags)
        FIELD(store_mfn) FIELD(store_evtchn) FIELD(console)
        FIELD(console.domU.mfn) FIELD(console.domU.evtchn)
        FIELD(console.dom0.info_off) FIELD(console.dom0.info_size)
        FIELD(pt_base) FIELD(nr_pt_frames) FIELD(mfn_list) FIELD(mod_start) FIELD(mod_len)
        FIELD(cmd_line) FIELD(first_p2m_pfn) FIELD(nr_p2m_frames)
    END();
    STRUCT(xen_multiboot_mod_list) FIELD(mod_start) FIELD(mod_end) FIELD(cmdline) FIELD(pad) END();
    STRUCT(dom0_vga_console_info)
        FIELD(video_type) FIELD(u)
        FIELD(u.text_mode_3.font_height) FIELD(u.text_mode_3.cursor_x) FIELD(u.text_mode_3.cursor_y)
        FIELD(u.text_mode_3.rows) FIELD(u.text_mode_3.columns)
        FIELD(u.vesa_lfb.width) FIELD(u.vesa_lfb.height) FIELD(u.vesa_lfb.bytes_per_line)
        FIELD(u.vesa_lfb.bits_per_pixel) FIELD(u.vesa_lfb.lfb_base) FIELD(u.vesa_lfb.lfb_size)
        FIELD(u.vesa_lfb.red_pos) FIELD(u.vesa_lfb.red_size)
        FIELD(u.vesa_lfb.green_pos) FIELD(u.vesa_lfb.green_size)
        FIELD(u.vesa_lfb.blue_pos) FIELD(u.vesa_lfb.blue_size)
        FIELD(u.vesa_lfb.rsvd_pos) FIELD(u.vesa_lfb.rsvd_size)
        FIELD(u.vesa_lfb.gbl_caps) FIELD(u.vesa_lfb.mode_attrs) FIELD(u.vesa_lfb.pad)
        FIELD(u.vesa_lfb.ext_lfb_base)
    END();
    TYPEDEF(xen_uuid_t) FIELD(a) END();
}
