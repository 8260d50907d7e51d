using System.Runtime.CompilerServices;
using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// The front half of a one-page io/ring.h ring (DEFINE_RING_TYPES: blkif, netif_tx, netif_rx …)
/// over a page of the guest's own memory: <c>SHARED_RING_INIT</c>, requests
/// written at <c>req_prod_pvt</c> and published with <c>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY</c>,
/// responses taken up to <c>rsp_prod</c> and re-armed with <c>RING_FINAL_CHECK_FOR_RESPONSES</c>.
/// The backend writes <c>rsp_prod</c> and the response slots, so a response producer beyond
/// what was requested is reported, not followed. Not thread-safe: the owner serialises calls.
/// </summary>
internal sealed class GuestFrontRing<TReq, TRsp>
    where TReq : unmanaged
    where TRsp : unmanaged
{
    // struct *_sring: four 32-bit indices, 48 bytes of pvt and padding, then the entries, each the
    // size of the request/response union (blkif: 112 bytes on x86_64).
    private const ulong ReqProd = 0;
    private const ulong ReqEvent = 4;
    private const ulong RspProd = 8;
    private const ulong RspEvent = 12;
    private const ulong Entries = 64;

    private static readonly ulong EntrySize = (ulong)Math.Max(Unsafe.SizeOf<TReq>(), Unsafe.SizeOf<TRsp>());

    private readonly IGuestPhysicalMemory _memory;
    private readonly ulong _base;
    private uint _reqProdPvt;
    private uint _rspCons;

    /// <param name="memory">The guest's memory.</param>
    /// <param name="pageAddress">The ring page's guest-physical address.</param>
    /// <param name="size">Entries: <c>__CONST_RING_SIZE(name, 4096)</c> (<see cref="Paravirt.Core.Abi.Io.Ring"/>).</param>
    public GuestFrontRing(IGuestPhysicalMemory memory, ulong pageAddress, int size)
    {
        _memory = memory;
        _base = pageAddress;
        Size = size;
        Init();
    }

    public int Size { get; }

    /// <summary>Requests written and not yet answered.</summary>
    public int Outstanding => (int)unchecked(_reqProdPvt - _rspCons);

    /// <summary>RING_FREE_REQUESTS.</summary>
    public int FreeRequests => Size - Outstanding;

    private void Init()
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

    private ulong Slot(uint index) => _base + Entries + ((index & (uint)(Size - 1)) * EntrySize);

    /// <summary>Writes a request at req_prod_pvt and advances it; not yet visible.</summary>
    public void Queue(in TReq request)
    {
        _memory.Write(Slot(_reqProdPvt), request);
        _reqProdPvt++;
    }

    /// <summary>
    /// Queues another layout of the request union (<c>blkif_request_discard</c> in a blkif ring):
    /// the slot is cleared first, so no stale bytes of an earlier, longer request stay behind it.
    /// </summary>
    public void QueueVariant<TVariant>(in TVariant request)
        where TVariant : unmanaged
    {
        if (Unsafe.SizeOf<TVariant>() > (int)EntrySize)
        {
            throw new ArgumentException($"a {typeof(TVariant).Name} of {Unsafe.SizeOf<TVariant>()} bytes does not fit a {EntrySize}-byte ring entry", nameof(request));
        }

        var slot = Slot(_reqProdPvt);
        _memory.Write(slot, default(TReq));
        _memory.Write(slot, request);
        _reqProdPvt++;
    }

    /// <summary>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish, full barrier, <c>new - req_event &lt; new - old</c>.</summary>
    public bool PushRequestsAndCheckNotify()
    {
        var old = (uint)_memory.ReadVolatile(_base + ReqProd, 4);
        var now = _reqProdPvt;
        _memory.WriteVolatile(_base + ReqProd, 4, now);
        Interlocked.MemoryBarrier();
        var reqEvent = (uint)_memory.ReadVolatile(_base + ReqEvent, 4);
        return unchecked(now - reqEvent) < unchecked(now - old);
    }

    /// <summary>1 with a response, 0 when none is published, -1 when rsp_prod claims more than is outstanding (nothing taken).</summary>
    public int TryTakeResponse(out TRsp response)
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

        response = _memory.Read<TRsp>(Slot(_rspCons));
        _rspCons++;
        return 1;
    }

    /// <summary>RING_FINAL_CHECK_FOR_RESPONSES: rsp_event = rsp_cons + 1, barrier, look again. True when there is more to take.</summary>
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
