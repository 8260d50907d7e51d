using System.Diagnostics;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Domains;

/// <summary>
/// A virtual CPU: its <c>vcpu_info</c> (event mask and pending flags, time), registered callbacks,
/// timers, run state and the block/wake protocol. Each vCPU of a managed domain runs on its own
/// host thread; everything here that another thread touches is synchronised.
/// </summary>
public sealed class Vcpu
{
    internal static readonly int VcpuInfoSize = Marshal.SizeOf<vcpu_info>();
    internal static readonly int TimeOffset = (int)Marshal.OffsetOf<vcpu_info>(nameof(vcpu_info.time));

    private readonly Lock _wakeLock = new();
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);
    private readonly long[] _runstateTime = new long[4];
    private PinnedPage? _vcpuInfoPage;
    private int _vcpuInfoOffset;
    private bool _vcpuInfoOwnedPage;
    private int _runstate = Vcpu.RUNSTATE_offline;
    private long _runstateEntryNs;
    private int _wakePending;
    private long _singleShotGeneration;
    private long _periodicGeneration;

    // RUNSTATE_* of vcpu.h (kept local so this file does not depend on the order ABI files land).
    internal const int RUNSTATE_running = 0;
    internal const int RUNSTATE_runnable = 1;
    internal const int RUNSTATE_blocked = 2;
    internal const int RUNSTATE_offline = 3;

    internal Vcpu(Domain domain, int id)
    {
        Domain = domain;
        Id = id;
        _runstateEntryNs = (long)domain.Hypervisor.Clock.SystemTimeNs();
    }

    public int Id { get; }

    public Domain Domain { get; }

    /// <summary>Whether the vCPU is up (vCPU 0 from start; others after <c>VCPUOP_up</c>).</summary>
    public bool IsUp { get; internal set; }

    /// <summary>Nanoseconds this vCPU has spent running guest code (RUNSTATE_running), including now.</summary>
    public long CpuTimeNs
    {
        get
        {
            lock (_wakeLock)
            {
                var t = _runstateTime[RUNSTATE_running];
                if (_runstate == RUNSTATE_running)
                {
                    t += (long)Domain.Hypervisor.Clock.SystemTimeNs() - _runstateEntryNs;
                }

                return t;
            }
        }
    }

    // Callbacks registered with CALLBACKOP_register / set_callbacks.
    internal ulong EventCallback { get; set; }

    internal ulong FailsafeCallback { get; set; }

    internal ulong SyscallCallback { get; set; }

    internal ulong NmiCallback { get; set; }

    private int _callbackMasksEvents;

    /// <summary>Whether entering the callback of <paramref name="type"/> masks events (CALLBACKF_mask_events).</summary>
    internal bool CallbackMasksEvents(int type) => (Volatile.Read(ref _callbackMasksEvents) & (1 << type)) != 0;

    internal void SetCallbackMasksEvents(int type, bool masks)
    {
        if (masks)
        {
            Interlocked.Or(ref _callbackMasksEvents, 1 << type);
        }
        else
        {
            Interlocked.And(ref _callbackMasksEvents, ~(1 << type));
        }
    }

    /// <summary>Guest address of a registered <c>vcpu_runstate_info</c> area (0 if none).</summary>
    internal ulong RunstateArea { get; set; }

    /// <summary>Periodic timer period in ns (0 when stopped).</summary>
    internal ulong PeriodicPeriodNs { get; private set; }

    /// <summary>Single-shot deadline in system time ns (0 when not armed).</summary>
    internal ulong SingleShotDeadlineNs { get; private set; }

    /// <summary>Set while the vCPU waits in SCHEDOP_poll.</summary>
    internal bool IsPolling { get; set; }

    /// <summary>Set while a multicall runs on this vCPU (re-entry is refused).</summary>
    internal bool InMulticall { get; set; }

    /// <summary>Set while the engine is inside the guest's event callback.</summary>
    internal bool InUpcall { get; set; }

    internal bool HasVcpuInfo => _vcpuInfoPage is not null;

    /// <summary>This vCPU's <c>vcpu_info</c>, wherever it currently lives. Guest-shared: copy before checking.</summary>
    internal ref vcpu_info Info => ref _vcpuInfoPage!.At<vcpu_info>(_vcpuInfoOffset);

    internal PinnedPage? VcpuInfoPage => _vcpuInfoPage;

    internal int VcpuInfoOffset => _vcpuInfoOffset;

    /// <summary>Points this vCPU's vcpu_info at shared_info's legacy slot.</summary>
    internal void UseLegacyVcpuInfo(PinnedPage sharedInfo, int offset)
    {
        _vcpuInfoPage = sharedInfo;
        _vcpuInfoOffset = offset;
        _vcpuInfoOwnedPage = false;
    }

    /// <summary>Moves vcpu_info to a guest page (VCPUOP_register_vcpu_info), copying the current contents as Xen does.</summary>
    internal void MoveVcpuInfo(PinnedPage page, int offset)
    {
        var old = _vcpuInfoPage;
        var current = old is null ? default : old.At<vcpu_info>(_vcpuInfoOffset);
        page.At<vcpu_info>(offset) = current;
        _vcpuInfoPage = page;
        _vcpuInfoOffset = offset;
        if (_vcpuInfoOwnedPage)
        {
            old?.Dispose();
        }

        _vcpuInfoOwnedPage = true;
    }

    /// <summary>True when an upcall should be delivered now: pending, unmasked, a callback registered, not already inside one.</summary>
    internal bool UpcallDeliverable()
    {
        if (_vcpuInfoPage is null || EventCallback == 0 || InUpcall)
        {
            return false;
        }

        ref var info = ref Info;
        return Volatile.Read(ref info.evtchn_upcall_pending) != 0 && Volatile.Read(ref info.evtchn_upcall_mask) == 0;
    }

    /// <summary>Marks an event pending for this vCPU and wakes it (Xen's vcpu_mark_events_pending + kick).</summary>
    internal void MarkEventsPending()
    {
        if (_vcpuInfoPage is not null)
        {
            Volatile.Write(ref Info.evtchn_upcall_pending, 1);
        }

        Kick();
    }

    /// <summary>Wakes the vCPU if it is blocked; a wake before the block is remembered.</summary>
    internal void Kick()
    {
        if (Interlocked.Exchange(ref _wakePending, 1) == 0)
        {
            _wake.Release();
        }
    }

    /// <summary>
    /// SCHEDOP_block: unmask events (Xen's vcpu_block_enable_events), then sleep until an event is
    /// pending, a timer fires, or the host needs the vCPU (pause, shutdown, destroy).
    /// </summary>
    internal void BlockEnablingEvents(Func<bool> stop)
    {
        if (_vcpuInfoPage is not null)
        {
            Volatile.Write(ref Info.evtchn_upcall_mask, 0);
        }

        SetRunstate(RUNSTATE_blocked);
        try
        {
            while (!stop())
            {
                if (_vcpuInfoPage is not null && Volatile.Read(ref Info.evtchn_upcall_pending) != 0)
                {
                    return;
                }

                _wake.Wait();
                Interlocked.Exchange(ref _wakePending, 0);
                if (TimerFired())
                {
                    return;
                }
            }
        }
        finally
        {
            SetRunstate(RUNSTATE_running);
        }
    }

    /// <summary>Sleeps until kicked (SCHEDOP_poll's wait), the deadline passes, or <paramref name="stop"/> says so.</summary>
    internal void WaitForKick(ulong deadlineNs, Func<bool> stop, Func<bool> done)
    {
        SetRunstate(RUNSTATE_blocked);
        try
        {
            var clock = Domain.Hypervisor.Clock;
            while (!stop() && !done())
            {
                if (deadlineNs != 0)
                {
                    var now = clock.SystemTimeNs();
                    if (now >= deadlineNs)
                    {
                        return;
                    }

                    _wake.Wait(TimeSpan.FromTicks((long)Math.Min((deadlineNs - now) / 100 + 1, (ulong)TimeSpan.FromSeconds(1).Ticks)));
                }
                else
                {
                    _wake.Wait();
                }

                Interlocked.Exchange(ref _wakePending, 0);
            }
        }
        finally
        {
            SetRunstate(RUNSTATE_running);
        }
    }

    private int _timerFired;

    private bool TimerFired() => Interlocked.Exchange(ref _timerFired, 0) != 0;

    /// <summary>Arms (or with 0, cancels) the single-shot timer at a system time deadline.</summary>
    internal void SetSingleShotTimer(ulong deadlineNs)
    {
        var generation = Interlocked.Increment(ref _singleShotGeneration);
        SingleShotDeadlineNs = deadlineNs;
        if (deadlineNs == 0)
        {
            return;
        }

        Domain.Hypervisor.Timers.Arm(deadlineNs, () =>
        {
            SingleShotDeadlineNs = 0;
            OnTimer();
        }, () => Interlocked.Read(ref _singleShotGeneration) == generation);
    }

    /// <summary>Starts (or with 0, stops) the periodic timer.</summary>
    internal void SetPeriodicTimer(ulong periodNs)
    {
        var generation = Interlocked.Increment(ref _periodicGeneration);
        PeriodicPeriodNs = periodNs;
        if (periodNs == 0)
        {
            return;
        }

        var clock = Domain.Hypervisor.Clock;
        ArmPeriodic(clock.SystemTimeNs() + periodNs, periodNs, generation);
    }

    private void ArmPeriodic(ulong deadline, ulong period, long generation)
    {
        Domain.Hypervisor.Timers.Arm(deadline, () =>
        {
            OnTimer();
            if (Interlocked.Read(ref _periodicGeneration) == generation && Domain.IsAlive)
            {
                ArmPeriodic(deadline + period, period, generation);
            }
        }, () => Interlocked.Read(ref _periodicGeneration) == generation);
    }

    /// <summary>A timer expired: raise VIRQ_TIMER if the domain bound it, and wake the vCPU.</summary>
    private void OnTimer()
    {
        Interlocked.Exchange(ref _timerFired, 1);
        Domain.Meter.CountTimerInterrupt();
        Domain.RaiseVirq(this, Xen.VIRQ_TIMER);
        Kick();
    }

    /// <summary>Publishes fresh <c>vcpu_time_info</c> with the version protocol (odd while updating).</summary>
    internal void UpdateTimeInfo()
    {
        if (_vcpuInfoPage is null)
        {
            return;
        }

        var clock = Domain.Hypervisor.Clock;
        ref var t = ref Info.time;
        var version = Volatile.Read(ref t.version) & ~1u;
        Volatile.Write(ref t.version, version + 1); // odd: an update is in progress
        var tsc = Time.Clock.ReadTsc();
        t.tsc_timestamp = tsc;
        t.system_time = clock.TscToNs(tsc - clock.TscAtBoot);
        t.tsc_to_system_mul = clock.TscToSystemMul;
        t.tsc_shift = clock.TscShift;
        t.flags = 0;
        Volatile.Write(ref t.version, version + 2); // even: stable
    }

    /// <summary>Moves to a run state, accumulating the time spent in the last one (vcpu_runstate_info).</summary>
    internal void SetRunstate(int state)
    {
        Debug.Assert(state is >= 0 and <= 3);
        lock (_wakeLock)
        {
            var now = (long)Domain.Hypervisor.Clock.SystemTimeNs();
            _runstateTime[_runstate] += now - _runstateEntryNs;
            _runstateEntryNs = now;
            _runstate = state;
        }
    }

    /// <summary>A snapshot of <c>vcpu_runstate_info</c>.</summary>
    internal (int State, long EntryTime, long Running, long Runnable, long Blocked, long Offline) Runstate()
    {
        lock (_wakeLock)
        {
            return (_runstate, _runstateEntryNs, _runstateTime[0], _runstateTime[1], _runstateTime[2], _runstateTime[3]);
        }
    }

    /// <summary>Lets go of everything the vCPU holds (timers die with their generation).</summary>
    internal void Teardown()
    {
        Interlocked.Increment(ref _singleShotGeneration);
        Interlocked.Increment(ref _periodicGeneration);
        if (_vcpuInfoOwnedPage)
        {
            _vcpuInfoPage?.Dispose();
        }

        _vcpuInfoPage = null;
        Kick();
    }
}
