using Paravirt.Core.Abi;
using Paravirt.Core.Console;
using Paravirt.Core.Cpu;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Domains;

/// <summary>
/// A domain: an isolated guest with its own memory, vCPUs, limits and meter. Created by
/// <see cref="Hypervisor.CreateDomain"/>; its life is Created → Running ⇄ Paused →
/// Shutdown / Crashed → Dead.
/// </summary>
public sealed class Domain
{
    private readonly Lock _stateLock = new();
    private readonly TaskCompletionSource<DomainExit> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ManualResetEventSlim _unpaused = new(true);
    private readonly List<Thread> _threads = [];
    private long _totPages;
    private int _extraPhysmap;
    // Written under _stateLock, read without it (the gate reads it on every hypercall).
    private volatile DomainState _state = DomainState.Created;

    internal Domain(Hypervisor hypervisor, ushort id, DomainConfig config)
    {
        Hypervisor = hypervisor;
        Id = id;
        Name = config.Name;
        Uuid = config.Uuid ?? Guid.NewGuid();
        Config = config;
        Limits = config.Limits;
        MaxPages = (long)(config.MaxMemoryMiB ?? config.MemoryMiB) * 256;
        PhysMap = new PhysMap(MaxPages);
        Memory = new GuestMemory(hypervisor.Frames, PhysMap, id);
        Console = new DomainConsole(config.Limits.ConsoleBufferBytes);
        Vcpus = new Vcpu[config.Vcpus];
        for (var i = 0; i < Vcpus.Length; i++)
        {
            Vcpus[i] = new Vcpu(this, i);
        }

        Meter = new DomainMeter(Vcpus.Length);
        Events = new Events.EventChannelTable(this);
        Grants = new Grants.DomainGrantTable(this);
        PvMm = new Memory.Pv.PvDomainMemory(this, hypervisor.Frames, Vcpus.Length);
    }

    /// <summary>The classic PV memory model's state for this domain (page-table types, pins, LDTs).</summary>
    internal Memory.Pv.PvDomainMemory PvMm { get; }

    /// <summary>The domain's PIRQs (PHYSDEVOP_get_free_pirq, _eoi, _irq_status_query).</summary>
    internal DomainPirqs Pirqs { get; } = new();

    /// <summary>The domain's grant table (its grants to others, and the grants it has mapped).</summary>
    internal Grants.DomainGrantTable Grants { get; }

    /// <summary>The domain's event channels.</summary>
    internal Events.EventChannelTable Events { get; }

    public ushort Id { get; }

    public string Name { get; }

    public Guid Uuid { get; }

    public DomainConfig Config { get; }

    public DomainLimits Limits { get; }

    /// <summary>Xen's paging_mode_translate: see <see cref="DomainConfig.AutoTranslated"/>.</summary>
    public bool IsTranslated => Config.AutoTranslated;

    public DomainState State => _state;

    /// <summary>How the domain ended, once it has.</summary>
    public DomainExit? Exit => _exit.Task.IsCompleted ? _exit.Task.Result : null;

    /// <summary>Raised (on the thread that changed it) whenever <see cref="State"/> changes.</summary>
    public event EventHandler<DomainState>? StateChanged;

    /// <summary>Pages of RAM the domain holds now (Xen's tot_pages).</summary>
    public long TotalPages => Interlocked.Read(ref _totPages);

    /// <summary>The most RAM pages the domain may hold (Xen's max_pages).</summary>
    public long MaxPages { get; internal set; }

    public DomainConsole Console { get; }

    public DomainMeter Meter { get; }

    public IReadOnlyList<Vcpu> VcpuList => Vcpus;

    /// <summary>CPU time of all vCPUs, in nanoseconds.</summary>
    public long CpuTimeNs => Vcpus.Sum(v => v.CpuTimeNs);

    internal Hypervisor Hypervisor { get; }

    internal Vcpu[] Vcpus { get; }

    internal PhysMap PhysMap { get; }

    internal GuestMemory Memory { get; }

    internal PinnedPage? SharedInfo { get; set; }

    /// <summary>Guest-physical address of start_info (what vCPU 0 gets in rsi).</summary>
    internal ulong StartInfoAddress { get; set; }

    private long _vmAssist;

    /// <summary>VMASST_TYPE_* bits enabled with <c>vm_assist</c>.</summary>
    internal ulong VmAssist => (ulong)Interlocked.Read(ref _vmAssist);

    internal void SetVmAssist(uint type, bool on)
    {
        if (on)
        {
            Interlocked.Or(ref _vmAssist, 1L << (int)type);
        }
        else
        {
            Interlocked.And(ref _vmAssist, ~(1L << (int)type));
        }
    }

    /// <summary>The SHUTDOWN_* code set early with SHUTDOWN_CODE (SCHEDOP_shutdown_code).</summary>
    internal uint? PendingShutdownCode { get; set; }

    internal ManagedKernel? Kernel { get; private set; }

    /// <summary>True until the domain has shut down, crashed or died.</summary>
    internal bool IsAlive
    {
        get
        {
            var s = State;
            return s is DomainState.Created or DomainState.Running or DomainState.Paused;
        }
    }

    /// <summary>Starts vCPU 0 in the managed guest kernel, with <c>start_info</c>'s address as Xen passes it in rsi.</summary>
    public void Start(ManagedKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        lock (_stateLock)
        {
            if (_state != DomainState.Created)
            {
                throw new InvalidOperationException($"domain {Id} ({Name}) is {_state}; only a Created domain can be started");
            }

            Kernel = kernel;
            _state = DomainState.Running;
        }

        StateChanged?.Invoke(this, DomainState.Running);
        StartVcpu(Vcpus[0], cpu => kernel.Main(cpu, StartInfoAddress));
    }

    /// <summary>Domain 0 is the host process: it is running from the start and never started by anyone.</summary>
    internal void MarkHostRunning()
    {
        lock (_stateLock)
        {
            _state = DomainState.Running;
        }
    }

    /// <summary>Holds every vCPU at its next hypercall (a managed vCPU cannot be stopped in the middle of guest code).</summary>
    public void Pause()
    {
        lock (_stateLock)
        {
            if (_state != DomainState.Running)
            {
                throw new InvalidOperationException($"domain {Id} ({Name}) is {_state}; only a Running domain can be paused");
            }

            _state = DomainState.Paused;
            _unpaused.Reset();
        }

        StateChanged?.Invoke(this, DomainState.Paused);
    }

    public void Unpause()
    {
        lock (_stateLock)
        {
            if (_state != DomainState.Paused)
            {
                throw new InvalidOperationException($"domain {Id} ({Name}) is {_state}; only a Paused domain can be unpaused");
            }

            _state = DomainState.Running;
            _unpaused.Set();
        }

        StateChanged?.Invoke(this, DomainState.Running);
    }

    /// <summary>Completes when the domain shuts down, crashes or is destroyed.</summary>
    public Task<DomainExit> WaitForShutdownAsync(CancellationToken cancellationToken = default) =>
        _exit.Task.WaitAsync(cancellationToken);

    /// <summary>Shuts the domain down from the host (as <c>xl shutdown</c> would after the guest agreed).</summary>
    public void Shutdown(uint code, string reason) => End(DomainState.Shutdown, code, reason);

    /// <summary>Crashes the domain: its vCPUs stop, every other domain goes on.</summary>
    public void Crash(string reason) => End(DomainState.Crashed, Sched.SHUTDOWN_crash, reason);

    /// <summary>
    /// Destroys the domain: stops its vCPUs, returns every frame to the host and removes it from
    /// the hypervisor. Waits (bounded) for the vCPU threads to leave guest code.
    /// </summary>
    public void Destroy()
    {
        if (Interlocked.Exchange(ref _destroyed, 1) != 0)
        {
            return;
        }

        End(DomainState.Dead, Sched.SHUTDOWN_poweroff, "destroyed by the host");
        Thread[] threads;
        lock (_threads)
        {
            threads = [.. _threads];
        }

        foreach (var t in threads)
        {
            if (t != Thread.CurrentThread && !t.Join(TimeSpan.FromSeconds(10)))
            {
                // A managed guest spinning without hypercalls cannot be stopped. Its frames are not
                // returned (they could be reused under it); the hypervisor keeps its machine memory
                // mapped for as long as such a thread lives.
                StuckVcpuThreads++;
            }
        }

        lock (_stateLock)
        {
            _state = DomainState.Dead;
        }

        // The store lets go of the domain's ring and releases it (@releaseDomain) before its ports close.
        Hypervisor.XenStore.Release(this);

        // The console backend drains the out ring a last time and lets go of its page and port.
        Console.StopBackend();

        // Close every port first, so peers see their ends unbound (Xen's evtchn_destroy).
        Events.CloseAll();
        if (StuckVcpuThreads == 0)
        {
            // Base pointers, pins and validated page-table entries let go of their references first.
            PvMm.Teardown();
            foreach (var v in Vcpus)
            {
                v.Teardown();
            }

            Events.ReleaseGuestFrames();

            // What this domain mapped from others goes first (gnttab_release_mappings), then its memory.
            Paravirt.Core.Grants.GrantOps.ReleaseMappings(this);
            ReleaseMemory();
        }

        Console.Close();
        Hypervisor.Remove(this);
        StateChanged?.Invoke(this, DomainState.Dead);
    }

    /// <summary>The guest's XenStore port (start_info.store_evtchn), allocated by the builder for domain 0.</summary>
    internal uint StoreEvtchn { get; set; }

    /// <summary>The guest's console port (start_info.console.domU.evtchn), allocated by the builder for domain 0.</summary>
    internal uint ConsoleEvtchn { get; set; }

    /// <summary>The pseudo-physical frames of the xenstore and console ring pages, where the domain builder put them.</summary>
    internal ulong StorePfn { get; set; }

    internal ulong ConsolePfn { get; set; }

    /// <summary>vCPU threads that did not leave guest code when the domain was destroyed.</summary>
    internal int StuckVcpuThreads { get; private set; }

    private int _destroyed;

    /// <summary>Moves the domain into an end state once; later calls keep the first reason (Dead always wins).</summary>
    internal void End(DomainState state, uint code, string reason, bool lastVcpuWentDown = false)
    {
        bool changed;
        lock (_stateLock)
        {
            changed = _state != state && (IsAliveState(_state) || state == DomainState.Dead);
            if (changed)
            {
                _state = state;
            }
        }

        _exit.TrySetResult(new DomainExit(state, code, reason) { LastVcpuWentDown = lastVcpuWentDown });
        _unpaused.Set();
        foreach (var v in Vcpus)
        {
            v.Kick();
        }

        if (changed && state != DomainState.Dead)
        {
            StateChanged?.Invoke(this, state);
        }
    }

    private static bool IsAliveState(DomainState s) => s is DomainState.Created or DomainState.Running or DomainState.Paused;

    /// <summary>Blocks a vCPU thread while the domain is paused; false once the domain is no longer alive.</summary>
    internal bool WaitWhilePaused()
    {
        _unpaused.Wait();
        return IsAlive;
    }

    internal void StartVcpu(Vcpu vcpu, Action<IGuestCpu> entry)
    {
        vcpu.IsInitialised = true;
        vcpu.SetDown(false);
        vcpu.HasThread = true;
        var thread = ManagedEngine.StartVcpuThread(this, vcpu, entry);
        lock (_threads)
        {
            _threads.Add(thread);
        }
    }

    /// <summary>
    /// Starts <paramref name="vcpu"/> on an engine other than the managed one (the PV interpreter):
    /// a Created domain becomes Running as <see cref="Start"/> makes it, and the thread
    /// <paramref name="start"/> returns is joined by <see cref="Destroy"/>.
    /// </summary>
    internal void StartEngineVcpu(Vcpu vcpu, Func<Thread> start)
    {
        bool started;
        lock (_stateLock)
        {
            if (!IsAliveState(_state))
            {
                throw new InvalidOperationException($"domain {Id} ({Name}) is {_state}; its vCPUs cannot be started");
            }

            started = _state == DomainState.Created;
            if (started)
            {
                _state = DomainState.Running;
            }
        }

        if (started)
        {
            StateChanged?.Invoke(this, DomainState.Running);
        }

        vcpu.IsInitialised = true;
        vcpu.SetDown(false);
        vcpu.HasThread = true;
        var thread = start();
        lock (_threads)
        {
            _threads.Add(thread);
        }
    }

    /// <summary>How VCPUOP_up starts a secondary vCPU's first thread on a non-managed engine (set by the PV engine); 0 or -errno.</summary>
    internal Func<Vcpu, long>? EngineSecondaryStart { get; set; }

    /// <summary>Xen's domain_lock: serialises vCPU initialise, up, down and vcpu_info registration.</summary>
    internal Lock VcpuLock { get; } = new();

    /// <summary>
    /// VCPUOP_up: -EINVAL unless initialised; a down vCPU goes up, on a new host thread entering
    /// <see cref="ManagedKernel.SecondaryEntry"/> the first time, else resuming where it went down.
    /// </summary>
    internal long UpVcpu(Vcpu vcpu)
    {
        lock (VcpuLock)
        {
            if (!vcpu.IsInitialised)
            {
                return -(long)Errno.EINVAL;
            }

            if (vcpu.IsUp)
            {
                return 0;
            }

            if (vcpu.HasThread)
            {
                vcpu.SetDown(false); // the parked thread resumes
                return 0;
            }

            if (EngineSecondaryStart is { } engine)
            {
                return engine(vcpu);
            }

            var kernel = Kernel;
            if (kernel is null)
            {
                return -(long)Errno.EINVAL;
            }

            var (rip, rsp) = vcpu.InitialContext;
            StartVcpu(vcpu, cpu => kernel.SecondaryEntry(cpu, rip, rsp));
            return 0;
        }
    }

    /// <summary>
    /// VCPUOP_down: the last vCPU going down powers the domain off (Xen's domain_shutdown with
    /// SHUTDOWN_poweroff); otherwise the vCPU is marked down and its thread parks at its next
    /// hypercall boundary (a managed vCPU cannot be stopped in the middle of guest code).
    /// </summary>
    internal long DownVcpu(Vcpu vcpu)
    {
        lock (VcpuLock)
        {
            if (Vcpus.Any(v => v != vcpu && v.IsUp))
            {
                vcpu.SetDown(true);
                return 0;
            }
        }

        // domain_shutdown(d, SHUTDOWN_poweroff), which takes a code set earlier by SCHEDOP_shutdown_code instead.
        var reason = $"its last vCPU ({vcpu.Id}) went down (VCPUOP_down)";
        var code = PendingShutdownCode ?? Sched.SHUTDOWN_poweroff;
        if (code == Sched.SHUTDOWN_crash)
        {
            Crash(reason);
        }
        else
        {
            End(DomainState.Shutdown, code, reason, lastVcpuWentDown: true);
        }

        return 0;
    }

    /// <summary>
    /// The machine frame behind a frame number a guest passed to a hypercall (Xen's GFN): for a
    /// translated domain its physmap's RAM entry, for classic PV the number itself. The caller still
    /// checks ownership when it takes the page.
    /// </summary>
    internal bool TryResolveGuestFrame(ulong frame, out ulong mfn)
    {
        if (!IsTranslated)
        {
            mfn = frame;
            return true;
        }

        return PhysMap.TryLookup(frame, out mfn, out var type) && type == P2mType.Ram;
    }

    /// <summary>Raises a VIRQ on a vCPU (or on vCPU 0's binding, for a global VIRQ), if the guest bound it.</summary>
    internal void RaiseVirq(Vcpu vcpu, int virq) => Events.RaiseVirq(vcpu.Id, virq);

    /// <summary>Wakes every vCPU waiting in SCHEDOP_poll so it re-checks its ports (Xen's evtchn_check_pollers).</summary>
    internal void WakePollers()
    {
        foreach (var v in Vcpus)
        {
            if (v.IsPolling)
            {
                v.Kick();
            }
        }
    }

    /// <summary>Whether any of <paramref name="ports"/> is pending.</summary>
    internal bool AnyPortPending(ReadOnlySpan<uint> ports)
    {
        foreach (var port in ports)
        {
            if (Events.Delivery.IsPending(port))
            {
                return true;
            }
        }

        return false;
    }

    private readonly Lock _watchdogLock = new();
    private readonly long[] _watchdogGeneration = new long[Hypercalls.SchedOp.WatchdogTimers];
    private int _watchdogInUse;

    /// <summary>
    /// SCHEDOP_watchdog (Xen's domain_watchdog): id 0 claims a free timer and returns its id (1-based);
    /// a known id with a timeout re-arms it, with 0 stops it. When one expires the domain shuts down with
    /// SHUTDOWN_watchdog.
    /// </summary>
    internal long Watchdog(uint id, uint timeoutSeconds)
    {
        const int n = Hypercalls.SchedOp.WatchdogTimers;
        if (id > n)
        {
            return -(long)Errno.EINVAL;
        }

        lock (_watchdogLock)
        {
            if (id == 0)
            {
                for (var i = 0; i < n; i++)
                {
                    if ((_watchdogInUse & (1 << i)) == 0)
                    {
                        _watchdogInUse |= 1 << i;
                        ArmWatchdog(i, timeoutSeconds);
                        return i + 1;
                    }
                }

                return -(long)Errno.ENOSPC;
            }

            var slot = (int)id - 1;
            if ((_watchdogInUse & (1 << slot)) == 0)
            {
                return -(long)Errno.EINVAL;
            }

            if (timeoutSeconds == 0)
            {
                _watchdogGeneration[slot]++;
                _watchdogInUse &= ~(1 << slot);
            }
            else
            {
                ArmWatchdog(slot, timeoutSeconds);
            }

            return 0;
        }
    }

    private void ArmWatchdog(int slot, uint timeoutSeconds)
    {
        var generation = ++_watchdogGeneration[slot];
        var deadline = Hypervisor.Clock.SystemTimeNs() + timeoutSeconds * 1_000_000_000UL;
        Hypervisor.Timers.Arm(deadline, () =>
        {
            if (IsAlive)
            {
                Shutdown(Sched.SHUTDOWN_watchdog, $"watchdog {slot + 1} expired");
            }
        }, () =>
        {
            lock (_watchdogLock)
            {
                return _watchdogGeneration[slot] == generation;
            }
        });
    }

    // Memory accounting (Xen's tot_pages / max_pages).

    /// <summary>Allocates a RAM frame charged to this domain, or false when over max_pages or the host is out of frames.</summary>
    internal bool TryAllocateRam(out ulong mfn)
    {
        mfn = 0;
        if (Interlocked.Increment(ref _totPages) > MaxPages)
        {
            Interlocked.Decrement(ref _totPages);
            return false;
        }

        if (!Hypervisor.Frames.TryAllocate(Id, out mfn))
        {
            Interlocked.Decrement(ref _totPages);
            return false;
        }

        return true;
    }

    /// <summary>Returns a RAM frame to the host.</summary>
    internal void FreeRam(ulong mfn)
    {
        Interlocked.Decrement(ref _totPages);
        Hypervisor.Frames.Release(mfn);
    }

    /// <summary>Counts an entry the guest placed above its RAM range; false when over the limit.</summary>
    internal bool TryChargeExtraPhysmap()
    {
        if (Interlocked.Increment(ref _extraPhysmap) > Limits.MaxExtraPhysmapEntries)
        {
            Interlocked.Decrement(ref _extraPhysmap);
            return false;
        }

        return true;
    }

    internal void UnchargeExtraPhysmap() => Interlocked.Decrement(ref _extraPhysmap);

    // Reservation changes (XENMEM_increase/decrease_reservation, populate_physmap). A PV guest
    // names frames by MFN; the hypervisor keeps the physmap managed guests access memory through.

    /// <summary>Serialises changes to the physmap, the m2p entries of this domain's frames and <see cref="_unmappedRam"/>.</summary>
    private readonly Lock _memoryLock = new();

    /// <summary>RAM frames the domain holds that sit in no physmap slot (increase_reservation gives MFNs only; the guest maps them itself).</summary>
    private readonly HashSet<ulong> _unmappedRam = [];

    /// <summary>
    /// One page for XENMEM_increase_reservation: charged to the domain, its m2p entry invalid, in no
    /// physmap slot (a PV guest learns the MFN and maps it itself). False when over max_pages or the
    /// host has no frame left.
    /// </summary>
    internal bool TryIncreaseReservation(out ulong mfn)
    {
        lock (_memoryLock)
        {
            if (!TryAllocateRam(out mfn))
            {
                return false;
            }

            _unmappedRam.Add(mfn);
            return true;
        }
    }

    /// <summary>
    /// One page for XENMEM_populate_physmap: a new RAM frame placed at <paramref name="gfn"/> with
    /// its m2p entry set (Xen's guest_physmap_add_page for PV sets the m2p). A RAM frame already at
    /// <paramref name="gfn"/> stays the domain's (charged, out of the physmap, as it would stay in
    /// Xen with only the guest's own p2m changed). False when the slot holds a non-RAM page, is
    /// beyond <see cref="PhysMap.MaxGfn"/>, or a limit is reached.
    /// </summary>
    internal bool TryPopulate(ulong gfn, out ulong mfn)
    {
        mfn = 0;
        if (gfn > PhysMap.MaxGfn)
        {
            return false;
        }

        lock (_memoryLock)
        {
            var occupied = PhysMap.TryLookup(gfn, out var oldMfn, out var oldType);
            if (occupied && oldType != P2mType.Ram)
            {
                return false;
            }

            var charged = false;
            if (!occupied && gfn >= (ulong)PhysMap.DenseFrames)
            {
                if (!TryChargeExtraPhysmap())
                {
                    return false;
                }

                charged = true;
            }

            if (!TryAllocateRam(out mfn))
            {
                if (charged)
                {
                    UnchargeExtraPhysmap();
                }

                return false;
            }

            var frames = Hypervisor.Frames;
            frames.SetMachineToPhys(mfn, gfn);
            PhysMap.Set(gfn, mfn, P2mType.Ram);
            if (occupied)
            {
                frames.SetMachineToPhys(oldMfn, FrameTable.InvalidGfn);
                _unmappedRam.Add(oldMfn);
            }

            return true;
        }
    }

    /// <summary>
    /// Xen's guest_remove_page for a PV domain, where the guest names the page by MFN: an MFN
    /// beyond the host's frames is -EINVAL; a frame the domain does not own is -ENXIO; an owned RAM
    /// frame leaves the physmap first (so the guest can no longer reach it) and is then freed.
    /// An owned frame that holds no allocation reference any more (shared_info, a page already
    /// given back but still pinned) succeeds without change, as get_page succeeds and there is no
    /// PGC_allocated reference left to drop in Xen.
    /// </summary>
    internal Errno? RemovePage(ulong mfn)
    {
        var frames = Hypervisor.Frames;
        if (!frames.IsValid(mfn))
        {
            return Errno.EINVAL;
        }

        if (!frames.TryGet(mfn, Id))
        {
            return Errno.ENXIO;
        }

        try
        {
            lock (_memoryLock)
            {
                if (_unmappedRam.Remove(mfn))
                {
                    FreeRam(mfn);
                    return null;
                }

                var gfn = frames.MachineToPhys(mfn);
                if (gfn != FrameTable.InvalidGfn && PhysMap.TryLookup(gfn, out var mapped, out var type)
                    && mapped == mfn && type == P2mType.Ram)
                {
                    PhysMap.Clear(gfn);
                    if (gfn >= (ulong)PhysMap.DenseFrames)
                    {
                        UnchargeExtraPhysmap();
                    }

                    frames.SetMachineToPhys(mfn, FrameTable.InvalidGfn);
                    FreeRam(mfn);
                }

                return null;
            }
        }
        finally
        {
            frames.Put(mfn);
        }
    }

    /// <summary>
    /// guest_remove_page for a translated domain, where the guest names the page by GFN: a hole is
    /// -ENOENT; a RAM page leaves the physmap and is freed; a hypervisor page (shared_info) is only
    /// unhooked from the slot (it has no allocation reference of the domain's to drop).
    /// </summary>
    internal Errno? RemoveGfn(ulong gfn)
    {
        return ClearGfn(gfn, freeRam: true);
    }

    /// <summary>
    /// XENMEM_remove_from_physmap for a translated domain: the page leaves the slot but stays the
    /// domain's (a RAM page is kept, charged, outside the physmap, as Xen only removes the p2m entry).
    /// </summary>
    internal Errno? UnmapGfn(ulong gfn)
    {
        return ClearGfn(gfn, freeRam: false);
    }

    /// <summary>Empties a physmap slot; a RAM page there is freed or kept charged outside the physmap.</summary>
    private Errno? ClearGfn(ulong gfn, bool freeRam)
    {
        lock (_memoryLock)
        {
            if (!PhysMap.TryLookup(gfn, out var mfn, out var type))
            {
                return Errno.ENOENT;
            }

            if (type is P2mType.GrantMapRw or P2mType.GrantMapRo)
            {
                // Another domain's frame: only the slot goes (its m2p is the owner's); the grant
                // mapping itself stays until unmapped or the domain dies, as in Xen.
                PhysMap.Clear(gfn);
                if (gfn >= (ulong)PhysMap.DenseFrames)
                {
                    UnchargeExtraPhysmap();
                }

                return null;
            }

            UnmapSlotLocked(gfn, mfn);
            if (type == P2mType.Ram)
            {
                if (freeRam)
                {
                    FreeRam(mfn);
                }
                else
                {
                    _unmappedRam.Add(mfn);
                }
            }

            return null;
        }
    }

    /// <summary>
    /// xenmem_add_to_physmap_one for a translated domain: places shared_info (idx 0) or moves one of
    /// the domain's RAM pages (gmfn: idx is its current GFN) to <paramref name="gpfn"/>. RAM already
    /// at <paramref name="gpfn"/> is freed; a hypervisor page there is unhooked; the page leaves its
    /// old slot. Grant-table frames come with the grant tables.
    /// </summary>
    internal Errno? AddToPhysmap(uint space, ulong idx, ulong gpfn)
    {
        if (gpfn > PhysMap.MaxGfn)
        {
            return Errno.EINVAL;
        }

        // gnttab_map_frame_begin: the frame (grown into existence if need be) is held across the change.
        ulong grantMfn = 0;
        if (space == XenMem.XENMAPSPACE_grant_table && Grants.AcquireFrameForPhysmap(idx, out grantMfn) is { } grantError)
        {
            return grantError;
        }

        try
        {
            return AddToPhysmapLocked(space, idx, gpfn, grantMfn);
        }
        finally
        {
            if (space == XenMem.XENMAPSPACE_grant_table)
            {
                Hypervisor.Frames.Put(grantMfn);
            }
        }
    }

    private Errno? AddToPhysmapLocked(uint space, ulong idx, ulong gpfn, ulong grantMfn)
    {
        lock (_memoryLock)
        {
            ulong mfn;
            P2mType type;
            switch (space)
            {
                case XenMem.XENMAPSPACE_grant_table:
                    mfn = grantMfn;
                    type = P2mType.Shared;
                    break;
                case XenMem.XENMAPSPACE_shared_info when idx == 0 && SharedInfo is not null:
                    mfn = SharedInfo.Mfn;
                    type = P2mType.Shared;
                    break;
                case XenMem.XENMAPSPACE_gmfn:
                    if (!PhysMap.TryLookup(idx, out mfn, out type) || type != P2mType.Ram)
                    {
                        return Errno.EINVAL;
                    }

                    break;
                default:
                    return Errno.EINVAL;
            }

            var frames = Hypervisor.Frames;
            var oldGfn = frames.MachineToPhys(mfn);
            if (space == XenMem.XENMAPSPACE_gmfn && oldGfn != idx)
            {
                return Errno.EXDEV;
            }

            var slotTaken = PhysMap.TryLookup(gpfn, out var prevMfn, out var prevType);
            if (slotTaken && prevMfn == mfn)
            {
                return null; // already there
            }

            if (slotTaken && prevType is P2mType.GrantMapRw or P2mType.GrantMapRo)
            {
                return Errno.EPERM; // p2m_add_page will not replace a grant mapping
            }

            if (!slotTaken && gpfn >= (ulong)PhysMap.DenseFrames && !TryChargeExtraPhysmap())
            {
                return Errno.ENOMEM;
            }

            if (slotTaken)
            {
                UnmapSlotLocked(gpfn, prevMfn, keepCharge: true);
                if (prevType == P2mType.Ram)
                {
                    FreeRam(prevMfn);
                }
            }

            if (oldGfn != FrameTable.InvalidGfn && PhysMap.TryLookup(oldGfn, out var atOld, out _) && atOld == mfn)
            {
                UnmapSlotLocked(oldGfn, mfn);
            }

            PhysMap.Set(gpfn, mfn, type);
            frames.SetMachineToPhys(mfn, gpfn);
            return null;
        }
    }

    /// <summary>
    /// create_grant_p2m_mapping: puts another domain's frame at <paramref name="gfn"/> as a grant
    /// mapping. RAM there leaves the physmap but stays the domain's; a hypervisor page is unhooked;
    /// another grant mapping is not replaced (false, as p2m_add_page refuses); a new slot above
    /// RAM counts against the extra-physmap limit.
    /// </summary>
    internal bool MapGrantFrame(ulong gfn, ulong mfn, bool readOnly)
    {
        if (gfn > PhysMap.MaxGfn)
        {
            return false;
        }

        lock (_memoryLock)
        {
            var taken = PhysMap.TryLookup(gfn, out var oldMfn, out var oldType);
            if (taken && oldType is P2mType.GrantMapRw or P2mType.GrantMapRo)
            {
                return false;
            }

            if (!taken && gfn >= (ulong)PhysMap.DenseFrames && !TryChargeExtraPhysmap())
            {
                return false;
            }

            if (taken)
            {
                Hypervisor.Frames.SetMachineToPhys(oldMfn, FrameTable.InvalidGfn);
                if (oldType == P2mType.Ram)
                {
                    _unmappedRam.Add(oldMfn);
                }
            }

            PhysMap.Set(gfn, mfn, readOnly ? P2mType.GrantMapRo : P2mType.GrantMapRw);
            return true;
        }
    }

    /// <summary>replace_grant_p2m_mapping: removes the grant mapping of <paramref name="mfn"/> at <paramref name="gfn"/>; false if the slot holds anything else.</summary>
    internal bool UnmapGrantFrame(ulong gfn, ulong mfn)
    {
        lock (_memoryLock)
        {
            if (!PhysMap.TryLookup(gfn, out var mapped, out var type) || mapped != mfn || type is not (P2mType.GrantMapRw or P2mType.GrantMapRo))
            {
                return false;
            }

            PhysMap.Clear(gfn);
            if (gfn >= (ulong)PhysMap.DenseFrames)
            {
                UnchargeExtraPhysmap();
            }

            return true;
        }
    }

    /// <summary>Takes a hypervisor page of the domain's (a grant status frame being freed) out of the physmap slot it was placed in.</summary>
    internal void UnmapSharedFrame(ulong mfn)
    {
        lock (_memoryLock)
        {
            var gfn = Hypervisor.Frames.MachineToPhys(mfn);
            if (gfn != FrameTable.InvalidGfn && PhysMap.TryLookup(gfn, out var mapped, out var type) && mapped == mfn && type == P2mType.Shared)
            {
                UnmapSlotLocked(gfn, mfn);
            }
        }
    }

    /// <summary>Clears a physmap slot and its m2p entry, returning the extra-physmap charge of a slot above RAM.</summary>
    private void UnmapSlotLocked(ulong gfn, ulong mfn, bool keepCharge = false)
    {
        PhysMap.Clear(gfn);
        Hypervisor.Frames.SetMachineToPhys(mfn, FrameTable.InvalidGfn);
        if (!keepCharge && gfn >= (ulong)PhysMap.DenseFrames)
        {
            UnchargeExtraPhysmap();
        }
    }

    /// <summary>
    /// The pseudo-physical E820 map (Xen's d->arch.e820), set by the builder as libxl does for a PV
    /// guest (xc_domain_set_memmap_limit: one E820_RAM entry of maxmem) or by XENMEM_set_memory_map.
    /// Null or empty: none set, and XENMEM_memory_map answers -ENOSYS.
    /// </summary>
    internal E820Entry[]? MemoryMap
    {
        get => Volatile.Read(ref _memoryMap);
        set => Volatile.Write(ref _memoryMap, value);
    }

    private E820Entry[]? _memoryMap;

    private void ReleaseMemory()
    {
        lock (_memoryLock)
        {
            foreach (var mfn in _unmappedRam)
            {
                FreeRam(mfn);
            }

            _unmappedRam.Clear();
        }

        foreach (var (gfn, mfn, type) in PhysMap.Entries())
        {
            PhysMap.Clear(gfn);
            if (type == P2mType.Ram)
            {
                FreeRam(mfn);
            }
        }

        // Hypervisor pages shared with the domain (shared_info, grant frames) go with it.
        SharedInfo?.Dispose();
        if (SharedInfo is not null)
        {
            Hypervisor.Frames.Release(SharedInfo.Mfn);
            SharedInfo = null;
        }

        Grants.ReleaseFrames();
    }
}
