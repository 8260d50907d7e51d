namespace Paravirt.Core.Backends.Network;

/// <summary>What one vif has carried (a snapshot; every counter only grows).</summary>
/// <param name="Connects">Rings connected (each handshake).</param>
/// <param name="Disconnects">Rings torn down (frontend closed, domain crashed or died, vif detached).</param>
/// <param name="TxPackets">Frames the guest transmitted that went into the switch.</param>
/// <param name="TxBytes">Their bytes.</param>
/// <param name="TxErrors">Transmit packets answered NETIF_RSP_ERROR (malformed, bad grant, unsupported extra info).</param>
/// <param name="TxDropped">Transmit packets answered NETIF_RSP_DROPPED (well-formed, longer than the vif's MTU allows).</param>
/// <param name="TxRateLimited">Times a transmit packet waited for the next credit window.</param>
/// <param name="RxPackets">Frames delivered into the guest's receive buffers.</param>
/// <param name="RxBytes">Their bytes.</param>
/// <param name="RxErrors">Receive buffers answered NETIF_RSP_ERROR (their grant could not be written); the frame is lost.</param>
/// <param name="ProtocolErrors">Rings abandoned because the frontend broke io/ring.h or io/netif.h fatally (its domain was crashed).</param>
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
    long ProtocolErrors);

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
        Interlocked.Read(ref ProtocolErrors));
}
