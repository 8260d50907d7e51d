/* xen/io/blkif.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/blkif.h>

void probe_io_blkif(void)
{
    probe_header("io/blkif.h");

    CONST(BLKIF_OP_READ);
    CONST(BLKIF_OP_WRITE);
    CONST(BLKIF_OP_WRITE_BARRIER);
    CONST(BLKIF_OP_FLUSH_DISKCACHE);
    CONST(BLKIF_OP_RESERVED_1);
    CONST(BLKIF_OP_DISCARD);
    CONST(BLKIF_OP_INDIRECT);
    CONST(BLKIF_MAX_SEGMENTS_PER_REQUEST);
    CONST(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    CONST(BLKIF_DISCARD_SECURE);
    CONST(BLKIF_RSP_EOPNOTSUPP);
    CONST(BLKIF_RSP_ERROR);
    CONST(BLKIF_RSP_OKAY);
    CONST(VDISK_CDROM);
    CONST(VDISK_REMOVABLE);
    CONST(VDISK_READONLY);

    STRUCT(blkif_request_segment) FIELD(gref) FIELD(first_sect) FIELD(last_sect) END();
    STRUCT(blkif_request)
        FIELD(operation) FIELD(nr_segments) FIELD(handle) FIELD(id) FIELD(sector_number) FIELD(seg)
    END();
    STRUCT(blkif_request_discard)
        FIELD(operation) FIELD(flag) FIELD(handle) FIELD(id) FIELD(sector_number) FIELD(nr_sectors)
    END();
    STRUCT(blkif_request_indirect)
        FIELD(operation) FIELD(indirect_op) FIELD(nr_segments) FIELD(id) FIELD(sector_number)
        FIELD(handle) FIELD(indirect_grefs)
    END();
    STRUCT(blkif_response) FIELD(id) FIELD(operation) FIELD(status) END();

    /* DEFINE_RING_TYPES(blkif, struct blkif_request, struct blkif_response) */
    UNION(blkif_sring_entry) FIELD(req) FIELD(rsp) END();
    STRUCT(blkif_sring)
        FIELD(req_prod) FIELD(req_event) FIELD(rsp_prod) FIELD(rsp_event)
        FIELD(pvt) FIELD(pvt.netif.smartpoll_active) FIELD(pvt.tapif_user.msg) FIELD(pvt.pvt_pad)
        FIELD(__pad) FIELD(ring)
    END();
}
