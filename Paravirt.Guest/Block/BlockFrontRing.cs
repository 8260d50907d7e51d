using Paravirt.Core.Abi.Io;
using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// The front half of a one-page <c>blkif</c> ring (xen/io/ring.h, DEFINE_RING_TYPES(blkif, ...))
/// over a page of the guest's own memory: <c>SHARED_RING_INIT</c>/<c>FRONT_RING_INIT</c>,
/// requests written at <c>req_prod_pvt</c> and published with
/// <c>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY</c>, responses taken up to <c>rsp_prod</c> and re-armed
/// with <c>RING_FINAL_CHECK_FOR_RESPONSES</c>. The backend writes <c>rsp_prod</c>,
/// <c>req_event</c> and the response slots, so it is never trusted: a response producer more than
/// a ring ahead of what was requested is reported, not followed. Not thread-safe: the owner
/// serialises calls (events masked and its lock).
/// </summary>
internal sealed class BlockFrontRing
{
    /// <summary>Entries in one page: <c>__CONST_RING_SIZE(blkif, 4096)</c>.</summary>
    public const int Size = Ring.RING_SIZE_blkif;

    // Offsets within struct blkif_sring (io/ring.h): four 32-bit indices, 48 bytes of pvt and
    // padding, then the entries (sizeof(union blkif_sring_entry) = 112 on x86_64).
    private const ulong ReqProd = 0;
    private const ulong ReqEvent = 4;
    private const ulong RspProd = 8;
    private const ulong RspEvent = 12;
    private const ulong Entries = 64;
    private const ulong EntrySize = 112;

    private readonly IGuestPhysicalMemory _memory;
    private readonly ulong _base;
    private uint _reqProdPvt;
    private uint _rspCons;

    public BlockFrontRing(IGuestPhysicalMemory memory, ulong pageAddress)
    {
        _memory = memory;
        _base = pageAddress;
        Init();
    }

    /// <summary>Requests written and not yet answered (taken) — what the ring holds for us.</summary>
    public int Outstanding => (int)unchecked(_reqProdPvt - _rspCons);

    /// <summary>RING_FREE_REQUESTS: slots we may still write.</summary>
    public int FreeRequests => Size - Outstanding;

    /// <summary>SHARED_RING_INIT (indices 0, req_event = rsp_event = 1) and FRONT_RING_INIT.</summary>
    public void Init()
    {
        Span<byte> zero = stackalloc byte[256];
        zero.Clear();
        for (var off = 0; off < 4096; off += zero.Length)
        {
            _memory.Write(_base + (ulong)off, zero);
        }

        _memory.WriteVolatile(_base + ReqEvent, 4, 1);
        _memory.WriteVolatile(_base + RspEvent, 4, 1);
        _reqProdPvt = 0;
        _rspCons = 0;
    }

    private ulong Slot(uint index) => _base + Entries + ((index & (Size - 1)) * EntrySize);

    /// <summary>Writes a request at req_prod_pvt (RING_GET_REQUEST) and advances it; not yet visible.</summary>
    public void Queue(in blkif_request request)
    {
        _memory.Write(Slot(_reqProdPvt), request);
        _reqProdPvt++;
    }

    /// <summary>Writes a discard request (its own layout over the slot) at req_prod_pvt and advances it.</summary>
    public void Queue(in blkif_request_discard request)
    {
        var slot = Slot(_reqProdPvt);
        _memory.Write(slot, default(blkif_request)); // no stale segment bytes behind the shorter layout
        _memory.Write(slot, request);
        _reqProdPvt++;
    }

    /// <summary>
    /// RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish req_prod (after the requests, which the
    /// ordered store guarantees), then read req_event (after the store, a full barrier), and say
    /// whether the backend asked to be told: <c>new - req_event &lt; new - old</c>.
    /// </summary>
    public bool PushRequestsAndCheckNotify()
    {
        var old = (uint)_memory.ReadVolatile(_base + ReqProd, 4);
        var now = _reqProdPvt;
        _memory.WriteVolatile(_base + ReqProd, 4, now);
        Interlocked.MemoryBarrier();
        var reqEvent = (uint)_memory.ReadVolatile(_base + ReqEvent, 4);
        return unchecked(now - reqEvent) < unchecked(now - old);
    }

    /// <summary>
    /// Takes the next published response into <paramref name="response"/>. Returns 1 with one,
    /// 0 when none is published, -1 when rsp_prod claims more responses than requests are
    /// outstanding (a protocol error by the backend; nothing is taken).
    /// </summary>
    public int TryTakeResponse(out blkif_response response)
    {
        var rp = (uint)_memory.ReadVolatile(_base + RspProd, 4);
        var available = unchecked(rp - _rspCons);
        if (available == 0)
        {
            response = default;
            return 0;
        }

        if (available > (uint)Outstanding)
        {
            response = default;
            return -1;
        }

        // The slot is read after rsp_prod (ordered load), and copied once.
        response = _memory.Read<blkif_response>(Slot(_rspCons));
        _rspCons++;
        return 1;
    }

    /// <summary>
    /// RING_FINAL_CHECK_FOR_RESPONSES: with nothing left to take, set rsp_event = rsp_cons + 1
    /// (ask for an event at the next response), then look again (after a full barrier), so a
    /// response published in between is not missed. True when there is more to take.
    /// </summary>
    public bool FinalCheckForResponses()
    {
        if ((uint)_memory.ReadVolatile(_base + RspProd, 4) != _rspCons)
        {
            return true;
        }

        _memory.WriteVolatile(_base + RspEvent, 4, _rspCons + 1);
        Interlocked.MemoryBarrier();
        return (uint)_memory.ReadVolatile(_base + RspProd, 4) != _rspCons;
    }
}
