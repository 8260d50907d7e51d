using Paravirt.Core.Abi;

namespace Paravirt.Guest;

/// <summary>
/// Time as a PV kernel keeps it, without timer hardware: system time from this vCPU's
/// <c>vcpu_time_info</c> (the pvclock protocol: retry while <c>version</c> is odd or changes;
/// <c>ns = system_time + (((tsc - tsc_timestamp) &lt;&lt; tsc_shift) * tsc_to_system_mul) &gt;&gt; 32</c>),
/// the wallclock from shared_info under <c>wc_version</c>, and one-shot timers multiplexed on
/// <c>set_timer_op</c>, which raises VIRQ_TIMER when the earliest deadline passes.
/// Timer callbacks run in interrupt context (events masked): they must not block.
/// </summary>
public sealed class GuestClock
{
    private readonly XenGuest _guest;

    internal GuestClock(XenGuest guest) => _guest = guest;

    /// <summary>Nanoseconds since the hypervisor started, from the current vCPU's vcpu_time_info.</summary>
    public ulong SystemTimeNs() => ReadPvclock(_guest.Current.VcpuInfoAddress + Layout.Time, out _);

    /// <summary>The pvclock read of the vcpu_time_info at <paramref name="timeInfo"/>; <paramref name="version"/> is the (even) version used.</summary>
    public ulong ReadPvclock(ulong timeInfo, out uint version)
    {
        var mem = _guest.Memory;
        var cpu = _guest.Current.Cpu!;
        for (var attempt = 0; ; attempt++)
        {
            version = (uint)mem.ReadVolatile(timeInfo, 4);
            if ((version & 1) != 0)
            {
                Thread.SpinWait(1 + Math.Min(attempt, 64)); // [XEN] is mid-update
                continue;
            }

            var t = mem.Read<vcpu_time_info>(timeInfo);
            var tsc = cpu.ReadTsc();
            if ((uint)mem.ReadVolatile(timeInfo, 4) != version)
            {
                continue;
            }

            return t.system_time + Scale(tsc - t.tsc_timestamp, t.tsc_to_system_mul, t.tsc_shift);
        }
    }

    /// <summary>pvclock's scale: <c>((delta shifted by shift) * mul) &gt;&gt; 32</c>, in 128-bit arithmetic.</summary>
    public static ulong Scale(ulong delta, uint mul, sbyte shift)
    {
        delta = shift < 0 ? delta >> -shift : delta << shift;
        return (ulong)(((UInt128)delta * mul) >> 32);
    }

    /// <summary>
    /// The wallclock at system time zero from shared_info (wc_sec_hi:wc_sec, wc_nsec), read under
    /// wc_version. False when shared_info is not reachable (classic PV, see <see cref="XenGuest.SharedInfoAddress"/>).
    /// </summary>
    public bool TryReadBootWallclock(out ulong seconds, out uint nanoseconds)
    {
        seconds = 0;
        nanoseconds = 0;
        var si = _guest.SharedInfoAddress;
        if (si == 0)
        {
            return false;
        }

        var mem = _guest.Memory;
        while (true)
        {
            var v = (uint)mem.ReadVolatile(si + Layout.WcVersion, 4);
            if ((v & 1) != 0)
            {
                Thread.SpinWait(1);
                continue;
            }

            var sec = (uint)mem.ReadVolatile(si + Layout.WcSec, 4);
            var nsec = (uint)mem.ReadVolatile(si + Layout.WcNsec, 4);
            var hi = (uint)mem.ReadVolatile(si + Layout.WcSecHi, 4);
            if ((uint)mem.ReadVolatile(si + Layout.WcVersion, 4) == v)
            {
                seconds = ((ulong)hi << 32) | sec;
                nanoseconds = nsec;
                return true;
            }
        }
    }

    /// <summary>Now, as wallclock (boot wallclock + system time); false without shared_info.</summary>
    public bool TryGetWallclock(out DateTimeOffset now)
    {
        now = default;
        if (!TryReadBootWallclock(out var sec, out var nsec))
        {
            return false;
        }

        var ns = (UInt128)sec * 1_000_000_000 + nsec + SystemTimeNs();
        now = DateTimeOffset.UnixEpoch.AddTicks((long)(ns / 100));
        return true;
    }

    // ---------------------------------------------------------------- one-shot timers

    /// <summary>
    /// Runs <paramref name="callback"/> in interrupt context on this vCPU once system time reaches
    /// <paramref name="deadlineNs"/>. Returns an id for <see cref="CancelTimer"/>.
    /// </summary>
    public long AddTimer(ulong deadlineNs, Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var v = _guest.Current;
        var id = _guest.NextTimerId();
        using (_guest.IrqsOff())
        {
            lock (v.Timers)
            {
                var i = 0;
                while (i < v.Timers.Count && v.Timers[i].Deadline <= deadlineNs)
                {
                    i++;
                }

                v.Timers.Insert(i, (deadlineNs, id, callback));
            }

            Rearm(v);
        }

        return id;
    }

    /// <summary>Cancels a timer that has not fired; false if it already fired or was never set.</summary>
    public bool CancelTimer(long id)
    {
        var v = _guest.Current;
        using (_guest.IrqsOff())
        {
            lock (v.Timers)
            {
                var i = v.Timers.FindIndex(t => t.Id == id);
                if (i < 0)
                {
                    return false;
                }

                v.Timers.RemoveAt(i);
            }

            Rearm(v);
            return true;
        }
    }

    /// <summary>Timers pending on the current vCPU.</summary>
    public int PendingTimers
    {
        get
        {
            var v = _guest.Current;
            lock (v.Timers)
            {
                return v.Timers.Count;
            }
        }
    }

    /// <summary>set_timer_op for the earliest deadline (0 cancels the hypervisor's timer when none is left).</summary>
    private static void Rearm(VcpuContext v)
    {
        ulong next;
        lock (v.Timers)
        {
            next = v.Timers.Count > 0 ? v.Timers[0].Deadline : 0;
        }

        if (next != v.ArmedDeadline)
        {
            v.ArmedDeadline = next;
            v.Hypercalls.SetTimerOp(next);
        }
    }

    internal void BindTimer(VcpuContext v) =>
        XenGuest.Check(_guest.Events.BindVirq(Xen.VIRQ_TIMER, v.Id, _ => OnTimerVirq(), out v.TimerPort), $"EVTCHNOP_bind_virq(VIRQ_TIMER, vCPU {v.Id})");

    /// <summary>VIRQ_TIMER: run every due timer, then arm the next deadline.</summary>
    private void OnTimerVirq()
    {
        var v = _guest.Current;
        v.ArmedDeadline = 0; // the hypervisor's one-shot fired
        var now = SystemTimeNs();
        for (var i = 0; i < 100_000; i++)
        {
            Action callback;
            lock (v.Timers)
            {
                if (v.Timers.Count == 0 || v.Timers[0].Deadline > now)
                {
                    break;
                }

                callback = v.Timers[0].Callback;
                v.Timers.RemoveAt(0);
            }

            callback();
        }

        Rearm(v);
    }
}
