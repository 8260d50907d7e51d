/* xen/io/xs_wire.h */
#include "probe.h"

#include <errno.h> /* xs_wire.h defines its xsd_errors[] table only when EINVAL is known */
#include <stdio.h>

#include <xen/xen.h>
#include <xen/io/xs_wire.h>

void probe_io_xs_wire(void)
{
    probe_header("io/xs_wire.h");

    CONST(XS_CONTROL);
    CONST(XS_DEBUG);
    CONST(XS_DIRECTORY);
    CONST(XS_READ);
    CONST(XS_GET_PERMS);
    CONST(XS_WATCH);
    CONST(XS_UNWATCH);
    CONST(XS_TRANSACTION_START);
    CONST(XS_TRANSACTION_END);
    CONST(XS_INTRODUCE);
    CONST(XS_RELEASE);
    CONST(XS_GET_DOMAIN_PATH);
    CONST(XS_WRITE);
    CONST(XS_MKDIR);
    CONST(XS_RM);
    CONST(XS_SET_PERMS);
    CONST(XS_WATCH_EVENT);
    CONST(XS_ERROR);
    CONST(XS_IS_DOMAIN_INTRODUCED);
    CONST(XS_RESUME);
    CONST(XS_SET_TARGET);
    CONST(XS_RESET_WATCHES);
    CONST(XS_DIRECTORY_PART);
    CONST(XS_TYPE_COUNT);
    CONST(XS_INVALID);

    STRING(XS_WRITE_NONE);
    STRING(XS_WRITE_CREATE);
    STRING(XS_WRITE_CREATE_EXCL);

    /*
     * The error table. On the wire an XS_ERROR reply carries only the errno's name ("ENOENT");
     * the errnum beside it is the C library's value on the build host, not part of the ABI.
     * Walking the array (rather than naming entries here) makes a new header entry show up in
     * the JSON: one string XSD_ERROR_<NAME> = "<NAME>" per entry, and the entry count.
     */
    for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "XSD_ERROR_%s", xsd_errors[i].errstring);
        probe_string(name, xsd_errors[i].errstring);
    }
    CONST_AS("XSD_ERROR_COUNT", sizeof(xsd_errors) / sizeof(xsd_errors[0]));
    STRUCT(xsd_errors) FIELD(errnum) FIELD(errstring) END();

    STRUCT(xsd_sockmsg) FIELD(type) FIELD(req_id) FIELD(tx_id) FIELD(len) END();

    CONST(XS_WATCH_PATH);
    CONST(XS_WATCH_TOKEN);

    CONST(XENSTORE_RING_SIZE);
    CONST_AS("MASK_XENSTORE_IDX_mask", MASK_XENSTORE_IDX(~(XENSTORE_RING_IDX)0));
    STRUCT(xenstore_domain_interface)
        FIELD(req) FIELD(rsp) FIELD(req_cons) FIELD(req_prod) FIELD(rsp_cons) FIELD(rsp_prod)
        FIELD(server_features) FIELD(connection) FIELD(error)
    END();

    CONST(XENSTORE_PAYLOAD_MAX);
    CONST(XENSTORE_ABS_PATH_MAX);
    CONST(XENSTORE_REL_PATH_MAX);
    CONST(XENSTORE_SERVER_FEATURE_RECONNECTION);
    CONST(XENSTORE_SERVER_FEATURE_ERROR);
    CONST(XENSTORE_CONNECTED);
    CONST(XENSTORE_RECONNECT);
    CONST(XENSTORE_ERROR_NONE);
    CONST(XENSTORE_ERROR_COMM);
    CONST(XENSTORE_ERROR_RINGIDX);
    CONST(XENSTORE_ERROR_PROTO);
}
