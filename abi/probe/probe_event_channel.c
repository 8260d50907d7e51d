/* xen/event_channel.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/event_channel.h>

void probe_event_channel(void)
{
    probe_header("event_channel.h");

    CONST(EVTCHNOP_bind_interdomain);
    CONST(EVTCHNOP_bind_virq);
    CONST(EVTCHNOP_bind_pirq);
    CONST(EVTCHNOP_close);
    CONST(EVTCHNOP_send);
    CONST(EVTCHNOP_status);
    CONST(EVTCHNOP_alloc_unbound);
    CONST(EVTCHNOP_bind_ipi);
    CONST(EVTCHNOP_bind_vcpu);
    CONST(EVTCHNOP_unmask);
    CONST(EVTCHNOP_reset);
    CONST(EVTCHNOP_init_control);
    CONST(EVTCHNOP_expand_array);
    CONST(EVTCHNOP_set_priority);
    CONST(BIND_PIRQ__WILL_SHARE);
    CONST(EVTCHNSTAT_closed);
    CONST(EVTCHNSTAT_unbound);
    CONST(EVTCHNSTAT_interdomain);
    CONST(EVTCHNSTAT_pirq);
    CONST(EVTCHNSTAT_virq);
    CONST(EVTCHNSTAT_ipi);
    CONST(EVTCHN_2L_NR_CHANNELS);
    CONST(EVTCHN_FIFO_PRIORITY_MAX);
    CONST(EVTCHN_FIFO_PRIORITY_DEFAULT);
    CONST(EVTCHN_FIFO_PRIORITY_MIN);
    CONST(EVTCHN_FIFO_MAX_QUEUES);
    CONST(EVTCHN_FIFO_PENDING);
    CONST(EVTCHN_FIFO_MASKED);
    CONST(EVTCHN_FIFO_LINKED);
    CONST(EVTCHN_FIFO_BUSY);
    CONST(EVTCHN_FIFO_LINK_BITS);
    CONST(EVTCHN_FIFO_LINK_MASK);
    CONST(EVTCHN_FIFO_NR_CHANNELS);

    STRUCT(evtchn_alloc_unbound) FIELD(dom) FIELD(remote_dom) FIELD(port) END();
    STRUCT(evtchn_bind_interdomain) FIELD(remote_dom) FIELD(remote_port) FIELD(local_port) END();
    STRUCT(evtchn_bind_virq) FIELD(virq) FIELD(vcpu) FIELD(port) END();
    STRUCT(evtchn_bind_pirq) FIELD(pirq) FIELD(flags) FIELD(port) END();
    STRUCT(evtchn_bind_ipi) FIELD(vcpu) FIELD(port) END();
    STRUCT(evtchn_close) FIELD(port) END();
    STRUCT(evtchn_send) FIELD(port) END();
    STRUCT(evtchn_status)
        FIELD(dom) FIELD(port) FIELD(status) FIELD(vcpu) FIELD(u)
        FIELD(u.unbound.dom) FIELD(u.interdomain.dom) FIELD(u.interdomain.port)
        FIELD(u.pirq) FIELD(u.virq)
    END();
    STRUCT(evtchn_bind_vcpu) FIELD(port) FIELD(vcpu) END();
    STRUCT(evtchn_unmask) FIELD(port) END();
    STRUCT(evtchn_reset) FIELD(dom) END();
    STRUCT(evtchn_init_control) FIELD(control_gfn) FIELD(offset) FIELD(vcpu) FIELD(link_bits) FIELD(_pad) END();
    STRUCT(evtchn_expand_array) FIELD(array_gfn) END();
    STRUCT(evtchn_set_priority) FIELD(port) FIELD(priority) END();
    STRUCT(evtchn_op) FIELD(cmd) FIELD(u) END();
    STRUCT(evtchn_fifo_control_block) FIELD(ready) FIELD(_rsvd) FIELD(head) END();
}
