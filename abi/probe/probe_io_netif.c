/* xen/io/netif.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/netif.h>

void probe_io_netif(void)
{
    probe_header("io/netif.h");

    CONST(XEN_NETIF_NR_SLOTS_MIN);

    /* Control ring: hash types and algorithms, request types, statuses, static grants. */
    CONST(_XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    CONST(XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    CONST(_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    CONST(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    CONST(_XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    CONST(XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    CONST(_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    CONST(XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    CONST(XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    CONST(XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    CONST(XEN_NETIF_CTRL_TYPE_INVALID);
    CONST(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
    CONST(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS);
    CONST(XEN_NETIF_CTRL_TYPE_SET_HASH_KEY);
    CONST(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
    CONST(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE);
    CONST(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING);
    CONST(XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM);
    CONST(XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE);
    CONST(XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING);
    CONST(XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING);
    CONST(XEN_NETIF_CTRL_STATUS_SUCCESS);
    CONST(XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    CONST(XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CONST(XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW);
    CONST(_XEN_NETIF_CTRLF_GREF_readonly);
    CONST(XEN_NETIF_CTRLF_GREF_readonly);

    /* Transmit. */
    CONST(_NETTXF_csum_blank);
    CONST(NETTXF_csum_blank);
    CONST(_NETTXF_data_validated);
    CONST(NETTXF_data_validated);
    CONST(_NETTXF_more_data);
    CONST(NETTXF_more_data);
    CONST(_NETTXF_extra_info);
    CONST(NETTXF_extra_info);
    CONST(XEN_NETIF_MAX_TX_SIZE);

    /* Extra info descriptors. */
    CONST(XEN_NETIF_EXTRA_TYPE_NONE);
    CONST(XEN_NETIF_EXTRA_TYPE_GSO);
    CONST(XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
    CONST(XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
    CONST(XEN_NETIF_EXTRA_TYPE_HASH);
    CONST(XEN_NETIF_EXTRA_TYPE_MAX);
    CONST(_XEN_NETIF_EXTRA_FLAG_MORE);
    CONST(XEN_NETIF_EXTRA_FLAG_MORE);
    CONST(XEN_NETIF_GSO_TYPE_NONE);
    CONST(XEN_NETIF_GSO_TYPE_TCPV4);
    CONST(XEN_NETIF_GSO_TYPE_TCPV6);

    /* Receive. */
    CONST(_NETRXF_data_validated);
    CONST(NETRXF_data_validated);
    CONST(_NETRXF_csum_blank);
    CONST(NETRXF_csum_blank);
    CONST(_NETRXF_more_data);
    CONST(NETRXF_more_data);
    CONST(_NETRXF_extra_info);
    CONST(NETRXF_extra_info);
    CONST(_NETRXF_gso_prefix);
    CONST(NETRXF_gso_prefix);

    CONST(NETIF_RSP_DROPPED);
    CONST(NETIF_RSP_ERROR);
    CONST(NETIF_RSP_OKAY);
    CONST(NETIF_RSP_NULL);

    STRUCT(xen_netif_ctrl_request) FIELD(id) FIELD(type) FIELD(data) END();
    STRUCT(xen_netif_ctrl_response) FIELD(id) FIELD(type) FIELD(status) FIELD(data) END();
    STRUCT(xen_netif_gref) FIELD(ref) FIELD(flags) FIELD(status) END();

    STRUCT(netif_tx_request) FIELD(gref) FIELD(offset) FIELD(flags) FIELD(id) FIELD(size) END();
    STRUCT(netif_extra_info)
        FIELD(type) FIELD(flags) FIELD(u)
        FIELD(u.gso.size) FIELD(u.gso.type) FIELD(u.gso.pad) FIELD(u.gso.features)
        FIELD(u.mcast.addr)
        FIELD(u.hash.type) FIELD(u.hash.algorithm) FIELD(u.hash.value)
        FIELD(u.pad)
    END();
    STRUCT(netif_tx_response) FIELD(id) FIELD(status) END();
    STRUCT(netif_rx_request) FIELD(id) FIELD(pad) FIELD(gref) END();
    STRUCT(netif_rx_response) FIELD(id) FIELD(offset) FIELD(flags) FIELD(status) END();

    /* DEFINE_RING_TYPES(xen_netif_ctrl, ...), (netif_tx, ...) and (netif_rx, ...) */
#define PROBE_SRING(name) \
    UNION(name##_sring_entry) FIELD(req) FIELD(rsp) END(); \
    STRUCT(name##_sring) \
        FIELD(req_prod) FIELD(req_event) FIELD(rsp_prod) FIELD(rsp_event) \
        FIELD(pvt) FIELD(pvt.netif.smartpoll_active) FIELD(pvt.tapif_user.msg) FIELD(pvt.pvt_pad) \
        FIELD(__pad) FIELD(ring) \
    END()
    PROBE_SRING(xen_netif_ctrl);
    PROBE_SRING(netif_tx);
    PROBE_SRING(netif_rx);
#undef PROBE_SRING
}
