/* xen/callback.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/callback.h>

void probe_callback(void)
{
    probe_header("callback.h");

    CONST(CALLBACKTYPE_event);
    CONST(CALLBACKTYPE_failsafe);
    CONST(CALLBACKTYPE_syscall);
    CONST(CALLBACKTYPE_sysenter_deprecated);
    CONST(CALLBACKTYPE_nmi);
    CONST(CALLBACKTYPE_sysenter);
    CONST(CALLBACKTYPE_syscall32);

    CONST(_CALLBACKF_mask_events);
    CONST(CALLBACKF_mask_events);

    CONST(CALLBACKOP_register);
    CONST(CALLBACKOP_unregister);

    STRUCT(callback_register) FIELD(type) FIELD(flags) FIELD(address) END();
    STRUCT(callback_unregister) FIELD(type) FIELD(_unused) END();
}
