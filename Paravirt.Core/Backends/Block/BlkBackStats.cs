namespace Paravirt.Core.Backends.Block;

/// <summary>What one attached disk has served (a snapshot; every counter only grows).</summary>
/// <param name="Connects">Rings connected (the first handshake and every reconnect).</param>
/// <param name="Disconnects">Rings torn down (frontend closed, domain crashed or died, disk detached).</param>
/// <param name="Requests">Requests taken from the ring.</param>
/// <param name="Reads">BLKIF_OP_READ requests answered OKAY.</param>
/// <param name="Writes">BLKIF_OP_WRITE requests answered OKAY.</param>
/// <param name="Flushes">BLKIF_OP_FLUSH_DISKCACHE requests answered OKAY.</param>
/// <param name="Barriers">BLKIF_OP_WRITE_BARRIER requests answered OKAY.</param>
/// <param name="Discards">BLKIF_OP_DISCARD requests answered OKAY.</param>
/// <param name="BytesRead">Bytes read from the disk for the guest.</param>
/// <param name="BytesWritten">Bytes written to the disk for the guest.</param>
/// <param name="Errors">Requests answered BLKIF_RSP_ERROR (invalid, bad grant, I/O failure).</param>
/// <param name="Unsupported">Requests answered BLKIF_RSP_EOPNOTSUPP.</param>
/// <param name="ProtocolErrors">Rings abandoned because the frontend broke io/ring.h (its domain was crashed).</param>
/// <param name="IndirectRequests">BLKIF_OP_INDIRECT requests taken (whatever their outcome; answered ones count in Reads or Writes too).</param>
/// <param name="PersistentGrantsMapped">Grants mapped to be kept (feature-persistent), each counted when first mapped.</param>
/// <param name="PersistentGrantsReused">Segments and indirect pages served by a grant already kept mapped (no map, no copy).</param>
/// <param name="TransientGrantMaps">With persistent grants, grants mapped for one request only (the table was full, or the grant was in use by another request) and unmapped when it completed.</param>
/// <param name="PersistentGrantsPurged">Kept grants unmapped while connected (unused too long, or room made in a full table); a disconnect's unmapping is not counted.</param>
public readonly record struct BlkBackStats(
    long Connects,
    long Disconnects,
    long Requests,
    long Reads,
    long Writes,
    long Flushes,
    long Barriers,
    long Discards,
    long BytesRead,
    long BytesWritten,
    long Errors,
    long Unsupported,
    long ProtocolErrors,
    long IndirectRequests,
    long PersistentGrantsMapped,
    long PersistentGrantsReused,
    long TransientGrantMaps,
    long PersistentGrantsPurged);

/// <summary>The live counters behind <see cref="BlkBackStats"/>.</summary>
internal sealed class BlkBackCounters : XenBus.IBackendCounters
{
    public long Connects;
    public long Disconnects;
    public long Requests;
    public long Reads;
    public long Writes;
    public long Flushes;
    public long Barriers;
    public long Discards;
    public long BytesRead;
    public long BytesWritten;
    public long Errors;
    public long Unsupported;
    public long ProtocolErrors;
    public long IndirectRequests;
    public long PersistentGrantsMapped;
    public long PersistentGrantsReused;
    public long TransientGrantMaps;
    public long PersistentGrantsPurged;

    public void CountConnect() => Interlocked.Increment(ref Connects);

    public void CountDisconnect() => Interlocked.Increment(ref Disconnects);

    public void CountProtocolError() => Interlocked.Increment(ref ProtocolErrors);

    public BlkBackStats Snapshot() => new(
        Interlocked.Read(ref Connects),
        Interlocked.Read(ref Disconnects),
        Interlocked.Read(ref Requests),
        Interlocked.Read(ref Reads),
        Interlocked.Read(ref Writes),
        Interlocked.Read(ref Flushes),
        Interlocked.Read(ref Barriers),
        Interlocked.Read(ref Discards),
        Interlocked.Read(ref BytesRead),
        Interlocked.Read(ref BytesWritten),
        Interlocked.Read(ref Errors),
        Interlocked.Read(ref Unsupported),
        Interlocked.Read(ref ProtocolErrors),
        Interlocked.Read(ref IndirectRequests),
        Interlocked.Read(ref PersistentGrantsMapped),
        Interlocked.Read(ref PersistentGrantsReused),
        Interlocked.Read(ref TransientGrantMaps),
        Interlocked.Read(ref PersistentGrantsPurged));
}
