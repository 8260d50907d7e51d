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
    private long _periodicLastEventNs;
    private readonly Lock _timeLock = new();
    private volatile bool _down = true;
    private int _nmiPending;

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

    /// <summary>Classic PV state (page-table bases, kernel/user mode, TLB flush requests); unused by managed vCPUs.</summary>
    public PvVcpuState Pv { get; } = new();

    /// <summary>Whether the vCPU is up (vCPU 0 from start; others after <c>VCPUOP_up</c>): Xen's <c>!VPF_down</c>.</summary>
    public bool IsUp => !_down;

    /// <summary>Xen's <c>is_initialised</c>: vCPU 0 by the domain builder, the others by <c>VCPUOP_initialise</c>.</summary>
    internal bool IsInitialised { get; set; }

    /// <summary>Where a secondary vCPU enters (the rip and rsp of its <c>VCPUOP_initialise</c> context).</summary>
    internal (ulong Rip, ulong Rsp) InitialContext { get; set; }

    /// <summary>A classic PV domain's whole VCPUOP_initialise context, for an engine that runs it (the PV engine); null otherwise.</summary>
    internal System.Runtime.CompilerServices.StrongBox<vcpu_guest_context>? InitialGuestContext { get; set; }

    /// <summary>Whether a host thread currently runs this vCPU (it may be parked while down).</summary>
    internal bool HasThread { get; set; }

    /// <summary>Sets or clears Xen's VPF_down; a vCPU going up is kicked out of its park.</summary>
    internal void SetDown(bool down)
    {
        _down = down;
        Kick();
    }

    /// <summary>VCPUOP_send_nmi: latches an NMI (Xen's arch.nmi_pending); true if one was already pending.</summary>
    internal bool RaiseNmi() => Interlocked.Exchange(ref _nmiPending, 1) != 0;

    internal bool NmiPending => Volatile.Read(ref _nmiPending) != 0;

    /// <summary>Guest address of a registered secondary <c>vcpu_time_info</c> (VCPUOP_register_vcpu_time_memory_area; 0 if none).</summary>
    internal ulong TimeArea { get; set; }

    /// <summary>Whether the guest has placed vcpu_info in its own page (VCPUOP_register_vcpu_info succeeds once).</summary>
    internal bool VcpuInfoRegistered => _vcpuInfoOwnedPage;

    /// <summary>
    /// Where the vCPU is now, as <c>vcpu_runstate_info.state</c> says: one of vcpu.h's
    /// <see cref="VcpuOp.RUNSTATE_running"/>, <see cref="VcpuOp.RUNSTATE_runnable"/>,
    /// <see cref="VcpuOp.RUNSTATE_blocked"/> (in <c>SCHEDOP_block</c> or <c>_poll</c>) or
    /// <see cref="VcpuOp.RUNSTATE_offline"/> (no thread, down, or its domain paused).
    /// </summary>
    public int CurrentRunstate
    {
        get
        {
            lock (_wakeLock)
            {
                return _runstate;
            }
        }
    }

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
    internal ulong RunstateArea { get; private set; }

    /// <summary>Periodic timer period in ns (0 when stopped).</summary>
    internal ulong PeriodicPeriodNs { get; private set; }

    /// <summary>Single-shot deadline in system time ns (0 when not armed).</summary>
    internal ulong SingleShotDeadlineNs { get; private set; }

    /// <summary>
    /// Set while the vCPU waits in SCHEDOP_poll. The poller sets it and then checks its ports; a
    /// sender sets a port pending and then reads this: each side's store must be visible before its
    /// load (a full fence), or both could miss the other and the poller sleep through its wake-up.
    /// </summary>
    internal bool IsPolling
    {
        get => Volatile.Read(ref _polling);
        set
        {
            Volatile.Write(ref _polling, value);
            Interlocked.MemoryBarrier();
        }
    }

    private bool _polling;

    /// <summary>Set while a multicall runs on this vCPU (re-entry is refused).</summary>
    internal bool InMulticall { get; set; }

    /// <summary>Set while the engine is inside the guest's event callback.</summary>
    internal bool InUpcall { get; set; }

    internal bool HasVcpuInfo => _vcpuInfoPage is not null;

    /// <summary>This vCPU's <c>vcpu_info</c>, wherever it currently lives. Guest-shared: copy before checking.</summary>
    internal ref vcpu_info Info => ref _vcpuInfoPage!.At<vcpu_info>(_vcpuInfoOffset);

    /// <summary>Points this vCPU's vcpu_info at shared_info's legacy slot.</summary>
    internal void UseLegacyVcpuInfo(PinnedPage sharedInfo, int offset)
    {
        _vcpuInfoPage = sharedInfo;
        _vcpuInfoOffset = offset;
        _vcpuInfoOwnedPage = false;
    }

    /// <summary>
    /// Moves vcpu_info to a guest page (VCPUOP_register_vcpu_info), copying the current contents as
    /// Xen's map_vcpu_info does (a vCPU with no vcpu_info yet starts zeroed with events masked), then
    /// marks every selector and the upcall pending so that no event is lost in the move.
    /// </summary>
    internal void MoveVcpuInfo(PinnedPage page, int offset)
    {
        lock (_timeLock)
        {
            var old = _vcpuInfoPage;
            var current = old is null ? new vcpu_info { evtchn_upcall_mask = 1 } : old.At<vcpu_info>(_vcpuInfoOffset);
            page.At<vcpu_info>(offset) = current;
            _vcpuInfoPage = page;
            _vcpuInfoOffset = offset;
            if (_vcpuInfoOwnedPage)
            {
                old?.Dispose();
            }

            _vcpuInfoOwnedPage = true;
            Interlocked.MemoryBarrier(); // the new pointer before the pending flags (Xen's smp_wmb)
            Volatile.Write(ref Info.evtchn_pending_sel, ulong.MaxValue);
        }

        MarkEventsPending();
    }

    /// <summary>True when an upcall should be delivered now: pending, unmasked, a callback registered, not already inside one.</summary>
    internal bool UpcallDeliverable()
    {
        // The page is read once: a teardown racing this check cannot turn it into a null dereference.
        var page = _vcpuInfoPage;
        if (page is null || EventCallback == 0 || InUpcall)
        {
            return false;
        }

        ref var info = ref page.At<vcpu_info>(_vcpuInfoOffset);
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
    /// pending (a timer is one once VIRQ_TIMER is bound) or the host needs the vCPU (pause,
    /// shutdown, destroy).
    /// </summary>
    internal void BlockEnablingEvents()
    {
        if (_vcpuInfoPage is not null)
        {
            Volatile.Write(ref Info.evtchn_upcall_mask, 0);
        }

        SetRunstate(RUNSTATE_blocked);
        try
        {
            while (!BlockMustEnd())
            {
                if (_vcpuInfoPage is not null && Volatile.Read(ref Info.evtchn_upcall_pending) != 0)
                {
                    return;
                }

                _wake.Wait();
                Interlocked.Exchange(ref _wakePending, 0);
            }
        }
        finally
        {
            SetRunstate(RUNSTATE_running);
        }
    }

    /// <summary>The host needs a blocked vCPU back: its domain is ending or paused, or the vCPU went down.</summary>
    private bool BlockMustEnd() => !Domain.IsAlive || Domain.State == DomainState.Paused || !IsUp;

    /// <summary>
    /// SCHEDOP_poll's wait: sleeps until an upcall is deliverable or one of <paramref name="ports"/>
    /// is pending (re-checked on every kick), the deadline passes, or the domain ends or the vCPU goes down.
    /// </summary>
    internal void WaitForKick(ulong deadlineNs, ReadOnlySpan<uint> ports)
    {
        SetRunstate(RUNSTATE_blocked);
        try
        {
            var clock = Domain.Hypervisor.Clock;
            while (Domain.IsAlive && IsUp && !UpcallDeliverable() && !Domain.AnyPortPending(ports))
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

    /// <summary>
    /// Parks the vCPU thread while the vCPU is down (VCPUOP_down): it is offline until VCPUOP_up,
    /// then resumes where it stopped, with fresh time info. Returns early when <paramref name="stop"/> says so.
    /// </summary>
    internal void WaitWhileDown(Func<bool> stop)
    {
        if (!_down)
        {
            return;
        }

        SetRunstate(RUNSTATE_offline);
        try
        {
            while (_down && !stop())
            {
                _wake.Wait();
                Interlocked.Exchange(ref _wakePending, 0);
            }
        }
        finally
        {
            SetRunstate(RUNSTATE_running);
            UpdateTimeInfo();
        }
    }


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

    /// <summary>
    /// VCPUOP_set_singleshot_timer with a deadline already past: Xen stops the timer and sends the
    /// timer event at once (send_timer_event) rather than arming it.
    /// </summary>
    internal void FireSingleShotNow()
    {
        Interlocked.Increment(ref _singleShotGeneration);
        SingleShotDeadlineNs = 0;
        OnTimer();
    }

    /// <summary>
    /// Starts (or with 0, stops) the periodic timer, as Xen's vcpu_set_periodic_timer: when a period
    /// has already passed since the last periodic event the event is sent now; the next one is due a
    /// period after the last.
    /// </summary>
    internal void SetPeriodicTimer(ulong periodNs)
    {
        var generation = Interlocked.Increment(ref _periodicGeneration);
        PeriodicPeriodNs = periodNs;
        if (periodNs == 0)
        {
            return;
        }

        PeriodicWork(periodNs, generation);
    }

    /// <summary>Xen's vcpu_periodic_timer_work: fire if due, then arm for last event + period.</summary>
    private void PeriodicWork(ulong period, long generation)
    {
        if (Interlocked.Read(ref _periodicGeneration) != generation || !Domain.IsAlive)
        {
            return;
        }

        var now = Domain.Hypervisor.Clock.SystemTimeNs();
        var next = (ulong)Interlocked.Read(ref _periodicLastEventNs) + period;
        if (now >= next)
        {
            OnTimer();
            Interlocked.Exchange(ref _periodicLastEventNs, (long)now);
            next = now + period;
        }

        Domain.Hypervisor.Timers.Arm(next, () => PeriodicWork(period, generation), () => Interlocked.Read(ref _periodicGeneration) == generation);
    }

    /// <summary>A timer expired: raise VIRQ_TIMER if the domain bound it, and wake the vCPU.</summary>
    private void OnTimer()
    {
        // Xen's send_timer_event: the timer is VIRQ_TIMER. A vCPU that did not bind it is not
        // woken (a blocked guest with no timer VIRQ sleeps on, as on Xen).
        Domain.Meter.CountTimerInterrupt();
        Domain.RaiseVirq(this, Xen.VIRQ_TIMER);
    }

    /// <summary>Publishes fresh <c>vcpu_time_info</c> with the version protocol (odd while updating).</summary>
    /// <summary>
    /// Publishes fresh <c>vcpu_time_info</c> with the version protocol (odd while updating), and the
    /// same values to a registered secondary area (Xen's update_secondary_system_time). The virtual
    /// TSC is one monotonic counter for every vCPU, so the values carry XEN_PVCLOCK_TSC_STABLE_BIT
    /// as Xen's do when its clocksource is the TSC.
    /// </summary>
    internal void UpdateTimeInfo()
    {
        lock (_timeLock)
        {
            if (_vcpuInfoPage is null)
            {
                return;
            }

            var clock = Domain.Hypervisor.Clock;
            ref var t = ref Info.time;
            var version = (Volatile.Read(ref t.version) + 1) | 1; // Xen's version_update_begin
            Volatile.Write(ref t.version, version); // odd: an update is in progress
            Interlocked.MemoryBarrier(); // the odd version before any field (smp_wmb)
            var tsc = Time.Clock.ReadTsc();
            var fresh = new vcpu_time_info
            {
                version = version,
                tsc_timestamp = tsc,
                system_time = clock.TscToNs(tsc - clock.TscAtBoot),
                tsc_to_system_mul = clock.TscToSystemMul,
                tsc_shift = clock.TscShift,
                flags = Xen.XEN_PVCLOCK_TSC_STABLE_BIT,
            };
            t = fresh;
            Volatile.Write(ref t.version, version + 1); // even: stable (release: the fields first)
            UpdateSecondaryTime(fresh);
        }
    }

    /// <summary>Copies time info to the secondary area: odd version first, then the fields, then the even version.</summary>
    private void UpdateSecondaryTime(vcpu_time_info u)
    {
        var area = TimeArea;
        if (area == 0)
        {
            return;
        }

        // A paged PV vCPU registered a virtual address (Xen writes it through the guest's tables).
        var memory = Domain.Memory;
        var paged = Pv.IsPaged;
        if (!(paged ? Memory.Pv.PvMemory.TryCopyToGuest(this, area, u.version) : memory.TryWrite(area, u.version)))
        {
            return;
        }

        Interlocked.MemoryBarrier();
        _ = paged ? Memory.Pv.PvMemory.TryCopyToGuest(this, area, in u) : memory.TryWrite(area, in u);
        Interlocked.MemoryBarrier();
        _ = paged ? Memory.Pv.PvMemory.TryCopyToGuest(this, area, u.version + 1) : memory.TryWrite(area, u.version + 1);
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
            PublishRunstate();
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

    /// <summary>
    /// <c>vcpu_runstate_info</c> as Xen's vcpu_runstate_get gives it: the time in the current state
    /// counts up to now (<paramref name="upToNow"/>), or as recorded at the last change.
    /// </summary>
    internal unsafe vcpu_runstate_info RunstateInfo(bool upToNow)
    {
        lock (_wakeLock)
        {
            var info = new vcpu_runstate_info { state = _runstate, state_entry_time = (ulong)_runstateEntryNs };
            for (var i = 0; i < 4; i++)
            {
                info.time[i] = (ulong)_runstateTime[i];
            }

            if (upToNow)
            {
                var delta = (long)Domain.Hypervisor.Clock.SystemTimeNs() - _runstateEntryNs;
                if (delta > 0)
                {
                    info.time[_runstate] += (ulong)delta;
                }
            }

            return info;
        }
    }

    /// <summary>Registers (0: unregisters) the runstate area and copies the runstate there now.</summary>
    internal void SetRunstateArea(ulong address)
    {
        lock (_wakeLock)
        {
            RunstateArea = address;
            PublishRunstate();
        }
    }

    /// <summary>
    /// Xen's update_runstate_area: copies the runstate to the registered area. With
    /// VMASST_TYPE_runstate_update_flag the guest sees XEN_RUNSTATE_UPDATE set in state_entry_time
    /// before any other field changes, and cleared only after all have. Faults are ignored.
    /// Caller holds <see cref="_wakeLock"/>.
    /// </summary>
    private void PublishRunstate()
    {
        var area = RunstateArea;
        if (area == 0 || Domain.State == DomainState.Dead)
        {
            return;
        }

        var info = RunstateInfo(upToNow: false);
        var memory = Domain.Memory;
        var entryAddress = area + (ulong)Marshal.OffsetOf<vcpu_runstate_info>(nameof(vcpu_runstate_info.state_entry_time));
        var flagged = (Domain.VmAssist & (1UL << Xen.VMASST_TYPE_runstate_update_flag)) != 0;
        if (flagged)
        {
            info.state_entry_time |= VcpuOp.XEN_RUNSTATE_UPDATE;
            WriteWord(this, memory, entryAddress, info.state_entry_time);
            Interlocked.MemoryBarrier();
        }

        // A paged PV vCPU registered a virtual address (Xen writes it through the guest's tables).
        _ = Pv.IsPaged ? Memory.Pv.PvMemory.TryCopyToGuest(this, area, in info) : memory.TryWrite(area, in info);
        if (flagged)
        {
            info.state_entry_time &= ~VcpuOp.XEN_RUNSTATE_UPDATE;
            Interlocked.MemoryBarrier();
            WriteWord(this, memory, entryAddress, info.state_entry_time);
        }

        static void WriteWord(Vcpu vcpu, GuestMemory memory, ulong address, ulong value)
        {
            if (vcpu.Pv.IsPaged)
            {
                Memory.Pv.PvMemory.TryWriteGuestWord(vcpu, address, value);
            }
            else if (!memory.TryWriteVolatile(address, 8, value))
            {
                memory.TryWrite(address, value); // unaligned: a plain copy, as __raw_copy_to_guest
            }
        }
    }

    /// <summary>Lets go of everything the vCPU holds (timers die with their generation).</summary>
    internal void Teardown()
    {
        Interlocked.Increment(ref _singleShotGeneration);
        Interlocked.Increment(ref _periodicGeneration);
        lock (_timeLock)
        {
            if (_vcpuInfoOwnedPage)
            {
                _vcpuInfoPage?.Dispose();
            }

            _vcpuInfoPage = null;
        }

        Kick();
    }
}
