/* xen/sched.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/sched.h>

void probe_sched(void)
{
    probe_header("sched.h");

    /* enum sched_op */
    CONST(SCHEDOP_yield);
    CONST(SCHEDOP_block);
    CONST(SCHEDOP_shutdown);
    CONST(SCHEDOP_poll);
    CONST(SCHEDOP_remote_shutdown);
    CONST(SCHEDOP_shutdown_code);
    CONST(SCHEDOP_watchdog);
    CONST(SCHEDOP_pin_override);

    /* enum sched_shutdown_reason */
    CONST(SHUTDOWN_poweroff);
    CONST(SHUTDOWN_reboot);
    CONST(SHUTDOWN_suspend);
    CONST(SHUTDOWN_crash);
    CONST(SHUTDOWN_watchdog);
    CONST(SHUTDOWN_soft_reset);
    CONST(SHUTDOWN_MAX);

    STRUCT(sched_shutdown) FIELD(reason) END();
    STRUCT(sched_poll) FIELD(ports) FIELD(nr_ports) FIELD(timeout) END();
    STRUCT(sched_remote_shutdown) FIELD(domain_id) FIELD(reason) END();
    STRUCT(sched_watchdog) FIELD(id) FIELD(timeout) END();
    STRUCT(sched_pin_override) FIELD(pcpu) END();
}
