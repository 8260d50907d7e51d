using System.Buffers;
using System.Buffers.Binary;
using System.Threading.Channels;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// The host program's own port on a <see cref="VirtualSwitch"/> (<see cref="VirtualSwitch.ConnectHost"/>):
/// it sends raw Ethernet frames into the switch and receives the frames the switch forwards to
/// it, without a TAP device. Receiving is bounded like every port's: frames arriving while
/// <see cref="SwitchPort.QueueFrames"/> wait unread are dropped and counted. The host takes no
/// offloads: a GSO frame from a guest is received as its TCP segments, and a frame whose sender
/// left its TCP/UDP checksum blank is received with the checksum computed. Dispose to detach.
/// </summary>
public sealed class SwitchHostPort : SwitchPort, IDisposable
{
    private readonly Channel<bool> _arrived = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private int _nextSegment; // of the GSO frame at the head of the queue (reader only)

    internal SwitchHostPort(VirtualSwitch @switch, MacAddress mac, int queueFrames)
        : base(@switch, $"host {mac}", queueFrames, VirtualSwitch.MaxFrameBytes) => Mac = mac;

    /// <summary>The host's address on the switch (learned once the host sends from it).</summary>
    public MacAddress Mac { get; }

    private protected override void OnFrameQueued(int queue) => _arrived.Writer.TryWrite(true);

    /// <summary>Sends one raw frame (<see cref="VirtualSwitch.MinFrameBytes"/>..<see cref="VirtualSwitch.MaxFrameBytes"/> bytes) into the switch.</summary>
    /// <exception cref="ArgumentException">The frame is shorter than an Ethernet header or longer than 1514 bytes.</exception>
    /// <exception cref="InvalidOperationException">The port is detached.</exception>
    public void Send(ReadOnlySpan<byte> frame)
    {
        if (frame.Length is < VirtualSwitch.MinFrameBytes or > VirtualSwitch.MaxFrameBytes)
        {
            throw new ArgumentException($"a frame of {frame.Length} bytes: an Ethernet frame here is {VirtualSwitch.MinFrameBytes} to {VirtualSwitch.MaxFrameBytes} bytes (header and payload, no FCS)", nameof(frame));
        }

        ThrowIfDetached();
        Switch.Forward(this, frame);
    }

    /// <summary>Sends a frame from <see cref="Mac"/> to <paramref name="destination"/> with <paramref name="etherType"/> and <paramref name="payload"/> (up to 1500 bytes).</summary>
    public void Send(MacAddress destination, ushort etherType, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > VirtualSwitch.MaxFrameBytes - VirtualSwitch.MinFrameBytes)
        {
            throw new ArgumentException($"a payload of {payload.Length} bytes: at most {VirtualSwitch.MaxFrameBytes - VirtualSwitch.MinFrameBytes} fit in a frame", nameof(payload));
        }

        var frame = ArrayPool<byte>.Shared.Rent(VirtualSwitch.MinFrameBytes + payload.Length);
        try
        {
            destination.Write(frame);
            Mac.Write(frame.AsSpan(6));
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), etherType);
            payload.CopyTo(frame.AsSpan(14));
            Send(frame.AsSpan(0, VirtualSwitch.MinFrameBytes + payload.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    /// <summary>As <see cref="Send(ReadOnlySpan{byte})"/>; the switch never waits, so this completes at once.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> frame, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Send(frame.Span);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Takes the next frame if one is queued: copies it into <paramref name="buffer"/> and returns
    /// true with its length. A GSO frame comes out one TCP segment per call; a blank checksum is
    /// computed first.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="buffer"/> is smaller than the waiting frame (which stays queued).</exception>
    public bool TryReceive(Span<byte> buffer, out int length)
    {
        length = 0;
        if (!Queue.TryPeek(out var frame, out var n, out var meta))
        {
            return false;
        }

        var size = meta.IsGso ? TcpSegmenter.Length(meta, _nextSegment) : n;
        if (size > buffer.Length)
        {
            throw new ArgumentException($"the next frame is {size} bytes and the buffer only {buffer.Length}: pass at least {VirtualSwitch.MaxFrameBytes}", nameof(buffer));
        }

        if (meta.IsGso)
        {
            if (_nextSegment == 0)
            {
                Interlocked.Increment(ref Segmented);
            }

            TcpSegmenter.Write(frame.AsSpan(0, n), meta, _nextSegment, buffer, finishChecksum: true, out _);
            Interlocked.Increment(ref ChecksumsCompleted);
            if (++_nextSegment < TcpSegmenter.Count(meta))
            {
                length = size;
                return true;
            }

            _nextSegment = 0;
        }
        else
        {
            frame.AsSpan(0, n).CopyTo(buffer);
            if (meta.Checksum == FrameChecksum.Partial)
            {
                PacketHeaders.Complete(buffer[..n], meta.L4Protocol, meta.L4Offset, meta.L4Length);
                Interlocked.Increment(ref ChecksumsCompleted);
            }
        }

        Queue.Release();
        length = size;
        return true;
    }

    /// <summary>Waits for the next frame, copies it into <paramref name="buffer"/> and returns its length. One receiver at a time.</summary>
    /// <exception cref="InvalidOperationException">The port was detached (disposed, or its switch was).</exception>
    public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (TryReceive(buffer.Span, out var length))
            {
                return length;
            }

            if (Queue.IsClosed)
            {
                throw new InvalidOperationException($"{Name} is detached from switch {Switch.Name}: no more frames");
            }

            await _arrived.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false);
            _arrived.Reader.TryRead(out _);
        }
    }

    private void ThrowIfDetached()
    {
        if (!IsAttached)
        {
            throw new InvalidOperationException($"{Name} is detached from switch {Switch.Name}");
        }
    }

    /// <summary>Detaches the port from its switch.</summary>
    public void Dispose() => Switch.Detach(this);
}
