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
    private DomainState _state = DomainState.Created;

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
    }

    public ushort Id { get; }

    public string Name { get; }

    public Guid Uuid { get; }

    public DomainConfig Config { get; }

    public DomainLimits Limits { get; }

    public DomainState State
    {
        get
        {
            lock (_stateLock)
            {
                return _state;
            }
        }
    }

    /// <summary>How the domain ended, once it has.</summary>
    public DomainExit? Exit => _exit.Task.IsCompleted ? _exit.Task.Result : null;

    /// <summary>Raised (on the thread that changed it) whenever <see cref="State"/> changes.</summary>
    public event EventHandler<DomainState>? StateChanged;

    /// <summary>Pages of RAM the domain holds now (Xen's tot_pages).</summary>
    public long TotalPages => Interlocked.Read(ref _totPages);

    /// <summary>The most RAM pages the domain may hold (Xen's max_pages).</summary>
    public long MaxPages { get; internal set; }

    public DomainConsole Console { get; }

    public DomainMeter Meter { get; } = new();

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
                // A managed guest spinning without hypercalls cannot be stopped; its memory goes
                // anyway, and its next access to it faults and ends the thread.
                System.Diagnostics.Trace.WriteLine($"paravirt: domain {Id} vCPU thread {t.Name} did not stop within 10 s");
            }
        }

        lock (_stateLock)
        {
            _state = DomainState.Dead;
        }

        foreach (var v in Vcpus)
        {
            v.Teardown();
        }

        ReleaseMemory();
        Console.Close();
        Hypervisor.Remove(this);
        StateChanged?.Invoke(this, DomainState.Dead);
    }

    /// <summary>Moves the domain into an end state once; later calls keep the first reason (Dead always wins).</summary>
    internal void End(DomainState state, uint code, string reason)
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

        _exit.TrySetResult(new DomainExit(state, code, reason));
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

        Hypercalls.SchedOp.Shutdown(this, Sched.SHUTDOWN_poweroff, $"its last vCPU ({vcpu.Id}) went down");
        return 0;
    }

    /// <summary>Raises a VIRQ on a vCPU. Event channels (issue 5) bind VIRQs to ports; until then only the wake happens.</summary>
    internal void RaiseVirq(Vcpu vcpu, int virq)
    {
        _ = vcpu;
        _ = virq;
    }

    /// <summary>Whether any of <paramref name="ports"/> is pending in shared_info's 2-level bitmap.</summary>
    internal bool AnyPortPending(ReadOnlySpan<uint> ports)
    {
        var page = SharedInfo;
        if (page is null)
        {
            return false;
        }

        foreach (var port in ports)
        {
            if (port >= EventChannel.EVTCHN_2L_NR_CHANNELS)
            {
                continue;
            }

            var word = Volatile.Read(ref page.At<ulong>(EvtchnPendingOffset + (int)(port / 64) * 8));
            if ((word & (1UL << (int)(port % 64))) != 0)
            {
                return true;
            }
        }

        return false;
    }

    private static readonly int EvtchnPendingOffset = (int)System.Runtime.InteropServices.Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

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

    private void ReleaseMemory()
    {
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
    }
}
