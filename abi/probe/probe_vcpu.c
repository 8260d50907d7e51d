/* xen/vcpu.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/vcpu.h>

void probe_vcpu(void)
{
    probe_header("vcpu.h");

    CONST(VCPUOP_initialise);
    CONST(VCPUOP_up);
    CONST(VCPUOP_down);
    CONST(VCPUOP_is_up);
    CONST(VCPUOP_get_runstate_info);
    CONST(VCPUOP_register_runstate_memory_area);
    CONST(VCPUOP_set_periodic_timer);
    CONST(VCPUOP_stop_periodic_timer);
    CONST(VCPUOP_set_singleshot_timer);
    CONST(VCPUOP_stop_singleshot_timer);
    CONST(VCPUOP_register_vcpu_info);
    CONST(VCPUOP_send_nmi);
    CONST(VCPUOP_get_physid);
    CONST(VCPUOP_register_vcpu_time_memory_area);

    CONST(RUNSTATE_running);
    CONST(RUNSTATE_runnable);
    CONST(RUNSTATE_blocked);
    CONST(RUNSTATE_offline);
    CONST(XEN_RUNSTATE_UPDATE);

    CONST(_VCPU_SSHOTTMR_future);
    CONST(VCPU_SSHOTTMR_future);

    STRUCT(vcpu_runstate_info) FIELD(state) FIELD(state_entry_time) FIELD(time) END();
    STRUCT(vcpu_register_runstate_memory_area) FIELD(addr) FIELD(addr.h) FIELD(addr.v) FIELD(addr.p) END();
    STRUCT(vcpu_set_periodic_timer) FIELD(period_ns) END();
    STRUCT(vcpu_set_singleshot_timer) FIELD(timeout_abs_ns) FIELD(flags) END();
    STRUCT(vcpu_register_vcpu_info) FIELD(mfn) FIELD(offset) FIELD(rsvd) END();
    STRUCT(vcpu_get_physid) FIELD(phys_id) END();
    STRUCT(vcpu_register_time_memory_area) FIELD(addr) FIELD(addr.h) FIELD(addr.v) FIELD(addr.p) END();
}
