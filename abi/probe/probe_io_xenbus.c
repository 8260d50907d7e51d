/* xen/io/xenbus.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/io/xenbus.h>

void probe_io_xenbus(void)
{
    probe_header("io/xenbus.h");

    CONST(XenbusStateUnknown);
    CONST(XenbusStateInitialising);
    CONST(XenbusStateInitWait);
    CONST(XenbusStateInitialised);
    CONST(XenbusStateConnected);
    CONST(XenbusStateClosing);
    CONST(XenbusStateClosed);
    CONST(XenbusStateReconfiguring);
    CONST(XenbusStateReconfigured);
}
