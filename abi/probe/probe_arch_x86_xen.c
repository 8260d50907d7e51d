/* xen/arch-x86/xen.h (included by xen/xen.h on x86) */
#include "probe.h"

#include <xen/xen.h>

void probe_arch_x86_xen(void)
{
    probe_header("arch-x86/xen.h");

    CONST(XEN_HAVE_PV_GUEST_ENTRY);
    CONST(XEN_HAVE_PV_UPCALL_MASK);

    /* GDT entries reserved by Xen. */
    CONST(FIRST_RESERVED_GDT_PAGE);
    CONST(FIRST_RESERVED_GDT_BYTE);
    CONST(FIRST_RESERVED_GDT_ENTRY);

    CONST(XEN_LEGACY_MAX_VCPUS);

    /* vcpu_guest_context.flags. */
    CONST(VGCF_I387_VALID);
    CONST(VGCF_IN_KERNEL);
    CONST(_VGCF_i387_valid);
    CONST(VGCF_i387_valid);
    CONST(_VGCF_in_kernel);
    CONST(VGCF_in_kernel);
    CONST(_VGCF_failsafe_disables_events);
    CONST(VGCF_failsafe_disables_events);
    CONST(_VGCF_syscall_disables_events);
    CONST(VGCF_syscall_disables_events);
    CONST(_VGCF_online);
    CONST(VGCF_online);

    CONST(XEN_CPUID_NO_SUBLEAF);
    CONST(XEN_HVM_DEBUGCONS_IOPORT);

    /* The forced-emulation prefix (ud2; .ascii "xen") as the C header spells it. */
    STRING(XEN_EMULATE_PREFIX);
    STRING(XEN_CPUID);

    STRUCT(trap_info) FIELD(vector) FIELD(flags) FIELD(cs) FIELD(address) END();
    STRUCT(vcpu_guest_context)
        FIELD(fpu_ctxt) FIELD(flags) FIELD(user_regs) FIELD(trap_ctxt)
        FIELD(ldt_base) FIELD(ldt_ents) FIELD(gdt_frames) FIELD(gdt_ents)
        FIELD(kernel_ss) FIELD(kernel_sp) FIELD(ctrlreg) FIELD(debugreg)
        FIELD(event_callback_eip) FIELD(failsafe_callback_eip) FIELD(syscall_callback_eip)
        FIELD(vm_assist) FIELD(fs_base) FIELD(gs_base_kernel) FIELD(gs_base_user)
        FIELD(fpu_ctxt.x)
        FIELD(user_regs.rip) FIELD(user_regs.cs) FIELD(user_regs.rflags)
        FIELD(user_regs.rsp) FIELD(user_regs.ss) FIELD(user_regs.rsi)
        FIELD(user_regs.ds) FIELD(user_regs.es) FIELD(user_regs.fs) FIELD(user_regs.gs)
    END();
    STRUCT(arch_shared_info)
        FIELD(max_pfn) FIELD(pfn_to_mfn_frame_list_list) FIELD(nmi_reason)
        FIELD(p2m_cr3) FIELD(p2m_vaddr) FIELD(p2m_generation)
    END();
    STRUCT(xen_cpuid_leaf) FIELD(leaf) FIELD(subleaf) FIELD(a) FIELD(b) FIELD(c) FIELD(d) END();
    STRUCT(xen_msr_entry) FIELD(idx) FIELD(flags) FIELD(val) END();
}
