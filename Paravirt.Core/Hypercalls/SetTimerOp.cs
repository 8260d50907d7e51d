using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_set_timer_op(timeout)</c>, Xen's do_set_timer_op: arms the calling vCPU's
/// single-shot timer at an absolute system time in ns; 0 cancels it. A timeout that went negative
/// or lies 2^50 ns (about 13 days) or more ahead is taken for a wrapped Linux jiffy value and the
/// timer fires in 100 ms instead. A timeout already past fires at once. Always returns 0.
/// </summary>
internal static class SetTimerOp
{
    /// <summary>Xen's MILLISECS(100): where a huge or negative timeout lands.</summary>
    public const ulong HugeTimeoutFallbackNs = 100_000_000;

    /// <summary>Offsets from now at or beyond 2^50 ns count as huge.</summary>
    public const long HugeOffsetNs = 1L << 50;

    public static long Handle(Vcpu vcpu, ulong timeout, ulong a2, ulong a3, ulong a4, ulong a5)
    {
        var stime = (long)timeout; // s_time_t
        if (stime == 0)
        {
            vcpu.SetSingleShotTimer(0);
            return Result.Ok;
        }

        var now = vcpu.Domain.Hypervisor.Clock.SystemTimeNs();
        var offset = stime - (long)now;
        if (stime < 0 || offset >= HugeOffsetNs)
        {
            vcpu.SetSingleShotTimer(now + HugeTimeoutFallbackNs);
        }
        else
        {
            vcpu.SetSingleShotTimer((ulong)stime);
        }

        return Result.Ok;
    }
}
