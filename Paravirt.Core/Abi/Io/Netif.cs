using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/netif.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.
//
// Three rings: transmit (the frontend [front] sends packets to the backend [back]), receive (the
// front posts buffers, the back fills them) and the optional control ring (front asks, back answers).

/// <summary>Constants of <c>xen/io/netif.h</c>: flags, extra-info and GSO types, control-ring messages, statuses.</summary>
public static class Netif
{
    /// <summary>Ring slots per packet every backend must accept (older Linux MAX_SKB_FRAGS).</summary>
    public const int XEN_NETIF_NR_SLOTS_MIN = 18;

    // Control ring: hash types (bit numbers and bits of XEN_NETIF_CTRL_TYPE_{GET,SET}_HASH_FLAGS).

    public const int _XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 0;
    /// <summary>Hash over IPv4 source and destination addresses.</summary>
    public const int XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4;
    public const int _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1;
    /// <summary>Hash over IPv4 addresses and TCP ports.</summary>
    public const int XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
    public const int _XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 2;
    /// <summary>Hash over IPv6 source and destination addresses.</summary>
    public const int XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6;
    public const int _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 3;
    /// <summary>Hash over IPv6 addresses and TCP ports.</summary>
    public const int XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;

    public const int XEN_NETIF_CTRL_HASH_ALGORITHM_NONE = 0;
    /// <summary>Toeplitz hash, keyed by XEN_NETIF_CTRL_TYPE_SET_HASH_KEY.</summary>
    public const int XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ = 1;

    /// <summary><see cref="xen_netif_ctrl_request.type"/> values.</summary>
    public const int XEN_NETIF_CTRL_TYPE_INVALID = 0;
    public const int XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS = 1;
    public const int XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS = 2;
    public const int XEN_NETIF_CTRL_TYPE_SET_HASH_KEY = 3;
    public const int XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE = 4;
    public const int XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE = 5;
    public const int XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING = 6;
    public const int XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM = 7;
    public const int XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE = 8;
    public const int XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING = 9;
    public const int XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING = 10;

    /// <summary><see cref="xen_netif_ctrl_response.status"/> and <see cref="xen_netif_gref.status"/> values.</summary>
    public const int XEN_NETIF_CTRL_STATUS_SUCCESS = 0;
    public const int XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED = 1;
    public const int XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER = 2;
    public const int XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW = 3;

    /// <summary><see cref="xen_netif_gref.flags"/>: map the grant read-only.</summary>
    public const int _XEN_NETIF_CTRLF_GREF_readonly = 0;
    public const int XEN_NETIF_CTRLF_GREF_readonly = 1 << _XEN_NETIF_CTRLF_GREF_readonly;

    // Transmit request flags (netif_tx_request.flags).

    public const int _NETTXF_csum_blank = 0;
    /// <summary>The protocol checksum field is blank (checksum offload).</summary>
    public const int NETTXF_csum_blank = 1 << _NETTXF_csum_blank;
    public const int _NETTXF_data_validated = 1;
    /// <summary>The packet data has been validated against its protocol checksum.</summary>
    public const int NETTXF_data_validated = 1 << _NETTXF_data_validated;
    public const int _NETTXF_more_data = 2;
    /// <summary>The packet continues in the next request.</summary>
    public const int NETTXF_more_data = 1 << _NETTXF_more_data;
    public const int _NETTXF_extra_info = 3;
    /// <summary>The request is followed by <see cref="netif_extra_info"/> slot(s).</summary>
    public const int NETTXF_extra_info = 1 << _NETTXF_extra_info;

    /// <summary>Largest <see cref="netif_tx_request.size"/>.</summary>
    public const int XEN_NETIF_MAX_TX_SIZE = 0xFFFF;

    /// <summary><see cref="netif_extra_info.type"/>: never used (invalid).</summary>
    public const int XEN_NETIF_EXTRA_TYPE_NONE = 0;
    /// <summary>Uses <c>u.gso</c>.</summary>
    public const int XEN_NETIF_EXTRA_TYPE_GSO = 1;
    /// <summary>Uses <c>u.mcast</c>.</summary>
    public const int XEN_NETIF_EXTRA_TYPE_MCAST_ADD = 2;
    /// <summary>Uses <c>u.mcast</c>.</summary>
    public const int XEN_NETIF_EXTRA_TYPE_MCAST_DEL = 3;
    /// <summary>Uses <c>u.hash</c>.</summary>
    public const int XEN_NETIF_EXTRA_TYPE_HASH = 4;
    public const int XEN_NETIF_EXTRA_TYPE_MAX = 5;

    /// <summary><see cref="netif_extra_info.flags"/>: another extra-info slot follows.</summary>
    public const int _XEN_NETIF_EXTRA_FLAG_MORE = 0;
    public const int XEN_NETIF_EXTRA_FLAG_MORE = 1 << _XEN_NETIF_EXTRA_FLAG_MORE;

    /// <summary><c>u.gso.type</c> values.</summary>
    public const int XEN_NETIF_GSO_TYPE_NONE = 0;
    public const int XEN_NETIF_GSO_TYPE_TCPV4 = 1;
    public const int XEN_NETIF_GSO_TYPE_TCPV6 = 2;

    // Receive response flags (netif_rx_response.flags).

    public const int _NETRXF_data_validated = 0;
    /// <summary>The packet data has been validated against its protocol checksum.</summary>
    public const int NETRXF_data_validated = 1 << _NETRXF_data_validated;
    public const int _NETRXF_csum_blank = 1;
    /// <summary>The protocol checksum field is blank (checksum offload).</summary>
    public const int NETRXF_csum_blank = 1 << _NETRXF_csum_blank;
    public const int _NETRXF_more_data = 2;
    /// <summary>The packet continues in the next response.</summary>
    public const int NETRXF_more_data = 1 << _NETRXF_more_data;
    public const int _NETRXF_extra_info = 3;
    /// <summary>The response is followed by <see cref="netif_extra_info"/> slot(s).</summary>
    public const int NETRXF_extra_info = 1 << _NETRXF_extra_info;
    public const int _NETRXF_gso_prefix = 4;
    /// <summary>The packet has a GSO prefix (deprecated).</summary>
    public const int NETRXF_gso_prefix = 1 << _NETRXF_gso_prefix;

    /// <summary>Response status: the packet was dropped.</summary>
    public const int NETIF_RSP_DROPPED = -2;
    public const int NETIF_RSP_ERROR = -1;
    public const int NETIF_RSP_OKAY = 0;
    /// <summary>No response: for auxiliary requests such as <see cref="netif_extra_info"/> slots.</summary>
    public const int NETIF_RSP_NULL = 1;
}

/// <summary>A control-ring request. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xen_netif_ctrl_request
{
    /// <summary>Request identifier, echoed in the response.</summary>
    public ushort id;
    /// <summary><c>XEN_NETIF_CTRL_TYPE_*</c>.</summary>
    public ushort type;
    /// <summary>Arguments; their meaning depends on <see cref="type"/>.</summary>
    public fixed uint data[3];
}

/// <summary>A control-ring response. [back] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_netif_ctrl_response
{
    /// <summary>The request's identifier.</summary>
    public ushort id;
    /// <summary>The request's type.</summary>
    public ushort type;
    /// <summary><c>XEN_NETIF_CTRL_STATUS_*</c>.</summary>
    public uint status;
    /// <summary>Result; its meaning depends on type and status.</summary>
    public uint data;
}

/// <summary>An entry of the grant table passed with XEN_NETIF_CTRL_TYPE_{ADD,DEL}_GREF_MAPPING.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_netif_gref
{
    /// <summary>IN: grant reference.</summary>
    public uint @ref;
    /// <summary>IN: <c>XEN_NETIF_CTRLF_GREF_*</c>.</summary>
    public ushort flags;
    /// <summary>OUT: <c>XEN_NETIF_CTRL_STATUS_*</c>.</summary>
    public ushort status;
}

/// <summary>A transmit request: one fragment of an outgoing packet. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct netif_tx_request
{
    /// <summary>Grant reference to the buffer page.</summary>
    public uint gref;
    /// <summary>Offset within the buffer page.</summary>
    public ushort offset;
    /// <summary><c>NETTXF_*</c>.</summary>
    public ushort flags;
    /// <summary>Request identifier, echoed in the response.</summary>
    public ushort id;
    /// <summary>Packet size in bytes (the whole packet in the first fragment, else this fragment).</summary>
    public ushort size;
}

/// <summary>
/// An extra-info slot following a request or response flagged <c>NET{T,R}XF_extra_info</c>; it
/// overlays the slot, so it fits both <see cref="netif_tx_request"/> and <see cref="netif_rx_response"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct netif_extra_info
{
    /// <summary><c>XEN_NETIF_EXTRA_TYPE_*</c>.</summary>
    public byte type;
    /// <summary><c>XEN_NETIF_EXTRA_FLAG_*</c>.</summary>
    public byte flags;
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public unsafe struct U
    {
        /// <summary>XEN_NETIF_EXTRA_TYPE_GSO.</summary>
        [FieldOffset(0)] public Gso gso;
        /// <summary>XEN_NETIF_EXTRA_TYPE_MCAST_{ADD,DEL}.</summary>
        [FieldOffset(0)] public Mcast mcast;
        /// <summary>XEN_NETIF_EXTRA_TYPE_HASH.</summary>
        [FieldOffset(0)] public Hash hash;
        [FieldOffset(0)] public fixed ushort pad[3];
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Gso
    {
        /// <summary>Maximum payload of each segment (the path MSS for TCP).</summary>
        public ushort size;
        /// <summary><c>XEN_NETIF_GSO_TYPE_*</c>.</summary>
        public byte type;
        public byte pad;
        /// <summary>Extra GSO features the packet needs.</summary>
        public ushort features;
    }

    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct Mcast
    {
        /// <summary>The multicast MAC address to add or remove.</summary>
        public fixed byte addr[6];
    }

    [StructLayout(LayoutKind.Sequential)]
    public unsafe struct Hash
    {
        /// <summary>Hash type: one of <c>_XEN_NETIF_CTRL_HASH_TYPE_*</c>.</summary>
        public byte type;
        /// <summary><c>XEN_NETIF_CTRL_HASH_ALGORITHM_*</c>.</summary>
        public byte algorithm;
        /// <summary>The hash value, least significant byte first.</summary>
        public fixed byte value[4];
    }
}

/// <summary>A transmit response. [back] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct netif_tx_response
{
    /// <summary>The request's id.</summary>
    public ushort id;
    /// <summary><c>NETIF_RSP_*</c>.</summary>
    public short status;
}

/// <summary>A receive request: a granted buffer for one incoming fragment. [front] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct netif_rx_request
{
    /// <summary>Request identifier, echoed in the response.</summary>
    public ushort id;
    public ushort pad;
    /// <summary>Grant reference to the frame to receive into.</summary>
    public uint gref;
}

/// <summary>A receive response: one fragment of an incoming packet. [back] writes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct netif_rx_response
{
    /// <summary>The request's id (backends must answer in the request's slot).</summary>
    public ushort id;
    /// <summary>Offset in the page of the start of the received data.</summary>
    public ushort offset;
    /// <summary><c>NETRXF_*</c>.</summary>
    public ushort flags;
    /// <summary>Negative: <c>NETIF_RSP_*</c>; otherwise the received fragment's size.</summary>
    public short status;
}

/// <summary>One slot of the control ring.</summary>
[StructLayout(LayoutKind.Explicit)]
public struct xen_netif_ctrl_sring_entry
{
    /// <summary>[front] writes.</summary>
    [FieldOffset(0)] public xen_netif_ctrl_request req;
    /// <summary>[back] writes.</summary>
    [FieldOffset(0)] public xen_netif_ctrl_response rsp;
}

/// <summary>
/// The shared control ring page. C's <c>ring[1]</c> runs to the end of the page:
/// <see cref="Ring.RING_SIZE_xen_netif_ctrl"/> entries in 4096 bytes; this twin holds the first.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xen_netif_ctrl_sring
{
    /// <summary>[front] Requests produced.</summary>
    public uint req_prod;
    /// <summary>[back] Notify the backend when <see cref="req_prod"/> passes this.</summary>
    public uint req_event;
    /// <summary>[back] Responses produced.</summary>
    public uint rsp_prod;
    /// <summary>[front] Notify the frontend when <see cref="rsp_prod"/> passes this.</summary>
    public uint rsp_event;
    public Ring.Pvt pvt;
    public fixed byte __pad[44];
    /// <summary>The first entry of the ring.</summary>
    public xen_netif_ctrl_sring_entry ring;
}

/// <summary>One slot of the transmit ring: a request or extra-info slot until the backend answers, then its response.</summary>
[StructLayout(LayoutKind.Explicit)]
public struct netif_tx_sring_entry
{
    /// <summary>[front] writes.</summary>
    [FieldOffset(0)] public netif_tx_request req;
    /// <summary>[back] writes.</summary>
    [FieldOffset(0)] public netif_tx_response rsp;
}

/// <summary>
/// The shared transmit ring page. C's <c>ring[1]</c> runs to the end of the page:
/// <see cref="Ring.RING_SIZE_netif_tx"/> entries in 4096 bytes; this twin holds the first.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct netif_tx_sring
{
    /// <summary>[front] Requests produced.</summary>
    public uint req_prod;
    /// <summary>[back] Notify the backend when <see cref="req_prod"/> passes this.</summary>
    public uint req_event;
    /// <summary>[back] Responses produced.</summary>
    public uint rsp_prod;
    /// <summary>[front] Notify the frontend when <see cref="rsp_prod"/> passes this.</summary>
    public uint rsp_event;
    public Ring.Pvt pvt;
    public fixed byte __pad[44];
    /// <summary>The first entry of the ring.</summary>
    public netif_tx_sring_entry ring;
}

/// <summary>One slot of the receive ring: a posted buffer, then the response (or extra-info slot) that filled it.</summary>
[StructLayout(LayoutKind.Explicit)]
public struct netif_rx_sring_entry
{
    /// <summary>[front] writes.</summary>
    [FieldOffset(0)] public netif_rx_request req;
    /// <summary>[back] writes.</summary>
    [FieldOffset(0)] public netif_rx_response rsp;
}

/// <summary>
/// The shared receive ring page. C's <c>ring[1]</c> runs to the end of the page:
/// <see cref="Ring.RING_SIZE_netif_rx"/> entries in 4096 bytes; this twin holds the first.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct netif_rx_sring
{
    /// <summary>[front] Requests produced.</summary>
    public uint req_prod;
    /// <summary>[back] Notify the backend when <see cref="req_prod"/> passes this.</summary>
    public uint req_event;
    /// <summary>[back] Responses produced.</summary>
    public uint rsp_prod;
    /// <summary>[front] Notify the frontend when <see cref="rsp_prod"/> passes this.</summary>
    public uint rsp_event;
    public Ring.Pvt pvt;
    public fixed byte __pad[44];
    /// <summary>The first entry of the ring.</summary>
    public netif_rx_sring_entry ring;
}
