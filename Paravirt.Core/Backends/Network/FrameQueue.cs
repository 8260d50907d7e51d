using System.Diagnostics;
using System.Numerics;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// A switch port's bounded queue of frames: a ring of frame buffers owned by the port, each made
/// on first use, grown (to the next power of two) when a larger frame comes, and reused for good,
/// so queueing a frame never allocates once the port has seen its high-water mark. Frames are up
/// to <see cref="VirtualSwitch.MaxLargeFrameBytes"/> bytes and each keeps its
/// <see cref="FrameMeta"/> and the time it was queued. Any number of senders enqueue (a copy);
/// one reader peeks at the oldest frame, uses its bytes in place (it may change them: the buffer
/// is its until released), then releases it. Thread-safe for that pattern.
/// </summary>
internal sealed class FrameQueue
{
    private const int FirstBufferBytes = 2048;

    private readonly Lock _lock = new();
    private readonly byte[]?[] _buffers;
    private readonly int[] _lengths;
    private readonly FrameMeta[] _meta;
    private readonly long[] _queuedAt;
    private int _head;
    private int _count;
    private bool _closed;

    public FrameQueue(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _buffers = new byte[]?[capacity];
        _lengths = new int[capacity];
        _meta = new FrameMeta[capacity];
        _queuedAt = new long[capacity];
    }

    public int Capacity => _buffers.Length;

    public bool IsClosed => Volatile.Read(ref _closed);

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    /// <summary>Copies <paramref name="frame"/> in with its metadata; false when the queue is full or closed.</summary>
    public bool TryEnqueue(ReadOnlySpan<byte> frame, in FrameMeta meta)
    {
        if (frame.Length > VirtualSwitch.MaxLargeFrameBytes)
        {
            return false;
        }

        lock (_lock)
        {
            if (_closed || _count == _buffers.Length)
            {
                return false;
            }

            var i = (_head + _count) % _buffers.Length;
            var buffer = _buffers[i];
            if (buffer is null || buffer.Length < frame.Length)
            {
                // Grown once per size class and kept: a port that carries 64 KiB frames keeps 64 KiB buffers.
                buffer = _buffers[i] = new byte[Math.Max(FirstBufferBytes, (int)BitOperations.RoundUpToPowerOf2((uint)frame.Length))];
            }

            frame.CopyTo(buffer);
            _lengths[i] = frame.Length;
            _meta[i] = meta;
            _queuedAt[i] = Stopwatch.GetTimestamp();
            _count++;
            return true;
        }
    }

    /// <summary>The oldest frame, left in place until <see cref="Release"/> (reader only).</summary>
    public bool TryPeek(out byte[] buffer, out int length, out FrameMeta meta)
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                buffer = [];
                length = 0;
                meta = default;
                return false;
            }

            buffer = _buffers[_head]!;
            length = _lengths[_head];
            meta = _meta[_head];
            return true;
        }
    }

    /// <summary>True when a frame is queued (reader only).</summary>
    public bool IsEmpty
    {
        get
        {
            lock (_lock)
            {
                return _count == 0;
            }
        }
    }

    /// <summary>The <see cref="Stopwatch"/> timestamp the oldest frame was queued at, or null when empty.</summary>
    public long? OldestQueuedAt
    {
        get
        {
            lock (_lock)
            {
                return _count == 0 ? null : _queuedAt[_head];
            }
        }
    }

    /// <summary>Drops the oldest frame (the one <see cref="TryPeek"/> gave), freeing its buffer for senders.</summary>
    public void Release()
    {
        lock (_lock)
        {
            if (_count > 0)
            {
                _head = (_head + 1) % _buffers.Length;
                _count--;
            }
        }
    }

    /// <summary>No more frames: what is queued is discarded, every later enqueue fails.</summary>
    public void Close()
    {
        lock (_lock)
        {
            _closed = true;
            _count = 0;
        }
    }
}
