/* xen/arch-x86/xen-x86_64.h (included by xen/arch-x86/xen.h on x86-64) */
#include "probe.h"

#include <xen/xen.h>

void probe_arch_x86_xen_x86_64(void)
{
    probe_header("arch-x86/xen-x86_64.h");

    /* Flat segment selectors in Xen's part of every GDT. */
    CONST(FLAT_RING3_CS32);
    CONST(FLAT_RING3_CS64);
    CONST(FLAT_RING3_DS32);
    CONST(FLAT_RING3_DS64);
    CONST(FLAT_RING3_SS32);
    CONST(FLAT_RING3_SS64);
    CONST(FLAT_KERNEL_DS64);
    CONST(FLAT_KERNEL_DS32);
    CONST(FLAT_KERNEL_DS);
    CONST(FLAT_KERNEL_CS64);
    CONST(FLAT_KERNEL_CS32);
    CONST(FLAT_KERNEL_CS);
    CONST(FLAT_KERNEL_SS64);
    CONST(FLAT_KERNEL_SS32);
    CONST(FLAT_KERNEL_SS);
    CONST(FLAT_USER_DS64);
    CONST(FLAT_USER_DS32);
    CONST(FLAT_USER_DS);
    CONST(FLAT_USER_CS64);
    CONST(FLAT_USER_CS32);
    CONST(FLAT_USER_CS);
    CONST(FLAT_USER_SS64);
    CONST(FLAT_USER_SS32);
    CONST(FLAT_USER_SS);

    /* Xen's slice of the guest's virtual address space. */
    CONST(__HYPERVISOR_VIRT_START);
    CONST(__HYPERVISOR_VIRT_END);
    CONST(__MACH2PHYS_VIRT_START);
    CONST(__MACH2PHYS_VIRT_END);
    CONST(HYPERVISOR_VIRT_START);
    CONST(HYPERVISOR_VIRT_END);
    CONST(MACH2PHYS_VIRT_START);
    CONST(MACH2PHYS_VIRT_END);
    CONST(MACH2PHYS_NR_ENTRIES);

    /* HYPERVISOR_set_segment_base. */
    CONST(SEGBASE_FS);
    CONST(SEGBASE_GS_USER);
    CONST(SEGBASE_GS_KERNEL);
    CONST(SEGBASE_GS_USER_SEL);

    /* HYPERVISOR_iret flags. */
    CONST(_VGCF_in_syscall);
    CONST(VGCF_in_syscall);
    CONST(VGCF_IN_SYSCALL);

    STRUCT(iret_context)
        FIELD(rax) FIELD(r11) FIELD(rcx) FIELD(flags) FIELD(rip)
        FIELD(cs) FIELD(rflags) FIELD(rsp) FIELD(ss)
    END();
    /* The 64-bit names only: eax etc. are members of the same anonymous unions. */
    STRUCT(cpu_user_regs)
        FIELD(r15) FIELD(r14) FIELD(r13) FIELD(r12) FIELD(rbp) FIELD(rbx)
        FIELD(r11) FIELD(r10) FIELD(r9) FIELD(r8) FIELD(rax) FIELD(rcx) FIELD(rdx)
        FIELD(rsi) FIELD(rdi) FIELD(error_code) FIELD(entry_vector) FIELD(rip)
        FIELD(cs) FIELD(_pad0) FIELD(saved_upcall_mask) FIELD(_pad1) FIELD(rflags) FIELD(rsp)
        FIELD(ss) FIELD(_pad2) FIELD(es) FIELD(_pad3) FIELD(ds) FIELD(_pad4)
        FIELD(fs) FIELD(_pad5) FIELD(gs) FIELD(_pad6)
    END();
    STRUCT(arch_vcpu_info) FIELD(cr2) FIELD(pad) END();
}
