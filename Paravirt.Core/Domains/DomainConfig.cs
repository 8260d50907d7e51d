namespace Paravirt.Core.Domains;

/// <summary>What a host asks for when it creates a domain (the subset of an <c>xl.cfg</c> the core needs).</summary>
public sealed record DomainConfig
{
    /// <summary>A unique name, as <c>xl list</c> shows it.</summary>
    public required string Name { get; init; }

    /// <summary>Initial memory (Xen's <c>memory=</c>), in MiB.</summary>
    public int MemoryMiB { get; init; } = 64;

    /// <summary>The most memory the domain may grow to with <c>XENMEM_increase_reservation</c> (<c>maxmem=</c>); defaults to <see cref="MemoryMiB"/>.</summary>
    public int? MaxMemoryMiB { get; init; }

    /// <summary>vCPUs brought up at start (vCPU 0 runs; others wait for <c>VCPUOP_up</c>).</summary>
    public int Vcpus { get; init; } = 1;

    /// <summary>The domain handle (<c>xen_domain_handle_t</c>); a random one when not set.</summary>
    public Guid? Uuid { get; init; }

    /// <summary>The kernel command line, written to <c>start_info.cmd_line</c> (at most 1023 bytes).</summary>
    public string CommandLine { get; init; } = "";

    /// <summary>
    /// Whether the hypervisor translates the guest's physical addresses (Xen's
    /// <c>paging_mode_translate</c>, as for PVH and HVM guests). Managed guests run this way: they
    /// address their memory by guest frame number, see <c>XENFEAT_auto_translated_physmap</c>,
    /// find GFNs (not MFNs) in start_info, and place shared_info and grant frames with
    /// <c>XENMEM_add_to_physmap</c>. False gives classic PV semantics, where the guest manages its
    /// own P→M list and hypercalls speak machine frame numbers (the PV kernels of the interpreter
    /// engine).
    /// </summary>
    public bool AutoTranslated { get; init; } = true;

    /// <summary>Per-domain limits; Xen-like defaults.</summary>
    public DomainLimits Limits { get; init; } = DomainLimits.Default;
}

/// <summary>
/// Bounds on what one domain may take from the host, so no guest can starve the rest. The
/// defaults follow Xen 4.17 and <c>xl</c>: 1023 event channels (<c>max_event_channels</c>), 64 grant
/// frames (<c>max_grant_frames</c>), 1024 maptrack frames (<c>max_maptrack_frames</c>).
/// </summary>
public sealed record DomainLimits
{
    public static DomainLimits Default { get; } = new();

    /// <summary>The most vCPUs a domain may be created with (Xen's per-domain <c>max_vcpus</c>).</summary>
    public int MaxVcpus { get; init; } = 128;

    /// <summary>Highest event channel port + 1.</summary>
    public int MaxEventChannels { get; init; } = 1023;

    public int MaxGrantFrames { get; init; } = 64;

    public int MaxMaptrackFrames { get; init; } = 1024;

    /// <summary>Guest frames the domain may place above its RAM with <c>XENMEM_add_to_physmap</c>.</summary>
    public int MaxExtraPhysmapEntries { get; init; } = 1024;

    /// <summary>Bytes of console output buffered for the host before the oldest lines are dropped.</summary>
    public int ConsoleBufferBytes { get; init; } = 64 * 1024;

    /// <summary>The most entries one multicall may batch.</summary>
    public int MaxMulticallEntries { get; init; } = 1024;
}
