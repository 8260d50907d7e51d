namespace Paravirt.Core.Backends.Network;

/// <summary>What one vif has carried (a snapshot; every counter only grows).</summary>
/// <param name="Connects">Rings connected (each handshake).</param>
/// <param name="Disconnects">Rings torn down (frontend closed, domain crashed or died, vif detached).</param>
/// <param name="TxPackets">Frames the guest transmitted that went into the switch (a GSO frame counts once).</param>
/// <param name="TxBytes">Their bytes.</param>
/// <param name="TxErrors">Transmit packets answered NETIF_RSP_ERROR (malformed, bad grant, too many slots).</param>
/// <param name="TxDropped">Transmit packets answered NETIF_RSP_DROPPED (well-formed, longer than the vif's MTU allows, or a GSO packet whose segments would be).</param>
/// <param name="TxRateLimited">Times a transmit packet waited for the next credit window.</param>
/// <param name="RxPackets">Frames delivered into the guest's receive buffers (a GSO frame delivered whole counts once, each segment of one cut in software counts).</param>
/// <param name="RxBytes">Their bytes.</param>
/// <param name="RxErrors">Receive buffers answered NETIF_RSP_ERROR (their grant could not be written); the frame is lost.</param>
/// <param name="ProtocolErrors">Rings abandoned because the frontend broke io/ring.h or io/netif.h fatally (its domain was crashed).</param>
/// <param name="TxGsoPackets">Transmit packets with a GSO extra-info slot that went into the switch as one large frame.</param>
/// <param name="TxOffloadDropped">Transmit packets answered NETIF_RSP_OKAY but dropped because their checksum offload or GSO request did not fit their headers (not TCP/UDP over unfragmented IPv4/IPv6, truncated, GSO type not the packet's, MSS below 48): netback's failed <c>skb_checksum_setup</c>.</param>
/// <param name="TxChecksumFixups">GSO transmit packets without NETTXF_csum_blank whose partial checksum netback wrote itself (Linux's rx_gso_checksum_fixup).</param>
/// <param name="TxMulticastRequests">Transmit requests that were multicast filter changes (XEN_NETIF_EXTRA_TYPE_MCAST_ADD/DEL), not packets.</param>
/// <param name="RxGsoPackets">Frames delivered whole to a frontend that takes GSO (multi-slot, with a GSO extra-info slot).</param>
/// <param name="RxSegmented">GSO frames cut into TCP segments in software for a frontend that cannot take them whole.</param>
/// <param name="RxChecksumsCompleted">Frames (or segments) whose blank checksum netback computed for a frontend that does not take partial checksums.</param>
/// <param name="RxDropped">Frames that needed more than one receive buffer for a frontend without feature-sg (dropped).</param>
/// <param name="RxExpired">Frames that waited for receive buffers longer than netback's drain timeout (10 s; 30 ms for a frontend without feature-rx-notify) and were dropped.</param>
/// <param name="RxFiltered">Multicast frames not delivered because the frontend asked for multicast control and had not added their address.</param>
/// <param name="ControlRequests">Control-ring requests answered.</param>
public readonly record struct NetBackStats(
    long Connects,
    long Disconnects,
    long TxPackets,
    long TxBytes,
    long TxErrors,
    long TxDropped,
    long TxRateLimited,
    long RxPackets,
    long RxBytes,
    long RxErrors,
    long ProtocolErrors,
    long TxGsoPackets,
    long TxOffloadDropped,
    long TxChecksumFixups,
    long TxMulticastRequests,
    long RxGsoPackets,
    long RxSegmented,
    long RxChecksumsCompleted,
    long RxDropped,
    long RxExpired,
    long RxFiltered,
    long ControlRequests);

/// <summary>The live counters behind <see cref="NetBackStats"/>.</summary>
internal sealed class NetBackCounters : XenBus.IBackendCounters
{
    public long Connects;
    public long Disconnects;
    public long TxPackets;
    public long TxBytes;
    public long TxErrors;
    public long TxDropped;
    public long TxRateLimited;
    public long RxPackets;
    public long RxBytes;
    public long RxErrors;
    public long ProtocolErrors;
    public long TxGsoPackets;
    public long TxOffloadDropped;
    public long TxChecksumFixups;
    public long TxMulticastRequests;
    public long RxGsoPackets;
    public long RxSegmented;
    public long RxChecksumsCompleted;
    public long RxDropped;
    public long RxExpired;
    public long RxFiltered;
    public long ControlRequests;

    public void CountConnect() => Interlocked.Increment(ref Connects);

    public void CountDisconnect() => Interlocked.Increment(ref Disconnects);

    public void CountProtocolError() => Interlocked.Increment(ref ProtocolErrors);

    public NetBackStats Snapshot() => new(
        Interlocked.Read(ref Connects),
        Interlocked.Read(ref Disconnects),
        Interlocked.Read(ref TxPackets),
        Interlocked.Read(ref TxBytes),
        Interlocked.Read(ref TxErrors),
        Interlocked.Read(ref TxDropped),
        Interlocked.Read(ref TxRateLimited),
        Interlocked.Read(ref RxPackets),
        Interlocked.Read(ref RxBytes),
        Interlocked.Read(ref RxErrors),
        Interlocked.Read(ref ProtocolErrors),
        Interlocked.Read(ref TxGsoPackets),
        Interlocked.Read(ref TxOffloadDropped),
        Interlocked.Read(ref TxChecksumFixups),
        Interlocked.Read(ref TxMulticastRequests),
        Interlocked.Read(ref RxGsoPackets),
        Interlocked.Read(ref RxSegmented),
        Interlocked.Read(ref RxChecksumsCompleted),
        Interlocked.Read(ref RxDropped),
        Interlocked.Read(ref RxExpired),
        Interlocked.Read(ref RxFiltered),
        Interlocked.Read(ref ControlRequests));
}
