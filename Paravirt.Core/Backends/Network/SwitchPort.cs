namespace Paravirt.Core.Backends.Network;

/// <summary>What one switch port has carried (a snapshot; every counter only grows).</summary>
/// <param name="FramesIn">Frames the port sent into the switch (valid ones, forwarded or filtered).</param>
/// <param name="BytesIn">Their bytes.</param>
/// <param name="FramesOut">Frames the switch queued to this port.</param>
/// <param name="BytesOut">Their bytes.</param>
/// <param name="Dropped">Frames for this port dropped because its queue was full (or it was detaching).</param>
/// <param name="Invalid">Frames from this port the switch refused (shorter than 14 bytes, or longer than the port's MTU allows for an ordinary frame, or than 65535 for a GSO frame).</param>
/// <param name="Filtered">Frames from this port not forwarded because their destination was learned on this same port.</param>
/// <param name="NotLearned">Source addresses not learned because the port already had its quota of learned addresses.</param>
/// <param name="TooLong">Frames for this port not queued because they are longer than its MTU allows (for a GSO frame it cannot take whole: its segments), as a bridge does not forward them.</param>
/// <param name="Segmented">GSO frames for this port cut into TCP segments in software because its reader cannot take them whole.</param>
/// <param name="ChecksumsCompleted">Frames (or segments) for this port whose blank TCP/UDP checksum was computed because its reader cannot finish it.</param>
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
    long TooLong,
    long Segmented,
    long ChecksumsCompleted,
    long Spoofed);

/// <summary>
/// One port of a <see cref="VirtualSwitch"/>: a guest's vif (served by netback) or a host
/// endpoint. Frames for the port wait in a bounded queue (a multi-queue vif has one per queue and
/// picks one per frame); when it is full the switch drops and counts
/// (<see cref="SwitchPortStats.Dropped"/>) rather than wait, so a slow port never holds up the
/// others. Each port owns its queues' frame buffers (made on first use, then reused), so switching
/// a frame does not allocate. A frame keeps its GSO and checksum state in the queue; the port's
/// reader segments it or finishes its checksum if it cannot take it as it is.
/// </summary>
public abstract class SwitchPort
{
    private readonly FrameQueue[] _queues;
    internal long FramesIn;
    internal long BytesIn;
    internal long FramesOut;
    internal long BytesOut;
    internal long Dropped;
    internal long Invalid;
    internal long Filtered;
    internal long NotLearned;
    internal long Spoofed;
    internal long TooLong;
    internal long Segmented;
    internal long ChecksumsCompleted;
    private int _attached;

    private protected SwitchPort(VirtualSwitch @switch, string name, int queueFrames, int maxFrameBytes, int queues = 1)
    {
        ArgumentNullException.ThrowIfNull(@switch);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueFrames, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxFrameBytes, VirtualSwitch.MinFrameBytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxFrameBytes, VirtualSwitch.MaxLargeFrameBytes);
        Switch = @switch;
        Name = name;
        QueueFrames = queueFrames;
        MaxFrameBytes = maxFrameBytes;
        _queues = new FrameQueue[queues];
        for (var i = 0; i < queues; i++)
        {
            _queues[i] = new FrameQueue(queueFrames);
        }
    }

    public VirtualSwitch Switch { get; }

    /// <summary>For diagnostics: <c>vif3.0</c>, <c>host 00:16:3e:…</c>.</summary>
    public string Name { get; }

    /// <summary>Frames each of the port's queues holds at most.</summary>
    public int QueueFrames { get; }

    /// <summary>The longest ordinary frame the port sends or receives: its MTU plus the 14-byte Ethernet header.</summary>
    public int MaxFrameBytes { get; }

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
        Interlocked.Read(ref TooLong),
        Interlocked.Read(ref Segmented),
        Interlocked.Read(ref ChecksumsCompleted),
        Interlocked.Read(ref Spoofed));

    /// <summary>The frames waiting for this port (its first queue; read by its one reader: netback's worker, or the host).</summary>
    internal FrameQueue Queue => _queues[0];

    /// <summary>The port's queues (one per vif queue).</summary>
    internal int QueueCount => _queues.Length;

    internal FrameQueue QueueAt(int queue) => _queues[queue];

    internal void MarkAttached(bool attached) => Volatile.Write(ref _attached, attached ? 1 : 0);

    /// <summary>
    /// Copies <paramref name="frame"/> into the queue the port picks for it; false (and counted)
    /// when it is longer than the port's MTU allows, the port's filter refuses it, or the queue is full.
    /// </summary>
    internal bool Enqueue(ReadOnlySpan<byte> frame, in FrameMeta meta)
    {
        if (!IsAttached)
        {
            Interlocked.Increment(ref Dropped);
            return false;
        }

        // is_skb_forwardable: only what fits the egress port's MTU goes out; a GSO frame it cannot
        // take whole goes if its segments will fit.
        var fits = meta.IsGso ? TakesGso(meta.GsoType) || meta.SegmentBytes <= MaxFrameBytes : frame.Length <= MaxFrameBytes;
        if (!fits)
        {
            Interlocked.Increment(ref TooLong);
            return false;
        }

        if (!Admits(frame))
        {
            return false;
        }

        var queued = meta;
        var q = SelectQueue(frame, ref queued);
        if (!_queues[q].TryEnqueue(frame, queued))
        {
            Interlocked.Increment(ref Dropped);
            return false;
        }

        Interlocked.Increment(ref FramesOut);
        Interlocked.Add(ref BytesOut, frame.Length);
        OnFrameQueued(q);
        return true;
    }

    /// <summary>True if the port's reader takes GSO frames of <paramref name="gsoType"/> whole; otherwise it segments them.</summary>
    private protected virtual bool TakesGso(byte gsoType) => false;

    /// <summary>The port's own filter (a vif's multicast control); false drops the frame (the port counts it).</summary>
    private protected virtual bool Admits(ReadOnlySpan<byte> frame) => true;

    /// <summary>Which of the port's queues gets <paramref name="frame"/>; may note a hash in <paramref name="meta"/>. Runs on the sender's thread.</summary>
    private protected virtual int SelectQueue(ReadOnlySpan<byte> frame, ref FrameMeta meta) => 0;

    /// <summary>A frame was queued on <paramref name="queue"/>: wake whoever delivers it. Runs on the sender's thread; must not block.</summary>
    private protected abstract void OnFrameQueued(int queue);

    /// <summary>Detached: no more frames come; what is queued is discarded and the readers are woken to see the end.</summary>
    internal void CloseQueue()
    {
        for (var i = 0; i < _queues.Length; i++)
        {
            _queues[i].Close();
            OnFrameQueued(i);
        }
    }
}
