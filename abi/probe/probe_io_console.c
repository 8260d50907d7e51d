/* xen/io/console.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/io/console.h>

void probe_io_console(void)
{
    probe_header("io/console.h");

    /* MASK_XENCONS_IDX(idx, ring) masks with sizeof(ring) - 1: one mask per ring. */
    CONST_AS("MASK_XENCONS_IDX_in_mask",
             MASK_XENCONS_IDX(~(XENCONS_RING_IDX)0, ((struct xencons_interface *)0)->in));
    CONST_AS("MASK_XENCONS_IDX_out_mask",
             MASK_XENCONS_IDX(~(XENCONS_RING_IDX)0, ((struct xencons_interface *)0)->out));

    STRUCT(xencons_interface)
        FIELD(in) FIELD(out) FIELD(in_cons) FIELD(in_prod) FIELD(out_cons) FIELD(out_prod)
    END();
}
