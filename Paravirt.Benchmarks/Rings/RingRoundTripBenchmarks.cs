using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Rings;

namespace Paravirt.Benchmarks.Rings;

/// <summary>
/// Request + response round trips through an <c>io/ring.h</c> ring over one 4 KiB page
/// (<see cref="FrontRing{TReq,TRsp}"/> on the benchmark thread, <see cref="BackRing{TReq,TRsp}"/> on
/// a back-end thread), with <c>blkif</c> requests and responses; each end notifies the other only
/// when the ring's PUSH_..._AND_CHECK_NOTIFY says so, by a host-side doorbell. Beside it, the same
/// round trips through two bounded <see cref="Channel{T}"/>s of the same structs, as many in flight
/// as the ring holds. Target: ≤ 1.0×.
/// </summary>
[MemoryDiagnoser]
public class RingRoundTripBenchmarks
{
    public const int RoundTrips = 10_000;

    private readonly byte[] _page = GC.AllocateArray<byte>(4096, pinned: true);
    private FrontRing<blkif_request, blkif_response> _front = null!;
    private Doorbell _toBack = null!;
    private Doorbell _toFront = null!;
    private Thread _back = null!;
    private volatile bool _stop;

    private Channel<blkif_request> _requests = null!;
    private Channel<blkif_response> _responses = null!;
    private Task _channelBack = null!;
    private int _inFlight;

    [GlobalSetup]
    public void Setup()
    {
        _front = FrontRing<blkif_request, blkif_response>.Initialize(_page);
        _inFlight = _front.Size;
        _toBack = new Doorbell();
        _toFront = new Doorbell();
        var back = new BackRing<blkif_request, blkif_response>(_page);
        _back = new Thread(() => Serve(back)) { IsBackground = true, Name = "ring-back" };
        _back.Start();

        var options = new BoundedChannelOptions(_inFlight) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait };
        _requests = Channel.CreateBounded<blkif_request>(options);
        _responses = Channel.CreateBounded<blkif_response>(options);
        _channelBack = Task.Run(ServeChannelAsync);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stop = true;
        _toBack.Ring();
        _back.Join();
        _requests.Writer.Complete();
        _channelBack.Wait();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = RoundTrips)]
    public async Task BoundedChannels()
    {
        var writer = _requests.Writer;
        var reader = _responses.Reader;
        int sent = 0, received = 0;
        while (received < RoundTrips)
        {
            while (sent < RoundTrips && sent - received < _inFlight && writer.TryWrite(new blkif_request { id = (ulong)sent, operation = Blkif.BLKIF_OP_WRITE }))
            {
                sent++;
            }

            var progressed = false;
            while (reader.TryRead(out var response))
            {
                received++;
                progressed = true;
                _ = response;
            }

            if (!progressed && received < RoundTrips && !await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                throw new InvalidOperationException("the response channel closed");
            }
        }
    }

    [Benchmark(OperationsPerInvoke = RoundTrips)]
    public void Ring()
    {
        int sent = 0, received = 0;
        while (received < RoundTrips)
        {
            while (sent < RoundTrips && _front.TryQueueRequest(new blkif_request { id = (ulong)sent, operation = Blkif.BLKIF_OP_WRITE }))
            {
                sent++;
            }

            if (_front.PushRequests())
            {
                _toBack.Ring();
            }

            var before = received;
            while (_front.TryTakeResponse(out _) == RingStatus.Ok)
            {
                received++;
            }

            // Sleep only when this pass took nothing: taken responses free slots for more requests.
            if (received == before && received < RoundTrips && !_front.FinalCheckForResponses())
            {
                _toFront.Wait();
            }
        }
    }

    private void Serve(BackRing<blkif_request, blkif_response> back)
    {
        while (!_stop)
        {
            RingStatus status;
            while ((status = back.TryTakeRequest(out var request)) == RingStatus.Ok)
            {
                back.TryQueueResponse(new blkif_response { id = request.id, operation = request.operation, status = Blkif.BLKIF_RSP_OKAY });
            }

            if (status == RingStatus.ProtocolError)
            {
                throw new InvalidOperationException("the front ring broke the protocol");
            }

            if (back.PushResponses())
            {
                _toFront.Ring();
            }

            if (!back.FinalCheckForRequests())
            {
                _toBack.Wait();
            }
        }
    }

    private async Task ServeChannelAsync()
    {
        var reader = _requests.Reader;
        var writer = _responses.Writer;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var request))
            {
                var response = new blkif_response { id = request.id, operation = request.operation, status = Blkif.BLKIF_RSP_OKAY };
                if (!writer.TryWrite(response))
                {
                    await writer.WriteAsync(response).ConfigureAwait(false);
                }
            }
        }
    }

    /// <summary>An event channel's host-side stand-in: rings coalesce until the waiter takes them.</summary>
    private sealed class Doorbell
    {
        private readonly SemaphoreSlim _signal = new(0);
        private int _pending;

        public void Ring()
        {
            if (Interlocked.Exchange(ref _pending, 1) == 0)
            {
                _signal.Release();
            }
        }

        public void Wait()
        {
            _signal.Wait();
            Volatile.Write(ref _pending, 0);
        }
    }
}
