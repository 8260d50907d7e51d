using System.Collections.Immutable;
using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/xs_wire.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.
//
// A XenStore message is an xsd_sockmsg header followed by `len` bytes of payload, generally
// nul-terminated strings. A guest talks to the store through the xenstore_domain_interface page:
// the guest [GST] produces requests and consumes responses; the store [XS] does the opposite.

/// <summary><see cref="xsd_sockmsg.type"/>: the XenStore operations.</summary>
public enum xsd_sockmsg_type : uint
{
    XS_CONTROL = 0,
    /// <summary>The old name of <see cref="XS_CONTROL"/>.</summary>
    XS_DEBUG = XS_CONTROL,
    XS_DIRECTORY = 1,
    XS_READ = 2,
    XS_GET_PERMS = 3,
    XS_WATCH = 4,
    XS_UNWATCH = 5,
    XS_TRANSACTION_START = 6,
    XS_TRANSACTION_END = 7,
    XS_INTRODUCE = 8,
    XS_RELEASE = 9,
    XS_GET_DOMAIN_PATH = 10,
    XS_WRITE = 11,
    XS_MKDIR = 12,
    XS_RM = 13,
    XS_SET_PERMS = 14,
    /// <summary>An asynchronous watch event from the store; <c>req_id</c> is 0.</summary>
    XS_WATCH_EVENT = 15,
    /// <summary>An error reply: the payload is one of <see cref="XsWire.xsd_errors"/>.</summary>
    XS_ERROR = 16,
    XS_IS_DOMAIN_INTRODUCED = 17,
    XS_RESUME = 18,
    XS_SET_TARGET = 19,
    // 20 was XS_RESTRICT, removed.
    XS_RESET_WATCHES = 21,
    XS_DIRECTORY_PART = 22,
    /// <summary>Number of valid types (one more than the last).</summary>
    XS_TYPE_COUNT = 23,
    /// <summary>Guaranteed to remain an invalid type.</summary>
    XS_INVALID = 0xffff,
}

/// <summary>The strings of an <c>XS_WATCH_EVENT</c> payload, by index.</summary>
public enum xs_watch_type
{
    /// <summary>The path that changed.</summary>
    XS_WATCH_PATH = 0,
    /// <summary>The token given with <c>XS_WATCH</c>.</summary>
    XS_WATCH_TOKEN = 1,
}

/// <summary>Constants of <c>xen/io/xs_wire.h</c>: the shared ring, limits, connection state and the error names.</summary>
public static class XsWire
{
    public const string XS_WRITE_NONE = "NONE";
    public const string XS_WRITE_CREATE = "CREATE";
    public const string XS_WRITE_CREATE_EXCL = "CREATE|EXCL";

    // Errors travel as names, for portability: an XS_ERROR reply's payload is one of these strings.
    // Xen's xsd_errors[] pairs each with the C library's errno value; only the name is on the wire.
    // XSD_ERROR_<NAME> is the entry XSD_ERROR(<NAME>) of that table.

    public const string XSD_ERROR_EINVAL = "EINVAL";
    public const string XSD_ERROR_EACCES = "EACCES";
    public const string XSD_ERROR_EEXIST = "EEXIST";
    public const string XSD_ERROR_EISDIR = "EISDIR";
    public const string XSD_ERROR_ENOENT = "ENOENT";
    public const string XSD_ERROR_ENOMEM = "ENOMEM";
    public const string XSD_ERROR_ENOSPC = "ENOSPC";
    public const string XSD_ERROR_EIO = "EIO";
    public const string XSD_ERROR_ENOTEMPTY = "ENOTEMPTY";
    public const string XSD_ERROR_ENOSYS = "ENOSYS";
    public const string XSD_ERROR_EROFS = "EROFS";
    public const string XSD_ERROR_EBUSY = "EBUSY";
    public const string XSD_ERROR_EAGAIN = "EAGAIN";
    public const string XSD_ERROR_EISCONN = "EISCONN";
    public const string XSD_ERROR_E2BIG = "E2BIG";
    public const string XSD_ERROR_EPERM = "EPERM";

    /// <summary>Entries of Xen's <c>xsd_errors[]</c>.</summary>
    public const int XSD_ERROR_COUNT = 16;

    /// <summary>The error names of Xen's <c>xsd_errors[]</c>, in its order (new errors are only ever appended).</summary>
    public static readonly ImmutableArray<string> xsd_errors =
    [
        XSD_ERROR_EINVAL, XSD_ERROR_EACCES, XSD_ERROR_EEXIST, XSD_ERROR_EISDIR,
        XSD_ERROR_ENOENT, XSD_ERROR_ENOMEM, XSD_ERROR_ENOSPC, XSD_ERROR_EIO,
        XSD_ERROR_ENOTEMPTY, XSD_ERROR_ENOSYS, XSD_ERROR_EROFS, XSD_ERROR_EBUSY,
        XSD_ERROR_EAGAIN, XSD_ERROR_EISCONN, XSD_ERROR_E2BIG, XSD_ERROR_EPERM,
    ];

    /// <summary>Bytes in each of the two rings of <see cref="xenstore_domain_interface"/>.</summary>
    public const int XENSTORE_RING_SIZE = 1024;

    /// <summary>What <c>MASK_XENSTORE_IDX(idx)</c> ANDs a free-running index with.</summary>
    public const uint MASK_XENSTORE_IDX_mask = XENSTORE_RING_SIZE - 1;

    /// <summary><c>MASK_XENSTORE_IDX(idx)</c>: the ring offset of a free-running index.</summary>
    public static uint MASK_XENSTORE_IDX(uint idx) => idx & MASK_XENSTORE_IDX_mask;

    /// <summary>Largest payload of one message; violating it is very bad (docs/misc/xenstore.txt).</summary>
    public const int XENSTORE_PAYLOAD_MAX = 4096;
    /// <summary>Longest absolute path; longer ones get an error back.</summary>
    public const int XENSTORE_ABS_PATH_MAX = 3072;
    /// <summary>Longest relative path; longer ones get an error back.</summary>
    public const int XENSTORE_REL_PATH_MAX = 2048;

    /// <summary><see cref="xenstore_domain_interface.server_features"/>: the ring can be reconnected.</summary>
    public const int XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
    /// <summary>The <see cref="xenstore_domain_interface.error"/> field is present.</summary>
    public const int XENSTORE_SERVER_FEATURE_ERROR = 2;

    /// <summary><see cref="xenstore_domain_interface.connection"/>: the steady state.</summary>
    public const int XENSTORE_CONNECTED = 0;
    /// <summary>A reconnect is in progress.</summary>
    public const int XENSTORE_RECONNECT = 1;

    /// <summary><see cref="xenstore_domain_interface.error"/>: no error.</summary>
    public const int XENSTORE_ERROR_NONE = 0;
    /// <summary>Communication problem.</summary>
    public const int XENSTORE_ERROR_COMM = 1;
    /// <summary>Invalid ring index.</summary>
    public const int XENSTORE_ERROR_RINGIDX = 2;
    /// <summary>Protocol violation (payload too long).</summary>
    public const int XENSTORE_ERROR_PROTO = 3;
}

/// <summary>The header of every XenStore message, followed by <see cref="len"/> bytes of payload.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xsd_sockmsg
{
    /// <summary><see cref="xsd_sockmsg_type"/>.</summary>
    public uint type;
    /// <summary>Request identifier, echoed in the store's response.</summary>
    public uint req_id;
    /// <summary>Transaction id (0 if not in a transaction).</summary>
    public uint tx_id;
    /// <summary>Length of the payload that follows.</summary>
    public uint len;
}

/// <summary>
/// The XenStore ring page shared by a guest and the store: two byte rings with free-running
/// indices (mask with <see cref="XsWire.MASK_XENSTORE_IDX"/>).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xenstore_domain_interface
{
    /// <summary>Requests to the store.</summary>
    public fixed byte req[XsWire.XENSTORE_RING_SIZE];
    /// <summary>Replies and asynchronous watch events.</summary>
    public fixed byte rsp[XsWire.XENSTORE_RING_SIZE];
    /// <summary>[XS] Request bytes consumed.</summary>
    public uint req_cons;
    /// <summary>[GST] Request bytes produced.</summary>
    public uint req_prod;
    /// <summary>[GST] Response bytes consumed.</summary>
    public uint rsp_cons;
    /// <summary>[XS] Response bytes produced.</summary>
    public uint rsp_prod;
    /// <summary>[XS] Bitmap of <c>XENSTORE_SERVER_FEATURE_*</c>.</summary>
    public uint server_features;
    /// <summary><c>XENSTORE_CONNECTED</c> or <c>XENSTORE_RECONNECT</c>: [GST] asks for a reconnect, [XS] answers.</summary>
    public uint connection;
    /// <summary>[XS] <c>XENSTORE_ERROR_*</c>.</summary>
    public uint error;
}
