namespace Paravirt.Core.Domains;

/// <summary>
/// What one domain has used: hypercalls by number, events, timer interrupts, console bytes, block bytes,
/// network bytes and packets.
/// Counters are updated with atomics from the domain's vCPU threads and read at any time.
/// CPU time is per vCPU, from its run state (<see cref="Vcpu.CpuTimeNs"/>).
/// </summary>
public sealed class DomainMeter
{
    /// <summary>Slots in the hypercall table (Xen's NR_hypercalls).</summary>
    public const int HypercallSlots = 64;

    // One row of counters per vCPU, each written only by that vCPU's thread (a plain increment on
    // the hypercall path; no interlocked operation), summed when read.
    private readonly long[][] _hypercalls;
    private long _eventsSent;
    private long _eventsReceived;
    private long _timerInterrupts;
    private long _blockBytesRead;
    private long _blockBytesWritten;
    private long _netBytesSent;
    private long _netPacketsSent;
    private long _netBytesReceived;
    private long _netPacketsReceived;

    internal DomainMeter(int vcpus)
    {
        _hypercalls = new long[Math.Max(vcpus, 1)][];
        for (var i = 0; i < _hypercalls.Length; i++)
        {
            _hypercalls[i] = new long[HypercallSlots + 1];
        }
    }

    /// <summary>Hypercalls made with number <paramref name="nr"/>; numbers past the table count together under 64.</summary>
    public long Hypercalls(int nr)
    {
        var slot = (uint)nr < HypercallSlots ? nr : HypercallSlots;
        long sum = 0;
        foreach (var row in _hypercalls)
        {
            sum += Volatile.Read(ref row[slot]);
        }

        return sum;
    }

    public long TotalHypercalls
    {
        get
        {
            long sum = 0;
            foreach (var row in _hypercalls)
            {
                for (var i = 0; i < row.Length; i++)
                {
                    sum += Volatile.Read(ref row[i]);
                }
            }

            return sum;
        }
    }

    public long EventsSent => Interlocked.Read(ref _eventsSent);

    public long EventsReceived => Interlocked.Read(ref _eventsReceived);

    public long TimerInterrupts => Interlocked.Read(ref _timerInterrupts);

    /// <summary>Bytes the domain's block frontends read from their virtual disks (completed requests).</summary>
    public long BlockBytesRead => Interlocked.Read(ref _blockBytesRead);

    /// <summary>Bytes the domain's block frontends wrote to their virtual disks (completed requests).</summary>
    public long BlockBytesWritten => Interlocked.Read(ref _blockBytesWritten);

    /// <summary>Bytes of the frames the domain's vifs transmitted into their switches (counted by netback).</summary>
    public long NetBytesSent => Interlocked.Read(ref _netBytesSent);

    /// <summary>Frames the domain's vifs transmitted into their switches.</summary>
    public long NetPacketsSent => Interlocked.Read(ref _netPacketsSent);

    /// <summary>Bytes of the frames netback delivered into the domain's receive buffers.</summary>
    public long NetBytesReceived => Interlocked.Read(ref _netBytesReceived);

    /// <summary>Frames netback delivered into the domain's receive buffers.</summary>
    public long NetPacketsReceived => Interlocked.Read(ref _netPacketsReceived);

    /// <summary>vCPU <paramref name="vcpu"/>'s row of hypercall counters, for a gate to keep at hand.</summary>
    internal long[] HypercallRow(int vcpu) => _hypercalls[vcpu];

    /// <summary>Counts a hypercall on a row from <see cref="HypercallRow"/>. Called only on that vCPU's own thread.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void CountHypercall(long[] row, ulong nr)
    {
        ref var counter = ref row[nr < HypercallSlots ? (int)nr : HypercallSlots];
        Volatile.Write(ref counter, counter + 1);
    }

    internal void CountEventSent() => Interlocked.Increment(ref _eventsSent);

    internal void CountEventReceived() => Interlocked.Increment(ref _eventsReceived);

    internal void CountTimerInterrupt() => Interlocked.Increment(ref _timerInterrupts);

    internal void CountBlockRead(long bytes) => Interlocked.Add(ref _blockBytesRead, bytes);

    internal void CountBlockWritten(long bytes) => Interlocked.Add(ref _blockBytesWritten, bytes);

    internal void CountNetSent(long bytes)
    {
        Interlocked.Add(ref _netBytesSent, bytes);
        Interlocked.Increment(ref _netPacketsSent);
    }

    internal void CountNetReceived(long bytes)
    {
        Interlocked.Add(ref _netBytesReceived, bytes);
        Interlocked.Increment(ref _netPacketsReceived);
    }
}
