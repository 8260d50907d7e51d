/* xen/io/ring.h: the plain constants, and how many entries each ring we use gets in one page. */
#include "probe.h"

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>

void probe_io_ring(void)
{
    probe_header("io/ring.h");

    CONST(XEN_PAGE_SHIFT);

    /* Each <name>_sring struct itself is probed with the header that instantiates it. */
    CONST_AS("RING_SIZE_blkif", __CONST_RING_SIZE(blkif, 4096));
    CONST_AS("RING_SIZE_netif_tx", __CONST_RING_SIZE(netif_tx, 4096));
    CONST_AS("RING_SIZE_netif_rx", __CONST_RING_SIZE(netif_rx, 4096));
    CONST_AS("RING_SIZE_xen_netif_ctrl", __CONST_RING_SIZE(xen_netif_ctrl, 4096));
}
