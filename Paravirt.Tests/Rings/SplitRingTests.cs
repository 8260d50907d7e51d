using Paravirt.Core.Abi.Io;
using Paravirt.Core.Rings;

namespace Paravirt.Tests.Rings;

/// <summary>io/ring.h front and back rings over a plain byte array, as the protocol says.</summary>
public sealed class SplitRingTests
{
    private static (FrontRing<blkif_request, blkif_response> Front, BackRing<blkif_request, blkif_response> Back, byte[] Page) NewBlkRing()
    {
        var page = new byte[4096];
        var front = FrontRing<blkif_request, blkif_response>.Initialize(page);
        return (front, new BackRing<blkif_request, blkif_response>(page), page);
    }

    [Fact]
    public void Ring_Sizes_Match_Xens_Const_Ring_Size()
    {
        RingLayout.Size(4096, RingLayout.EntrySize<blkif_request, blkif_response>()).Should().Be(Ring.RING_SIZE_blkif);
        RingLayout.Size(4096, RingLayout.EntrySize<netif_tx_request, netif_tx_response>()).Should().Be(Ring.RING_SIZE_netif_tx);
        RingLayout.Size(4096, RingLayout.EntrySize<netif_rx_request, netif_rx_response>()).Should().Be(Ring.RING_SIZE_netif_rx);
    }

    [Fact]
    public void Requests_And_Responses_Round_Trip_In_Order()
    {
        var (front, back, _) = NewBlkRing();
        for (ulong id = 1; id <= 5; id++)
        {
            front.TryQueueRequest(new blkif_request { id = id, sector_number = id * 8 }).Should().BeTrue();
        }

        front.PushRequests().Should().BeTrue("a fresh ring asks for the first request's event");
        var seen = new List<ulong>();
        while (back.TryTakeRequest(out var req) == RingStatus.Ok)
        {
            seen.Add(req.id);
            back.TryQueueResponse(new blkif_response { id = req.id, status = 0 }).Should().BeTrue();
        }

        seen.Should().Equal(1, 2, 3, 4, 5);
        back.PushResponses().Should().BeTrue();
        var answered = new List<ulong>();
        while (front.TryTakeResponse(out var rsp) == RingStatus.Ok)
        {
            answered.Add(rsp.id);
        }

        answered.Should().Equal(1, 2, 3, 4, 5);
    }

    [Fact]
    public void Push_Asks_For_An_Event_Only_When_The_Other_End_Wants_One()
    {
        var (front, back, _) = NewBlkRing();
        front.TryQueueRequest(new blkif_request { id = 1 });
        front.PushRequests().Should().BeTrue();

        // The back end has not re-armed req_event (it is still 1): the next push needs no event.
        front.TryQueueRequest(new blkif_request { id = 2 });
        front.PushRequests().Should().BeFalse();

        back.TryTakeRequest(out _).Should().Be(RingStatus.Ok);
        back.TryTakeRequest(out _).Should().Be(RingStatus.Ok);
        back.FinalCheckForRequests().Should().BeFalse("nothing is waiting, and it asks for the next event");
        front.TryQueueRequest(new blkif_request { id = 3 });
        front.PushRequests().Should().BeTrue("the back end re-armed req_event");
    }

    [Fact]
    public void Final_Check_Sees_A_Request_Published_Before_It_Rearmed()
    {
        var (front, back, _) = NewBlkRing();
        front.TryQueueRequest(new blkif_request { id = 1 });
        front.PushRequests();
        back.FinalCheckForRequests().Should().BeTrue();
    }

    [Fact]
    public void A_Full_Ring_Refuses_More_Requests_And_The_Back_End_Never_Takes_More_Than_It_Can_Answer()
    {
        var (front, back, _) = NewBlkRing();
        for (var i = 0; i < front.Size; i++)
        {
            front.TryQueueRequest(new blkif_request { id = (ulong)i }).Should().BeTrue();
        }

        front.TryQueueRequest(new blkif_request()).Should().BeFalse();
        front.FreeRequests.Should().Be(0);
        front.PushRequests();
        for (var i = 0; i < back.Size; i++)
        {
            back.TryTakeRequest(out _).Should().Be(RingStatus.Ok);
        }

        back.TryTakeRequest(out _).Should().Be(RingStatus.Empty);
        back.Outstanding.Should().Be(back.Size);
    }

    [Fact]
    public void Indices_Wrap_Around_Two_To_The_32()
    {
        var page = new byte[4096];
        var front = FrontRing<blkif_request, blkif_response>.Initialize(page);
        // Start both ends just below the wrap, as a long-lived ring would be.
        var start = uint.MaxValue - 3;
        BitConverter.TryWriteBytes(page.AsSpan(RingLayout.ReqProd), start);
        BitConverter.TryWriteBytes(page.AsSpan(RingLayout.RspProd), start);
        typeof(FrontRing<blkif_request, blkif_response>).GetField("_reqProdPvt", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.SetValue(front, start);
        typeof(FrontRing<blkif_request, blkif_response>).GetField("_rspCons", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.SetValue(front, start);
        var back = new BackRing<blkif_request, blkif_response>(page);
        for (ulong id = 0; id < 10; id++)
        {
            front.TryQueueRequest(new blkif_request { id = id });
        }

        front.PushRequests();
        var ids = new List<ulong>();
        while (back.TryTakeRequest(out var r) == RingStatus.Ok)
        {
            ids.Add(r.id);
            back.TryQueueResponse(new blkif_response { id = r.id });
        }

        back.PushResponses();
        ids.Should().Equal(Enumerable.Range(0, 10).Select(i => (ulong)i));
        var got = 0;
        while (front.TryTakeResponse(out _) == RingStatus.Ok)
        {
            got++;
        }

        got.Should().Be(10);
    }

    [Fact]
    public void Requests_Are_Copied_Out_So_A_Later_Rewrite_Of_The_Slot_Changes_Nothing_Taken()
    {
        var (front, back, page) = NewBlkRing();
        front.TryQueueRequest(new blkif_request { id = 7, nr_segments = 1 });
        front.PushRequests();
        back.TryTakeRequest(out var req).Should().Be(RingStatus.Ok);
        page.AsSpan(RingLayout.EntriesOffset, 64).Fill(0xff); // the front end scribbles on the slot afterwards
        req.id.Should().Be(7);
        req.nr_segments.Should().Be(1);
    }
}
