namespace Paravirt.Core.Backends.Network;

/// <summary>What one switch port has carried (a snapshot; every counter only grows).</summary>
/// <param name="FramesIn">Frames the port sent into the switch (valid ones, forwarded or filtered).</param>
/// <param name="BytesIn">Their bytes.</param>
/// <param name="FramesOut">Frames the switch queued to this port.</param>
/// <param name="BytesOut">Their bytes.</param>
/// <param name="Dropped">Frames for this port dropped because its queue was full (or it was detaching).</param>
/// <param name="Invalid">Frames from this port the switch refused (shorter than 14 or longer than 1514 bytes).</param>
/// <param name="Filtered">Frames from this port not forwarded because their destination was learned on this same port.</param>
/// <param name="NotLearned">Source addresses not learned because the port already had its quota of learned addresses.</param>
/// <param name="Spoofed">Frames from this port dropped by its <see cref="SourcePolicy"/>: a source MAC other than the vif's, or an IPv4 source outside its <c>ip=</c> list.</param>
public readonly record struct SwitchPortStats(
    long FramesIn,
    long BytesIn,
    long FramesOut,
    long BytesOut,
    long Dropped,
    long Invalid,
    long Filtered,
    long NotLearned,
    long Spoofed = 0);

/// <summary>
/// One port of a <see cref="VirtualSwitch"/>: a guest's vif (served by netback) or a host
/// endpoint. Frames for the port wait in a bounded queue; when it is full the switch drops and
/// counts (<see cref="SwitchPortStats.Dropped"/>) rather than wait, so a slow port never holds up
/// the others. Each port owns its queue's frame buffers (made on first use, then reused), so
/// switching a frame does not allocate.
/// </summary>
public abstract class SwitchPort
{
    private readonly FrameQueue _queue;
    internal long FramesIn;
    internal long BytesIn;
    internal long FramesOut;
    internal long BytesOut;
    internal long Dropped;
    internal long Invalid;
    internal long Filtered;
    internal long NotLearned;
    internal long Spoofed;
    private int _attached;

    private protected SwitchPort(VirtualSwitch @switch, string name, int queueFrames)
    {
        ArgumentNullException.ThrowIfNull(@switch);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueFrames, 1);
        Switch = @switch;
        Name = name;
        QueueFrames = queueFrames;
        _queue = new FrameQueue(queueFrames);
    }

    public VirtualSwitch Switch { get; }

    /// <summary>For diagnostics: <c>vif3.0</c>, <c>host 00:16:3e:…</c>.</summary>
    public string Name { get; }

    /// <summary>Frames the port's queue holds at most.</summary>
    public int QueueFrames { get; }

    /// <summary>True while the port is attached to its switch.</summary>
    public bool IsAttached => Volatile.Read(ref _attached) != 0;

    /// <summary>
    /// What the port may send from (anti-spoofing), or null for anything (a host endpoint). A vif's
    /// is set by netback before the port joins the switch.
    /// </summary>
    internal SourcePolicy? Source { get; set; }

    /// <summary>Addresses the switch has learned on this port (changed under the switch's lock).</summary>
    internal int LearnedMacs;

    public SwitchPortStats Stats => new(
        Interlocked.Read(ref FramesIn),
        Interlocked.Read(ref BytesIn),
        Interlocked.Read(ref FramesOut),
        Interlocked.Read(ref BytesOut),
        Interlocked.Read(ref Dropped),
        Interlocked.Read(ref Invalid),
        Interlocked.Read(ref Filtered),
        Interlocked.Read(ref NotLearned),
        Interlocked.Read(ref Spoofed));

    /// <summary>The frames waiting for this port (read by its one reader: netback's worker, or the host).</summary>
    internal FrameQueue Queue => _queue;

    internal void MarkAttached(bool attached) => Volatile.Write(ref _attached, attached ? 1 : 0);

    /// <summary>Copies <paramref name="frame"/> into the port's queue; false (and counted) when the queue is full.</summary>
    internal bool Enqueue(ReadOnlySpan<byte> frame, ushort rxFlags)
    {
        if (!IsAttached || !_queue.TryEnqueue(frame, rxFlags))
        {
            Interlocked.Increment(ref Dropped);
            return false;
        }

        Interlocked.Increment(ref FramesOut);
        Interlocked.Add(ref BytesOut, frame.Length);
        OnFrameQueued();
        return true;
    }

    /// <summary>A frame was queued: wake whoever delivers the port's frames. Runs on the sender's thread; must not block.</summary>
    private protected abstract void OnFrameQueued();

    /// <summary>Detached: no more frames come; what is queued is discarded and the reader is woken to see the end.</summary>
    internal void CloseQueue()
    {
        _queue.Close();
        OnFrameQueued();
    }
}
