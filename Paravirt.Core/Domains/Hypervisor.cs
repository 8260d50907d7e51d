using Paravirt.Core.Boot;
using Paravirt.Core.Hypercalls;
using Paravirt.Core.Memory;
using Paravirt.Core.Time;

namespace Paravirt.Core.Domains;

/// <summary>Options of one hypervisor instance.</summary>
public sealed record HypervisorOptions
{
    /// <summary>Machine memory shared by all domains, in MiB.</summary>
    public int MemoryMiB { get; init; } = 1024;

    /// <summary>The most domains alive at once.</summary>
    public int MaxDomains { get; init; } = 4096;

    /// <summary>
    /// Hide build details from guests as a release build of Xen 4.17 does (XSM's default
    /// policy): extraversion, compile info, capabilities, changeset and command line read as
    /// empty strings and <c>XENVER_build_id</c> fails with -EPERM. Off by default, like a debug
    /// build, so guests see what they are running on.
    /// </summary>
    public bool HideVersionDetails { get; init; }

    /// <summary>The hypervisor's own command line, as <c>XENVER_commandline</c> reports it.</summary>
    public string CommandLine { get; init; } = "";

    /// <summary>Source of the wallclock written to shared_info (tests pin it).</summary>
    public TimeProvider? Wallclock { get; init; }

    /// <summary>
    /// Where the hypervisor says what a porter needs to know: hypercalls answered -ENOSYS (warning)
    /// or refused with another errno (debug), instructions the interpreter lacks and MSRs answered
    /// #GP (warning), exceptions bounced to a guest (debug), crashes (error). Nothing by default.
    /// </summary>
    public Microsoft.Extensions.Logging.ILogger Logger { get; init; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>A per-vCPU trace of hypercalls and bounces (<c>paravirt run --trace FILE</c>), or null for none.</summary>
    public HypervisorTrace? Trace { get; init; }

    /// <summary>A sampling profile of interpreted guest code (<c>paravirt run --profile FILE</c>), or null for none.</summary>
    public GuestProfile? Profile { get; init; }
}

/// <summary>
/// The root object: machine memory, the hypercall table, the clock and every domain. Several may
/// live in one process; nothing is global.
/// </summary>
public sealed class Hypervisor : IDisposable
{
    /// <summary>Xen's version as guests see it.</summary>
    public const int MajorVersion = 4;
    public const int MinorVersion = 17;
    public const string ExtraVersion = ".0-paravirt";

    /// <summary>What guests are offered (XENVER_capabilities): 64-bit x86 PV.</summary>
    public const string Capabilities = "xen-3.0-x86_64";

    private readonly Lock _domainsLock = new();
    private readonly Dictionary<ushort, Domain> _domains = new();
    private readonly Dictionary<string, Backends.Network.VirtualSwitch> _switches = new(StringComparer.Ordinal);

    // Domains by id for lookups on hot paths (grant copy, event send): read without the lock,
    // written under it; the array is replaced, never resized in place.
    private Domain?[] _byId = new Domain?[64];
    private ushort _nextDomid = 1;
    private bool _disposed;

    public Hypervisor(HypervisorOptions? options = null)
    {
        Options = options ?? new HypervisorOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.MemoryMiB, 1, nameof(HypervisorOptions.MemoryMiB));
        Machine = new MachineMemory((long)Options.MemoryMiB * 256);
        Frames = new FrameTable(Machine);
        Clock = new Clock(Options.Wallclock);
        Timers = new TimerService(Clock);
        Hypercalls = HypercallTable.CreateDefault();
        // Xen's create_dom0 gives domain 0 no event-channel limit of its own (max_evtchn_port -1): only
        // the ABI bounds it. The host binds two ports per guest (store, console) plus one per device,
        // so the guests' default of 1023 would stop the host near 500 domains.
        HostDomain = new Domain(this, 0, new DomainConfig
        {
            Name = "Domain-0",
            MemoryMiB = 0,
            Vcpus = 1,
            Limits = DomainLimits.Default with { MaxEventChannels = Abi.EventChannel.EVTCHN_FIFO_NR_CHANNELS },
        });
        HostDomain.MarkHostRunning();
        Host = new Events.HostEvents(this);
        HostGrants = new Grants.HostGrants(this);
        XenStore = new XenStore.HostXenStore(new XenStore.XenStoreServer());
    }

    /// <summary>
    /// The XenStore of this hypervisor, as a privileged (dom0) client. Every domain is introduced to
    /// it on creation (home directory, ring connection on its store page) and released on destroy.
    /// </summary>
    public XenStore.HostXenStore XenStore { get; }

    /// <summary>The host's (domain 0's) grant access to guests, as backends use it: map and copy.</summary>
    public Grants.HostGrants HostGrants { get; }

    /// <summary>The host's side of event channels with guests (the host is domain 0).</summary>
    public Events.HostEvents Host { get; }

    /// <summary>Domain 0: the host process itself. It has no guest memory or vCPUs of its own.</summary>
    internal Domain HostDomain { get; }

    public HypervisorOptions Options { get; }

    public string Version => $"{MajorVersion}.{MinorVersion}{ExtraVersion}";

    public HypercallTable Hypercalls { get; }

    public Clock Clock { get; }

    /// <summary>Machine frames not held by any domain or the hypervisor.</summary>
    public long FreeFrames => Frames.FreeFrames;

    public long TotalFrames => Frames.TotalFrames;

    public IReadOnlyList<Domain> Domains
    {
        get
        {
            lock (_domainsLock)
            {
                return [.. _domains.Values.OrderBy(d => d.Id)];
            }
        }
    }

    internal MachineMemory Machine { get; }

    internal FrameTable Frames { get; }

    internal TimerService Timers { get; }

    /// <summary>Creates and builds a domain (memory allocated, start_info written); <see cref="Domain.Start"/> runs it.</summary>
    public Domain CreateDomain(DomainConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Create(config, DomainBuilder.Build);
    }

    /// <summary>
    /// Creates a classic PV domain (<see cref="DomainConfig.AutoTranslated"/> forced false) for a 64-bit
    /// PV kernel image (ELF with Xen notes, or a Linux bzImage holding one) and an optional ramdisk,
    /// laid out as Xen's toolstack does (docs/boot.md). The kernel is checked before anything is
    /// allocated. vCPU 0 is not started: <see cref="PvKernelStart.Start"/> does that with the
    /// returned <see cref="PvBootImage"/>.
    /// </summary>
    /// <exception cref="FormatException">The image is not well-formed ELF (<see cref="Boot.Elf.ElfFormatException"/>), not a bootable PV kernel, or a bzImage whose payload is refused (<see cref="PvKernelException"/>).</exception>
    /// <exception cref="ArgumentException">The configuration is invalid, or its memory is too small for the kernel (a bzImage's vmlinux larger than it) or its layout.</exception>
    public (Domain Domain, PvBootImage Boot) CreatePvDomain(DomainConfig config, ReadOnlySpan<byte> kernel, ReadOnlySpan<byte> ramdisk = default)
    {
        ArgumentNullException.ThrowIfNull(config);

        // A bzImage's size trailer is checked against the domain before anything is decompressed:
        // a vmlinux larger than the domain's memory cannot be loaded into it.
        if (KernelImage.IsBzImage(kernel) && config.MemoryMiB > 0 && BzImage.Parse(kernel) is var bz && bz.DecompressedSize > (long)config.MemoryMiB << 20)
        {
            throw new ArgumentException(
                $"domain '{config.Name}': {config.MemoryMiB} MiB is too small for this kernel: its bzImage's {bz.CompressionName} payload decompresses to {bz.DecompressedSize} bytes (its size trailer); expected more memory than the kernel");
        }

        var image = PvKernel.Parse(kernel);
        var initrd = ramdisk.ToArray();
        PvBootImage? boot = null;
        var domain = Create(config with { AutoTranslated = false }, d => boot = PvDomainBuilder.Build(d, image, initrd));
        return (domain, boot!);
    }

    private Domain Create(DomainConfig config, Action<Domain> build)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Validate(config);
        Domain domain;
        lock (_domainsLock)
        {
            if (_domains.Count >= Options.MaxDomains)
            {
                throw new InvalidOperationException($"cannot create domain '{config.Name}': {_domains.Count} domains exist and the limit is {Options.MaxDomains}");
            }

            if (_domains.Values.Any(d => d.Name == config.Name))
            {
                throw new ArgumentException($"a domain named '{config.Name}' already exists; names must be unique", nameof(config));
            }

            domain = new Domain(this, AllocateDomid(), config);
            _domains.Add(domain.Id, domain);
            if (domain.Id >= _byId.Length)
            {
                var grown = new Domain?[Math.Max(_byId.Length * 2, domain.Id + 1)];
                _byId.CopyTo(grown, 0);
                Volatile.Write(ref _byId, grown);
            }

            Volatile.Write(ref _byId[domain.Id], domain);
        }

        try
        {
            build(domain);
            XenStore.Introduce(domain, DomainBuilder.StoreFrame(domain), DomainBuilder.StoreMfn(domain), domain.StoreEvtchn);
            Backends.Console.ConsoleBackend.Start(domain, DomainBuilder.ConsoleFrame(domain), DomainBuilder.ConsoleMfn(domain), domain.ConsoleEvtchn);
        }
        catch
        {
            domain.Destroy();
            throw;
        }

        return domain;
    }

    /// <summary>
    /// The virtual switch named <paramref name="name"/> (created on first use with the default
    /// <see cref="Backends.Network.SwitchOptions"/>): vifs attach to it with <c>dom.AttachNic</c>,
    /// the host with <see cref="Backends.Network.VirtualSwitch.ConnectHost"/>. Disposed with the hypervisor.
    /// </summary>
    public Backends.Network.VirtualSwitch Switch(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        lock (_domainsLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_switches.TryGetValue(name, out var sw))
            {
                sw = new Backends.Network.VirtualSwitch(name);
                _switches.Add(name, sw);
            }

            return sw;
        }
    }

    /// <summary>A guest by id; id 0 is the host's own domain (used as the other end of channels and grants).</summary>
    public Domain? FindDomain(ushort domid)
    {
        if (domid == 0)
        {
            return HostDomain;
        }

        var byId = Volatile.Read(ref _byId);
        return domid < byId.Length ? Volatile.Read(ref byId[domid]) : null;
    }

    public Domain? FindDomain(string name)
    {
        lock (_domainsLock)
        {
            return _domains.Values.FirstOrDefault(d => d.Name == name);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        foreach (var d in Domains)
        {
            d.Destroy();
        }

        HostDomain.Events.CloseAll();
        Backends.Network.VirtualSwitch[] switches;
        lock (_domainsLock)
        {
            _disposed = true;
            switches = [.. _switches.Values];
            _switches.Clear();
        }

        foreach (var sw in switches)
        {
            sw.Dispose();
        }

        Timers.Dispose();

        // A vCPU thread that never left guest code may still touch machine memory: keep it mapped
        // (leaked) rather than free it under that thread.
        if (Volatile.Read(ref _stuckEver) == 0)
        {
            Machine.Dispose();
        }
    }

    private int _stuckEver;

    internal void NoteStuckThreads(int count) => Interlocked.Add(ref _stuckEver, count);

    internal void Remove(Domain domain)
    {
        NoteStuckThreads(domain.StuckVcpuThreads);
        lock (_domainsLock)
        {
            if (_domains.Remove(domain.Id))
            {
                Volatile.Write(ref _byId[domain.Id], null);
            }
        }
    }

    private void Validate(DomainConfig config)
    {
        if (string.IsNullOrWhiteSpace(config.Name))
        {
            throw new ArgumentException("a domain needs a non-empty name", nameof(config));
        }

        if (config.MemoryMiB < 1)
        {
            throw new ArgumentException($"domain '{config.Name}': memory must be at least 1 MiB, not {config.MemoryMiB}", nameof(config));
        }

        if (config.MaxMemoryMiB is { } max && max < config.MemoryMiB)
        {
            throw new ArgumentException($"domain '{config.Name}': maxmem {max} MiB is below memory {config.MemoryMiB} MiB", nameof(config));
        }

        if (config.Vcpus < 1 || config.Vcpus > config.Limits.MaxVcpus)
        {
            throw new ArgumentException($"domain '{config.Name}': vcpus must be 1 to {config.Limits.MaxVcpus}, not {config.Vcpus}", nameof(config));
        }

        if (System.Text.Encoding.UTF8.GetByteCount(config.CommandLine) >= Abi.Xen.MAX_GUEST_CMDLINE)
        {
            throw new ArgumentException($"domain '{config.Name}': the command line must be shorter than {Abi.Xen.MAX_GUEST_CMDLINE} bytes", nameof(config));
        }

        var need = (long)config.MemoryMiB * 256 + 2; // RAM, shared_info, the first grant frame
        if (need > Frames.FreeFrames)
        {
            throw new InvalidOperationException($"cannot create domain '{config.Name}': it needs {need} frames and the host has {Frames.FreeFrames} free");
        }
    }

    private ushort AllocateDomid()
    {
        // Domain ids 1..DOMID_FIRST_RESERVED-1; 0 is the host. Reuse is avoided until wrap-around, as Xen does.
        for (var tries = 0; tries < Abi.Xen.DOMID_FIRST_RESERVED; tries++)
        {
            var id = _nextDomid;
            _nextDomid = (ushort)(id + 1 >= Abi.Xen.DOMID_FIRST_RESERVED ? 1 : id + 1);
            if (!_domains.ContainsKey(id))
            {
                return id;
            }
        }

        throw new InvalidOperationException("no free domain id");
    }
}
