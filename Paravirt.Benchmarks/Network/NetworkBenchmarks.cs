using System.Buffers;
using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Benchmarks.Network;

/// <summary>
/// The network path end to end: 4,000 frames of 1,500 bytes from one running managed guest's
/// netfront → event channel → netback (grant copy) → the virtual switch → the other guest's
/// netback (grant copy) → its netfront, against a bounded <see cref="Channel{T}"/> of
/// <c>byte[]</c> carrying the same frames between two threads (each frame copied into a pooled
/// array on one side and out of it on the other). Both guests wait on host semaphores between
/// invocations (as the block pair does); the receiver's port queue holds a whole batch, so no
/// frame can be dropped. Target ≤ 2×.
/// </summary>
[MemoryDiagnoser]
public class NetworkBenchmarks
{
    public const int Frames = 4000;
    public const int FrameBytes = 1500;

    private static readonly MacAddress SenderMac = MacAddress.Parse("00:16:3e:00:00:01");
    private static readonly MacAddress ReceiverMac = MacAddress.Parse("00:16:3e:00:00:02");
    private Hypervisor _hv = null!;
    private Domain _sender = null!;
    private Domain _receiver = null!;
    private NetBack _senderVif = null!;
    private NetBack _receiverVif = null!;
    private NetKernel _send = null!;
    private NetKernel _receive = null!;
    private byte[] _frame = null!;
    private byte[] _sink = null!;

    [GlobalSetup]
    public void Setup()
    {
        _frame = new byte[FrameBytes];
        new Random(42).NextBytes(_frame);
        ReceiverMac.Write(_frame);
        SenderMac.Write(_frame.AsSpan(6));
        _frame[12] = 0x88;
        _frame[13] = 0xB5;
        _sink = new byte[FrameBytes];

        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var sw = _hv.Switch("br-bench");
        _sender = _hv.CreateDomain(new DomainConfig { Name = "net-send", MemoryMiB = 8 });
        _receiver = _hv.CreateDomain(new DomainConfig { Name = "net-recv", MemoryMiB = 8 });
        _senderVif = _sender.AttachNic(sw, new NicOptions { Mac = SenderMac });
        _receiverVif = _receiver.AttachNic(sw, new NicOptions { Mac = ReceiverMac, QueueFrames = Frames + 64 });
        _send = new NetKernel(sending: true, _frame, new NetFrontendOptions { TxSlots = 256, RxBuffers = 16 });
        _receive = new NetKernel(sending: false, _frame, new NetFrontendOptions { TxSlots = 16, RxBuffers = 256 });
        _receiver.Start(_receive);
        _sender.Start(_send);
        _send.WaitReady(_sender, "connect its vif");
        _receive.WaitReady(_receiver, "connect its vif");

        NetworkGuestToGuest(); // one warm batch proves the path works before measuring
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _send.Stop();
        _receive.Stop();
        _sender.WaitForShutdownAsync().Wait(TimeSpan.FromSeconds(30));
        _receiver.WaitForShutdownAsync().Wait(TimeSpan.FromSeconds(30));
        _sender.Destroy();
        _receiver.Destroy();
        _senderVif.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
        _receiverVif.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
        _hv.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Frames)]
    public async Task ChannelOfByteArrays()
    {
        var channel = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(256) { SingleReader = true, SingleWriter = true });
        var producer = Task.Run(async () =>
        {
            for (var i = 0; i < Frames; i++)
            {
                var b = ArrayPool<byte>.Shared.Rent(FrameBytes);
                _frame.CopyTo(b, 0);
                await channel.Writer.WriteAsync(b);
            }

            channel.Writer.Complete();
        });
        var received = 0;
        await foreach (var b in channel.Reader.ReadAllAsync())
        {
            b.AsSpan(0, FrameBytes).CopyTo(_sink);
            ArrayPool<byte>.Shared.Return(b);
            received++;
        }

        await producer;
        if (received != Frames)
        {
            throw new InvalidOperationException($"{received} frames arrived, {Frames} were sent");
        }
    }

    [Benchmark(OperationsPerInvoke = Frames)]
    public void NetworkGuestToGuest()
    {
        _receive.Go.Release();
        _send.Go.Release();
        _send.WaitBatch(_sender);
        _receive.WaitBatch(_receiver);
    }

    /// <summary>A guest that connects its netfront, then sends or receives <see cref="Frames"/> frames per <see cref="BatchKernel.Go"/>.</summary>
    private sealed class NetKernel(bool sending, byte[] frame, NetFrontendOptions options) : BatchKernel
    {
        private readonly byte[] _buffer = new byte[NetFrontend.MaxFrameBytes];
        private NetFrontend _fe = null!;

        protected override void Connect(GuestRuntime rt) => _fe = NetFrontend.Connect(rt, options);

        protected override void Batch()
        {
            for (var i = 0; i < Frames; i++)
            {
                if (sending)
                {
                    _fe.Send(frame);
                }
                else if (_fe.Receive(_buffer) != FrameBytes)
                {
                    throw new InvalidOperationException($"frame {i} arrived with the wrong length");
                }
            }

            if (sending)
            {
                _fe.Flush();
            }
        }

        protected override void Disconnect() => _fe.Close();
    }
}
