using Paravirt.Core.Abi.Io;
using Paravirt.Core.Rings;

namespace Paravirt.Tests.Rings;

/// <summary>A hostile other end: indices that lie are reported, never looped over.</summary>
public sealed class RingProtocolErrorTests
{
    [Fact]
    public void ProducerIndexTooFarAhead_IsAProtocolError_AndNothingIsTaken()
    {
        var page = new byte[4096];
        FrontRing<blkif_request, blkif_response>.Initialize(page);
        var back = new BackRing<blkif_request, blkif_response>(page);
        BitConverter.TryWriteBytes(page.AsSpan(RingLayout.ReqProd), (uint)back.Size + 1);
        back.TryTakeRequest(out _).Should().Be(RingStatus.ProtocolError);
        back.IsBroken.Should().BeTrue();
        back.TryTakeRequest(out _).Should().Be(RingStatus.ProtocolError, "a broken ring stays broken");
    }

    [Fact]
    public void A_Huge_Producer_Index_Is_Rejected_Not_Wrapped()
    {
        var page = new byte[4096];
        FrontRing<blkif_request, blkif_response>.Initialize(page);
        var back = new BackRing<blkif_request, blkif_response>(page);
        BitConverter.TryWriteBytes(page.AsSpan(RingLayout.ReqProd), 0x8000_0000u);
        back.TryTakeRequest(out _).Should().Be(RingStatus.ProtocolError);
    }

    [Fact]
    public void More_Responses_Than_Requests_Is_A_Protocol_Error_For_The_Front_End()
    {
        var page = new byte[4096];
        var front = FrontRing<blkif_request, blkif_response>.Initialize(page);
        front.TryQueueRequest(new blkif_request { id = 1 });
        front.PushRequests();
        BitConverter.TryWriteBytes(page.AsSpan(RingLayout.RspProd), 5u);
        front.TryTakeResponse(out _).Should().Be(RingStatus.ProtocolError);
        front.IsBroken.Should().BeTrue();
    }

    [Fact]
    public void A_Byte_Ring_Whose_Producer_Ran_Past_The_Consumer_Reads_As_An_Error()
    {
        var page = new byte[4096];
        var outRing = ByteRing.ConsoleOut(page);
        BitConverter.TryWriteBytes(page.AsSpan(3084), 5000u); // out_prod far beyond out_cons + 2048
        outRing.Available.Should().Be(-1);
        outRing.Read(new byte[16]).Should().Be(-1);
        BitConverter.ToUInt32(page, 3080).Should().Be(0u, "the consumer index does not move on an error");
    }

    [Fact]
    public void Random_Index_Garbage_Never_Throws_And_Never_Reports_More_Than_The_Ring_Holds()
    {
        var rng = new Random(1234);
        var page = new byte[4096];
        FrontRing<netif_tx_request, netif_tx_response>.Initialize(page);
        var back = new BackRing<netif_tx_request, netif_tx_response>(page);
        var taken = 0;
        for (var i = 0; i < 10_000 && !back.IsBroken; i++)
        {
            BitConverter.TryWriteBytes(page.AsSpan(RingLayout.ReqProd), (uint)rng.Next());
            while (back.TryTakeRequest(out _) == RingStatus.Ok)
            {
                taken++;
                back.TryQueueResponse(default).Should().BeTrue();
            }

            back.PushResponses();
        }

        back.IsBroken.Should().BeTrue("random indices are soon more than a ring ahead");
        taken.Should().BeLessThanOrEqualTo(10_000 * back.Size);
    }
}
