using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/ring.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.
//
// DEFINE_RING_TYPES(name, req, rsp) makes, for each protocol, a union name_sring_entry { req; rsp; }
// and a shared page struct name_sring: 64 bytes of indices and padding, then ring[1], which really
// runs to the end of the page. Those per-protocol types live with the header that instantiates them
// (Blkif.cs, Netif.cs); what they share is here. The front/back private ring structs hold a host
// pointer and are not shared memory, so they are not mirrored.

/// <summary>
/// Constants of <c>xen/io/ring.h</c>, and the number of entries each ring we use gets in one
/// 4096-byte page (<c>__CONST_RING_SIZE(name, 4096)</c>: as many as fit, rounded down to a power of two).
/// </summary>
public static class Ring
{
    /// <summary>Ring protocols always use 4 KiB pages, whatever the OS's page size.</summary>
    public const int XEN_PAGE_SHIFT = 12;

    /// <summary><c>__CONST_RING_SIZE(blkif, 4096)</c>: entries of a <see cref="blkif_sring"/> page.</summary>
    public const int RING_SIZE_blkif = 32;

    /// <summary><c>__CONST_RING_SIZE(netif_tx, 4096)</c>: entries of a <see cref="netif_tx_sring"/> page.</summary>
    public const int RING_SIZE_netif_tx = 256;

    /// <summary><c>__CONST_RING_SIZE(netif_rx, 4096)</c>: entries of a <see cref="netif_rx_sring"/> page.</summary>
    public const int RING_SIZE_netif_rx = 256;

    /// <summary><c>__CONST_RING_SIZE(xen_netif_ctrl, 4096)</c>: entries of a <see cref="xen_netif_ctrl_sring"/> page.</summary>
    public const int RING_SIZE_xen_netif_ctrl = 128;

    /// <summary><c>XEN_FLEX_RING_SIZE(order)</c>: bytes of one of the two data rings of a flex ring of 2^order pages.</summary>
    public static ulong XEN_FLEX_RING_SIZE(int order) => 1UL << (order + XEN_PAGE_SHIFT - 1);

    /// <summary>
    /// The <c>pvt</c> union of every <c>&lt;name&gt;_sring</c>: 4 bytes a protocol may use for its own
    /// flags. <c>SHARED_RING_INIT</c> (the front) zeroes it.
    /// </summary>
    [StructLayout(LayoutKind.Explicit)]
    public unsafe struct Pvt
    {
        [FieldOffset(0)] public Netif netif;
        [FieldOffset(0)] public TapifUser tapif_user;
        [FieldOffset(0)] public fixed byte pvt_pad[4];

        [StructLayout(LayoutKind.Sequential)]
        public struct Netif
        {
            public byte smartpoll_active;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct TapifUser
        {
            public byte msg;
        }
    }
}
