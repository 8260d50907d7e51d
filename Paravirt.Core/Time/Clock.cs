using System.Diagnostics;

namespace Paravirt.Core.Time;

/// <summary>
/// The hypervisor's time base. Guests see a time stamp counter (the host's monotonic
/// <see cref="Stopwatch"/> ticks, as a virtual TSC) and convert it to nanoseconds of system time
/// with the <c>tsc_to_system_mul</c>/<c>tsc_shift</c> pair of <c>vcpu_time_info</c>, exactly as Linux's
/// pvclock does: <c>ns = ((tsc_delta &lt;&lt; shift) * mul) &gt;&gt; 32</c> (right shift when negative).
/// System time is nanoseconds since the hypervisor started; the wallclock in shared_info is the
/// time of day at system time zero.
/// </summary>
public sealed class Clock
{
    private readonly long _startTicks;

    public Clock(TimeProvider? wallclock = null)
    {
        _startTicks = Stopwatch.GetTimestamp();
        var now = (wallclock ?? TimeProvider.System).GetUtcNow();
        var bootNs = (now - DateTimeOffset.UnixEpoch).Ticks * 100;
        BootWallclockSec = (ulong)(bootNs / 1_000_000_000);
        BootWallclockNsec = (uint)(bootNs % 1_000_000_000);
        (TscToSystemMul, TscShift) = ScaleFor(Stopwatch.Frequency);
    }

    /// <summary>Virtual TSC frequency in Hz.</summary>
    public static long TscFrequency => Stopwatch.Frequency;

    public uint TscToSystemMul { get; }

    public sbyte TscShift { get; }

    /// <summary>Seconds since the Unix epoch at system time 0.</summary>
    public ulong BootWallclockSec { get; }

    /// <summary>Nanoseconds part of the wallclock at system time 0.</summary>
    public uint BootWallclockNsec { get; }

    /// <summary>The virtual TSC (what <c>rdtsc</c> returns to a guest).</summary>
    public static ulong ReadTsc() => (ulong)Stopwatch.GetTimestamp();

    /// <summary>TSC at system time zero.</summary>
    public ulong TscAtBoot => (ulong)_startTicks;

    /// <summary>Nanoseconds since the hypervisor started (Xen's NOW()).</summary>
    public ulong SystemTimeNs() => TscToNs(ReadTsc() - (ulong)_startTicks);

    /// <summary>Converts a TSC delta to nanoseconds with the published mul/shift, as a guest would.</summary>
    public ulong TscToNs(ulong delta) => Scale(delta, TscToSystemMul, TscShift);

    /// <summary>The TSC value at which system time reaches <paramref name="ns"/>.</summary>
    public ulong NsToTsc(ulong ns) => (ulong)_startTicks + (ulong)(ns * (UInt128)TscFrequency / 1_000_000_000UL);

    /// <summary>pvclock's scaling: shift first, then a 32.32 fixed-point multiply.</summary>
    public static ulong Scale(ulong delta, uint mul, sbyte shift)
    {
        delta = shift < 0 ? delta >> -shift : delta << shift;
        return (ulong)(((UInt128)delta * mul) >> 32);
    }

    /// <summary>
    /// The (mul, shift) pair with ns = scale(ticks) for a counter of <paramref name="hz"/>:
    /// choose the shift that puts the ratio 1e9/hz in [0.5, 1) and express it in 32.32.
    /// </summary>
    public static (uint Mul, sbyte Shift) ScaleFor(long hz)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hz, 1);
        // ratio = 1e9 / hz = mul / 2^32 * 2^shift, with mul < 2^32.
        var shift = 0;
        var num = (UInt128)1_000_000_000;
        var den = (UInt128)hz;
        while (num >= den)
        {
            den <<= 1;
            shift++;
        }

        while (num * 2 < den)
        {
            num <<= 1;
            shift--;
        }

        var mul = (num << 32) / den;
        return ((uint)mul, (sbyte)shift);
    }
}
