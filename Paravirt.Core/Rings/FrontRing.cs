using System.Runtime.InteropServices;

namespace Paravirt.Core.Rings;

/// <summary>
/// The front end of an <c>io/ring.h</c> ring: produces requests, consumes responses. Pure protocol
/// over the shared page's bytes — no I/O, no locks, no notification: pushing returns whether the
/// other end asked to be notified (the req_event protocol) and the caller sends the event. One
/// thread per end at a time, as in a kernel driver.
/// </summary>
public sealed class FrontRing<TReq, TRsp>
    where TReq : unmanaged
    where TRsp : unmanaged
{
    private readonly Memory<byte> _page;
    private readonly int _entrySize;
    private uint _reqProdPvt;
    private uint _rspCons;
    private bool _broken;

    private FrontRing(Memory<byte> page)
    {
        _page = page;
        _entrySize = RingLayout.EntrySize<TReq, TRsp>();
        Size = RingLayout.Size(page.Length, _entrySize);
    }

    /// <summary>Entries in the ring (a power of two).</summary>
    public int Size { get; }

    /// <summary>Requests that can be queued before the ring is full (RING_FREE_REQUESTS).</summary>
    public int FreeRequests => Size - (int)(_reqProdPvt - _rspCons);

    /// <summary>True once the back end broke the protocol; nothing more is taken.</summary>
    public bool IsBroken => _broken;

    /// <summary>SHARED_RING_INIT + FRONT_RING_INIT: the front end owns initialising the shared page.</summary>
    public static FrontRing<TReq, TRsp> Initialize(Memory<byte> page)
    {
        page.Span[..RingLayout.EntriesOffset].Clear();
        RingLayout.Index(page, RingLayout.ReqEvent) = 1;
        RingLayout.Index(page, RingLayout.RspEvent) = 1;
        return new FrontRing<TReq, TRsp>(page);
    }

    /// <summary>Queues a request privately (RING_GET_REQUEST + req_prod_pvt++); false when the ring is full.</summary>
    public bool TryQueueRequest(in TReq request)
    {
        if (FreeRequests <= 0)
        {
            return false;
        }

        MemoryMarshal.Write(Slot(_reqProdPvt), in request);
        _reqProdPvt++;
        return true;
    }

    /// <summary>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publishes queued requests; true if the back end must be notified.</summary>
    public bool PushRequests()
    {
        ref var reqProd = ref RingLayout.Index(_page, RingLayout.ReqProd);
        var old = reqProd;
        var @new = _reqProdPvt;
        Volatile.Write(ref reqProd, @new); // entries before index
        Interlocked.MemoryBarrier(); // index before reading req_event
        var reqEvent = Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqEvent));
        return unchecked(@new - reqEvent) < unchecked(@new - old);
    }

    /// <summary>Takes the next response, copying it out of the shared page before anyone looks at it.</summary>
    public RingStatus TryTakeResponse(out TRsp response)
    {
        response = default;
        if (_broken)
        {
            return RingStatus.ProtocolError;
        }

        var rspProd = Volatile.Read(ref RingLayout.Index(_page, RingLayout.RspProd));
        if (rspProd == _rspCons)
        {
            return RingStatus.Empty;
        }

        // Responses can only answer requests we pushed: more than that is the back end lying.
        if (unchecked(rspProd - _rspCons) > unchecked(_reqProdPvt - _rspCons))
        {
            _broken = true;
            return RingStatus.ProtocolError;
        }

        response = MemoryMarshal.Read<TRsp>(Slot(_rspCons));
        _rspCons++;
        return RingStatus.Ok;
    }

    /// <summary>RING_FINAL_CHECK_FOR_RESPONSES: true if responses are waiting; otherwise asks to be notified of the next.</summary>
    public bool FinalCheckForResponses()
    {
        if (HasUnconsumedResponses)
        {
            return true;
        }

        Volatile.Write(ref RingLayout.Index(_page, RingLayout.RspEvent), _rspCons + 1);
        Interlocked.MemoryBarrier();
        return HasUnconsumedResponses;
    }

    private bool HasUnconsumedResponses => Volatile.Read(ref RingLayout.Index(_page, RingLayout.RspProd)) != _rspCons;

    private Span<byte> Slot(uint index) =>
        _page.Span.Slice(RingLayout.EntriesOffset + ((int)(index & (uint)(Size - 1)) * _entrySize), _entrySize);
}
