namespace Paravirt.Core.Domains;

/// <summary>
/// What one domain has used: hypercalls by number, events, timer interrupts, console bytes.
/// Counters are updated with atomics from the domain's vCPU threads and read at any time.
/// CPU time is per vCPU, from its run state (<see cref="Vcpu.CpuTimeNs"/>).
/// </summary>
public sealed class DomainMeter
{
    /// <summary>Slots in the hypercall table (Xen's NR_hypercalls).</summary>
    public const int HypercallSlots = 64;

    private readonly long[] _hypercalls = new long[HypercallSlots + 1];
    private long _eventsSent;
    private long _eventsReceived;
    private long _timerInterrupts;

    /// <summary>Hypercalls made with number <paramref name="nr"/>; numbers past the table count together under 64.</summary>
    public long Hypercalls(int nr) => Interlocked.Read(ref _hypercalls[(uint)nr < HypercallSlots ? nr : HypercallSlots]);

    public long TotalHypercalls
    {
        get
        {
            long sum = 0;
            for (var i = 0; i < _hypercalls.Length; i++)
            {
                sum += Interlocked.Read(ref _hypercalls[i]);
            }

            return sum;
        }
    }

    public long EventsSent => Interlocked.Read(ref _eventsSent);

    public long EventsReceived => Interlocked.Read(ref _eventsReceived);

    public long TimerInterrupts => Interlocked.Read(ref _timerInterrupts);

    internal void CountHypercall(ulong nr) => Interlocked.Increment(ref _hypercalls[nr < HypercallSlots ? (int)nr : HypercallSlots]);

    internal void CountEventSent() => Interlocked.Increment(ref _eventsSent);

    internal void CountEventReceived() => Interlocked.Increment(ref _eventsReceived);

    internal void CountTimerInterrupt() => Interlocked.Increment(ref _timerInterrupts);
}
