namespace Paravirt.Core.Backends.Network;

/// <summary>
/// A switch port's bounded queue of frames: a ring of frame buffers owned by the port, each made
/// on first use and reused for good, so queueing a frame never allocates once the port has seen
/// its high-water mark. Any number of senders enqueue (a copy); one reader peeks at the oldest
/// frame, uses its bytes in place, then releases it. Thread-safe for that pattern.
/// </summary>
internal sealed class FrameQueue
{
    private readonly Lock _lock = new();
    private readonly byte[]?[] _buffers;
    private readonly int[] _lengths;
    private readonly ushort[] _flags;
    private int _head;
    private int _count;
    private bool _closed;

    public FrameQueue(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _buffers = new byte[]?[capacity];
        _lengths = new int[capacity];
        _flags = new ushort[capacity];
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

    /// <summary>Copies <paramref name="frame"/> in; false when the queue is full or closed.</summary>
    public bool TryEnqueue(ReadOnlySpan<byte> frame, ushort flags)
    {
        lock (_lock)
        {
            if (_closed || _count == _buffers.Length)
            {
                return false;
            }

            var i = (_head + _count) % _buffers.Length;
            var buffer = _buffers[i] ??= new byte[VirtualSwitch.MaxFrameBytes];
            frame.CopyTo(buffer);
            _lengths[i] = frame.Length;
            _flags[i] = flags;
            _count++;
            return true;
        }
    }

    /// <summary>The oldest frame, left in place until <see cref="Release"/> (reader only).</summary>
    public bool TryPeek(out byte[] buffer, out int length, out ushort flags)
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                buffer = [];
                length = 0;
                flags = 0;
                return false;
            }

            buffer = _buffers[_head]!;
            length = _lengths[_head];
            flags = _flags[_head];
            return true;
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
