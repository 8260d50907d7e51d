using System.Runtime.InteropServices;

namespace Paravirt.Core.Rings;

/// <summary>
/// The back end of an <c>io/ring.h</c> ring: consumes requests, produces responses. Each request is
/// copied out of the shared page once (the front end may rewrite the slot at any time); a producer
/// index more than a ring ahead is a protocol error, reported and never looped over. Pushing
/// returns whether the front end asked to be notified; the caller sends the event.
/// </summary>
public sealed class BackRing<TReq, TRsp>
    where TReq : unmanaged
    where TRsp : unmanaged
{
    private readonly Memory<byte> _page;
    private readonly int _entrySize;
    private uint _rspProdPvt;
    private uint _reqCons;
    private bool _broken;

    /// <summary>BACK_RING_INIT over a page the front end initialised (or attach mid-stream at its current indices).</summary>
    public BackRing(Memory<byte> page)
    {
        _page = page;
        _entrySize = RingLayout.EntrySize<TReq, TRsp>();
        Size = RingLayout.Size(page.Length, _entrySize);
        _rspProdPvt = Volatile.Read(ref RingLayout.Index(page, RingLayout.RspProd));
        _reqCons = _rspProdPvt;
    }

    public int Size { get; }

    /// <summary>True once the front end broke the protocol; nothing more is taken.</summary>
    public bool IsBroken => _broken;

    /// <summary>Requests taken but not yet answered.</summary>
    public int Outstanding => (int)(_reqCons - _rspProdPvt);

    /// <summary>
    /// Takes the next request. Empty when nothing is published or when every response slot is
    /// spoken for (RING_REQUEST_CONS_OVERFLOW: answer before taking more).
    /// </summary>
    public RingStatus TryTakeRequest(out TReq request)
    {
        request = default;
        if (_broken)
        {
            return RingStatus.ProtocolError;
        }

        var reqProd = Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqProd));
        if (unchecked(reqProd - _rspProdPvt) > (uint)Size)
        {
            _broken = true; // RING_REQUEST_PROD_OVERFLOW
            return RingStatus.ProtocolError;
        }

        if (reqProd == _reqCons || unchecked(_reqCons - _rspProdPvt) >= (uint)Size)
        {
            return RingStatus.Empty;
        }

        request = MemoryMarshal.Read<TReq>(Slot(_reqCons));
        _reqCons++;
        return RingStatus.Ok;
    }

    /// <summary>Queues a response privately; false if there is no request left to answer.</summary>
    public bool TryQueueResponse(in TRsp response)
    {
        if (_rspProdPvt == _reqCons)
        {
            return false;
        }

        MemoryMarshal.Write(Slot(_rspProdPvt), in response);
        _rspProdPvt++;
        return true;
    }

    /// <summary>RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publishes queued responses; true if the front end must be notified.</summary>
    public bool PushResponses()
    {
        ref var rspProd = ref RingLayout.Index(_page, RingLayout.RspProd);
        var old = rspProd;
        var @new = _rspProdPvt;
        Volatile.Write(ref rspProd, @new);
        Interlocked.MemoryBarrier();
        var rspEvent = Volatile.Read(ref RingLayout.Index(_page, RingLayout.RspEvent));
        return unchecked(@new - rspEvent) < unchecked(@new - old);
    }

    /// <summary>RING_FINAL_CHECK_FOR_REQUESTS: true if requests are waiting; otherwise asks to be notified of the next.</summary>
    public bool FinalCheckForRequests()
    {
        if (HasUnconsumedRequests)
        {
            return true;
        }

        Volatile.Write(ref RingLayout.Index(_page, RingLayout.ReqEvent), _reqCons + 1);
        Interlocked.MemoryBarrier();
        return HasUnconsumedRequests;
    }

    /// <summary>
    /// Requests published and not yet taken, at most as many as there are free response slots
    /// (what <see cref="TryTakeRequest"/> would give in a row). ProtocolError on an overrun.
    /// </summary>
    public RingStatus CountRequests(out int available)
    {
        available = 0;
        if (_broken)
        {
            return RingStatus.ProtocolError;
        }

        var reqProd = Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqProd));
        if (unchecked(reqProd - _rspProdPvt) > (uint)Size)
        {
            _broken = true; // RING_REQUEST_PROD_OVERFLOW
            return RingStatus.ProtocolError;
        }

        // reqProd - rspProdPvt <= Size, so reqProd - reqCons fits too unless the producer went backwards.
        var published = unchecked(reqProd - _reqCons);
        var free = (uint)Size - unchecked(_reqCons - _rspProdPvt);
        available = published > (uint)Size ? 0 : (int)Math.Min(published, free);
        return RingStatus.Ok;
    }

    /// <summary>
    /// As <see cref="FinalCheckForRequests()"/> for a packet that needs <paramref name="needed"/>
    /// requests at once: true if that many are waiting; otherwise asks to be notified of the next
    /// request after those already published (netback's <c>xenvif_rx_ring_slots_available</c>).
    /// </summary>
    public bool FinalCheckForRequests(int needed)
    {
        // Bounded: a producer index that keeps moving gets "look again" rather than a spin here.
        for (var tries = 0; tries < 4; tries++)
        {
            if (CountRequests(out var available) != RingStatus.Ok || available >= needed)
            {
                return true; // enough, or broken: the caller's next take says which
            }

            var reqProd = Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqProd));
            Volatile.Write(ref RingLayout.Index(_page, RingLayout.ReqEvent), reqProd + 1);
            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqProd)) == reqProd)
            {
                return false;
            }
        }

        return true;
    }

    private bool HasUnconsumedRequests => Volatile.Read(ref RingLayout.Index(_page, RingLayout.ReqProd)) != _reqCons;

    private Span<byte> Slot(uint index) =>
        _page.Span.Slice(RingLayout.EntriesOffset + ((int)(index & (uint)(Size - 1)) * _entrySize), _entrySize);
}
