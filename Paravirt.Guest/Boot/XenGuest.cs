using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>Which event channel ABI the stub drives.</summary>
public enum EventAbi
{
    /// <summary>The 2-level ABI: pending and mask bitmaps in shared_info, a selector word in vcpu_info (needs shared_info mapped, so translated guests only).</summary>
    TwoLevel,

    /// <summary>The FIFO ABI (EVTCHNOP_init_control): per-vCPU control blocks and event words in guest pages.</summary>
    Fifo,
}

/// <summary>How <see cref="XenGuest.Boot"/> sets the guest up.</summary>
public sealed record GuestOptions
{
    /// <summary>The event ABI; a classic PV guest always gets <see cref="EventAbi.Fifo"/> (its shared_info is not reachable unpaged).</summary>
    public EventAbi EventAbi { get; init; } = EventAbi.TwoLevel;

    /// <summary>Most vCPUs the stub prepares per-vCPU areas for (vcpu_info slots share one page: at most 64).</summary>
    public int MaxVcpus { get; init; } = 8;
}

/// <summary>
/// A booted PV guest kernel: what a ported kernel's early boot sets up before anything else runs.
/// <list type="number">
/// <item>start_info read and its magic checked (<see cref="BootInfo"/>).</item>
/// <item>A page allocator over the free pages above <c>pt_base</c> (<see cref="PageAllocator"/>).</item>
/// <item>A hypercall argument area per vCPU (<see cref="Hypercalls"/>).</item>
/// <item>XENVER_get_features read.</item>
/// <item>shared_info placed with XENMEM_add_to_physmap(XENMAPSPACE_shared_info) when translated.</item>
/// <item>vcpu_info moved into a guest page with VCPUOP_register_vcpu_info (as Linux's xen_vcpu_setup).</item>
/// <item>Event channels (2-level or FIFO) with every port masked, CALLBACKOP_register for the event
/// and failsafe callbacks, VIRQ_TIMER bound for the one-shot timers, then events enabled.</item>
/// </list>
/// Interrupt context: the hypervisor delivers an upcall on the way out of any hypercall made with
/// events enabled; <see cref="ManagedKernel.EventCallback"/> lands in <see cref="HandleUpcall"/>,
/// which runs the handlers of pending ports (and due timers) with events masked. Handlers must not
/// block; they hand longer work to <see cref="Defer"/>, which runs in <see cref="WaitFor"/>.
/// </summary>
public sealed class XenGuest
{
    /// <summary>The guest address registered as the event callback (CALLBACKTYPE_event): a managed kernel's "hypervisor_callback" symbol.</summary>
    public const ulong EventCallbackAddress = 0xFFFF_FFFF_8000_1000;

    /// <summary>The address registered as the failsafe callback.</summary>
    public const ulong FailsafeCallbackAddress = 0xFFFF_FFFF_8000_2000;

    private const int ArgPages = 4;

    [ThreadStatic]
    private static VcpuContext? t_current;

    [ThreadStatic]
    private static XenGuest? t_guest;

    private readonly VcpuContext?[] _vcpus;
    private readonly GuestPage _vcpuInfoPage;
    private readonly Queue<Action> _deferred = new();
    private readonly Lock _deferredLock = new();
    private readonly Lock _lock = new();
    private long _nextTimerId;
    private bool _runningDeferred;

    private XenGuest(IGuestCpu cpu, BootInfo boot, GuestOptions options)
    {
        Info = boot;
        Options = options;
        Pages = new PageAllocator(cpu.Memory, boot);
        Memory = cpu.Memory;
        _vcpus = new VcpuContext?[Math.Clamp(options.MaxVcpus, 1, 64)];
        _vcpuInfoPage = Pages.Allocate();
        var v0 = Prepare(0);
        v0.Attach(cpu);
        t_current = v0;
        t_guest = this;
        Clock = new GuestClock(this);
    }

    /// <summary>start_info, checked.</summary>
    public BootInfo Info { get; }

    /// <summary>The options the guest booted with.</summary>
    public GuestOptions Options { get; }

    /// <summary>The guest's memory (as every vCPU sees it).</summary>
    public IGuestPhysicalMemory Memory { get; }

    /// <summary>Free-page allocator (pfn / address / frame number for grants and rings).</summary>
    public PageAllocator Pages { get; }

    /// <summary>True for an auto-translated guest (GFNs); false for classic PV (MFNs).</summary>
    public bool IsAutoTranslated => Info.IsAutoTranslated;

    /// <summary>XENVER_get_features submap 0 (<c>XENFEAT_*</c> bits).</summary>
    public uint Features { get; private set; }

    /// <summary>
    /// Guest address of shared_info, or 0 when the guest cannot reach it: a classic PV kernel maps
    /// the machine frame in start_info.shared_info with its page tables, and a managed guest runs
    /// unpaged. Without it there is no 2-level event ABI and no wallclock.
    /// </summary>
    public ulong SharedInfoAddress { get; private set; }

    /// <summary>Event channels and their per-port handlers.</summary>
    public EventChannels Events { get; private set; } = null!;

    /// <summary>System time, wallclock and one-shot timers.</summary>
    public GuestClock Clock { get; }

    /// <summary>
    /// The guest whose vCPU this thread is (a per-CPU pointer): set from the first instant of
    /// <see cref="Boot"/>, so a kernel's event callback can reach the guest even for an upcall
    /// that arrives before Boot returns.
    /// </summary>
    public static XenGuest? OnThisVcpu => t_guest;

    /// <summary>The vCPU this code runs on.</summary>
    public VcpuContext Current => t_current is { } c && (uint)c.Id < (uint)_vcpus.Length && _vcpus[c.Id] == c
        ? c
        : throw new InvalidOperationException("this thread is not one of this guest's vCPUs");

    /// <summary>The hypercall wrappers of the current vCPU.</summary>
    public Hypercalls Hypercalls => Current.Hypercalls;

    /// <summary>A vCPU's context, or null if not prepared.</summary>
    public VcpuContext? Vcpu(int id) => (uint)id < (uint)_vcpus.Length ? _vcpus[id] : null;

    /// <summary>Boots the guest on vCPU 0 from start_info at <paramref name="startInfo"/> (what <c>%rsi</c> held at entry).</summary>
    /// <exception cref="InvalidOperationException">start_info is not a 64-bit PV start of day, or a boot hypercall failed (the message names it and its errno).</exception>
    public static XenGuest Boot(IGuestCpu cpu, ulong startInfo, GuestOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        var boot = BootInfo.Read(cpu.Memory, startInfo);
        var g = new XenGuest(cpu, boot, options ?? new GuestOptions());
        g.BootVcpu0();
        return g;
    }

    private VcpuContext Prepare(int id)
    {
        lock (_lock)
        {
            if (_vcpus[id] is { } existing)
            {
                return existing;
            }

            var args = Pages.AllocateContiguous(ArgPages);
            var ctx = new VcpuContext(id, _vcpuInfoPage.Address + (ulong)(id * Layout.VcpuInfoSize), new ArgStack(Memory, args.Address, ArgPages * PageAllocator.PageSize));
            _vcpus[id] = ctx;
            return ctx;
        }
    }

    private void BootVcpu0()
    {
        var hc = Hypercalls;
        Check(hc.GetFeatures(0, out var features), "XENVER_get_features");
        Features = features;
        var translated = (features & (1u << Core.Abi.Features.XENFEAT_auto_translated_physmap)) != 0;
        if (translated != IsAutoTranslated)
        {
            throw new InvalidOperationException($"start_info says {(IsAutoTranslated ? "translated" : "classic PV")} but XENFEAT_auto_translated_physmap is {(translated ? "set" : "clear")}");
        }

        if (IsAutoTranslated)
        {
            var slot = Pages.AllocatePhysmapSlot();
            Check(hc.AddToPhysmap(XenMem.XENMAPSPACE_shared_info, 0, slot), "XENMEM_add_to_physmap(XENMAPSPACE_shared_info)");
            SharedInfoAddress = slot << PageAllocator.PageShift;
        }

        RegisterVcpuInfo(Current);
        var abi = IsAutoTranslated ? Options.EventAbi : EventAbi.Fifo;
        Events = new EventChannels(this, abi);
        Events.InitVcpu(Current);
        RegisterCallbacks(hc);
        Clock.BindTimer(Current);
        EnableIrqs();
    }

    private void RegisterVcpuInfo(VcpuContext v)
    {
        Check(Hypercalls.VcpuRegisterVcpuInfo(v.Id, _vcpuInfoPage.Frame, (uint)(v.Id * Layout.VcpuInfoSize)), $"VCPUOP_register_vcpu_info(vCPU {v.Id})");
        Memory.WriteVolatile(v.VcpuInfoAddress + Layout.UpcallMask, 1, 1);
    }

    private static void RegisterCallbacks(Hypercalls hc)
    {
        Check(hc.RegisterCallback(Callback.CALLBACKTYPE_event, EventCallbackAddress, (ushort)Callback.CALLBACKF_mask_events), "CALLBACKOP_register(event)");
        Check(hc.RegisterCallback(Callback.CALLBACKTYPE_failsafe, FailsafeCallbackAddress, (ushort)Callback.CALLBACKF_mask_events), "CALLBACKOP_register(failsafe)");
    }

    internal static void Check(long rc, string what)
    {
        if (rc < 0)
        {
            throw new InvalidOperationException($"{what} failed: {ErrnoName(rc)}");
        }
    }

    /// <summary>"-EINVAL (-22)" for a negative Xen errno result.</summary>
    public static string ErrnoName(long rc) => rc >= 0 ? rc.ToString(System.Globalization.CultureInfo.InvariantCulture)
        : Enum.IsDefined(typeof(Errno), (int)-rc) ? $"-{(Errno)(int)-rc} ({rc})" : $"{rc}";

    // ---------------------------------------------------------------- secondary vCPUs

    /// <summary>
    /// Brings vCPU <paramref name="id"/> up running <paramref name="entry"/>: its areas are
    /// prepared, its vcpu_info registered while it is down, then VCPUOP_initialise (the context's
    /// rip names the entry) and VCPUOP_up. The vCPU registers its callbacks and timer itself when
    /// it enters (<see cref="EnterSecondary"/>). Returns the hypercall's result.
    /// </summary>
    public long StartVcpu(int id, Action<VcpuContext> entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (id <= 0 || id >= _vcpus.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, $"secondary vCPUs are 1..{_vcpus.Length - 1}");
        }

        var v = Prepare(id);
        v.Entry = entry;
        var hc = Hypercalls;
        var rc = hc.VcpuRegisterVcpuInfo(id, _vcpuInfoPage.Frame, (uint)(id * Layout.VcpuInfoSize));
        if (rc < 0 && rc != -(long)Errno.EINVAL)
        {
            return rc; // -EINVAL: already registered (a restart)
        }

        Memory.WriteVolatile(v.VcpuInfoAddress + Layout.UpcallMask, 1, 1);
        var ctx = default(vcpu_guest_context);
        ctx.flags = ArchX86.VGCF_in_kernel;
        ctx.user_regs.rip = SecondaryEntryAddress + (ulong)id;
        ctx.user_regs.rsp = 0;
        ctx.event_callback_eip = EventCallbackAddress;
        ctx.failsafe_callback_eip = FailsafeCallbackAddress;
        rc = hc.VcpuInitialise(id, ctx);
        if (rc < 0 && rc != -(long)Errno.EEXIST)
        {
            return rc;
        }

        return hc.VcpuUp(id);
    }

    /// <summary>The rip given to secondary vCPUs: this plus the vCPU id.</summary>
    public const ulong SecondaryEntryAddress = 0xFFFF_FFFF_8000_3000;

    /// <summary>A secondary vCPU's entry (<see cref="ManagedKernel.SecondaryEntry"/>): attach, callbacks, events, timer, then its entry delegate.</summary>
    public void EnterSecondary(IGuestCpu cpu)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        var v = Vcpu(cpu.VcpuId) ?? throw new InvalidOperationException($"vCPU {cpu.VcpuId} entered but was never prepared");
        v.Attach(cpu);
        t_current = v;
        t_guest = this;
        RegisterCallbacks(v.Hypercalls);
        Events.InitVcpu(v);
        Clock.BindTimer(v);
        EnableIrqs();
        v.Entry?.Invoke(v);
    }

    // ---------------------------------------------------------------- pv-ops: the virtual IF flag

    /// <summary>True when events are masked on this vCPU (evtchn_upcall_mask set: the PV <c>cli</c> state).</summary>
    public bool IrqsDisabled => Memory.ReadVolatile(Current.VcpuInfoAddress + Layout.UpcallMask, 1) != 0;

    /// <summary>The PV <c>cli</c>: set evtchn_upcall_mask. Returns whether events were already masked (the saved flags).</summary>
    public bool DisableIrqs()
    {
        var at = Current.VcpuInfoAddress + Layout.UpcallMask;
        var was = Memory.ReadVolatile(at, 1) != 0;
        Memory.WriteVolatile(at, 1, 1);
        return was;
    }

    /// <summary>
    /// The PV <c>sti</c>: clear evtchn_upcall_mask, then re-check evtchn_upcall_pending; if an
    /// event arrived while masked, force the upcall with a cheap hypercall (XENVER_version, as
    /// Linux's xen_force_evtchn_callback): Xen delivers pending upcalls on the way out of it.
    /// </summary>
    public void EnableIrqs()
    {
        var v = Current;
        Memory.WriteVolatile(v.VcpuInfoAddress + Layout.UpcallMask, 1, 0);
        if (Memory.ReadVolatile(v.VcpuInfoAddress + Layout.UpcallPending, 1) != 0)
        {
            v.Hypercalls.XenVersion();
        }
    }

    /// <summary>Restores the state <see cref="DisableIrqs"/> returned.</summary>
    public void RestoreIrqs(bool wasDisabled)
    {
        if (!wasDisabled)
        {
            EnableIrqs();
        }
    }

    /// <summary>Masks events until the returned scope is disposed (local_irq_save / local_irq_restore).</summary>
    public IrqScope IrqsOff() => new(this, DisableIrqs());

    /// <summary>
    /// The PV <c>hlt</c>, race-free: mask events, check evtchn_upcall_pending, and only if nothing
    /// is pending SCHEDOP_block, which re-enables events atomically with going to sleep, so an
    /// event that arrives between the check and the block still wakes the vCPU. Returns with events
    /// enabled, after any upcall ran.
    /// </summary>
    public void Halt()
    {
        var v = Current;
        DisableIrqs();
        if (Memory.ReadVolatile(v.VcpuInfoAddress + Layout.UpcallPending, 1) != 0)
        {
            EnableIrqs();
            return;
        }

        v.Hypercalls.SchedBlock();
        // Xen cleared the mask; the upcall was delivered on the way out of the block.
    }

    // ---------------------------------------------------------------- waiting and deferred work

    /// <summary>Queues work to run outside interrupt context (a bottom half), at the next <see cref="WaitFor"/> or <see cref="RunDeferredWork"/>.</summary>
    public void Defer(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        lock (_deferredLock)
        {
            _deferred.Enqueue(work);
        }
    }

    /// <summary>True when deferred work is queued.</summary>
    public bool HasDeferredWork
    {
        get
        {
            lock (_deferredLock)
            {
                return _deferred.Count > 0;
            }
        }
    }

    /// <summary>Runs queued deferred work (not re-entrantly: deferred work that waits does not run more of it).</summary>
    public void RunDeferredWork()
    {
        if (_runningDeferred)
        {
            return;
        }

        _runningDeferred = true;
        try
        {
            while (true)
            {
                Action? work;
                lock (_deferredLock)
                {
                    if (!_deferred.TryDequeue(out work))
                    {
                        return;
                    }
                }

                work();
            }
        }
        finally
        {
            _runningDeferred = false;
        }
    }

    /// <summary>
    /// Sleeps (<see cref="Halt"/>) until <paramref name="condition"/> holds, running deferred
    /// work between checks. The condition is checked with events masked just before blocking, so
    /// a wake-up cannot be lost. With a <paramref name="deadlineNs"/> (absolute system time) a
    /// one-shot timer bounds the wait. Returns false on timeout.
    /// </summary>
    public bool WaitFor(Func<bool> condition, ulong deadlineNs = 0)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var timer = deadlineNs != 0 ? Clock.AddTimer(deadlineNs, static () => { }) : 0;
        try
        {
            while (true)
            {
                RunDeferredWork();
                if (condition())
                {
                    return true;
                }

                if (deadlineNs != 0 && Clock.SystemTimeNs() >= deadlineNs)
                {
                    return false;
                }

                var was = DisableIrqs();
                if (condition() || (HasDeferredWork && !_runningDeferred))
                {
                    RestoreIrqs(was);
                    continue;
                }

                Halt();
                if (was)
                {
                    DisableIrqs();
                }
            }
        }
        finally
        {
            if (timer != 0)
            {
                Clock.CancelTimer(timer);
            }
        }
    }

    /// <summary>Sleeps for <paramref name="ns"/> nanoseconds of system time.</summary>
    public void Sleep(ulong ns)
    {
        var deadline = Clock.SystemTimeNs() + ns;
        WaitFor(() => Clock.SystemTimeNs() >= deadline, deadline);
    }

    internal long NextTimerId() => Interlocked.Increment(ref _nextTimerId);

    // ---------------------------------------------------------------- the upcall

    /// <summary>
    /// The event callback (Linux's xen_evtchn_do_upcall): runs with events masked; scans the
    /// event ABI for pending ports and runs their handlers (VIRQ_TIMER's fires due timers).
    /// </summary>
    public void HandleUpcall(IGuestCpu cpu)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        var v = Vcpu(cpu.VcpuId);
        if (v?.Cpu is null || Events is null)
        {
            return; // an upcall before this vCPU's events were set up: nothing is bound yet
        }

        t_current = v;
        t_guest = this;
        Events.HandleUpcall(v);
    }
}

/// <summary>A scope with events masked; disposing restores the previous state.</summary>
public readonly ref struct IrqScope
{
    private readonly XenGuest _guest;
    private readonly bool _wasDisabled;

    internal IrqScope(XenGuest guest, bool wasDisabled)
    {
        _guest = guest;
        _wasDisabled = wasDisabled;
    }

    /// <summary>Restores the saved event mask (and forces a pending upcall if that enables events).</summary>
    public void Dispose() => _guest.RestoreIrqs(_wasDisabled);
}
