using System.Globalization;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.XenBus;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Backends.Block;

/// <summary>How a disk is attached (<see cref="BlockDomainExtensions.AttachDisk"/>).</summary>
public sealed record BlkBackOptions
{
    /// <summary>Leave the <see cref="IBlockDevice"/> open when the disk is detached (by default the disk owns it and disposes it).</summary>
    public bool LeaveOpen { get; init; }

    /// <summary>The backend's <c>params</c> node (libxl: the target); by default a file device's path, else empty.</summary>
    public string? Params { get; init; }

    /// <summary>Diagnostics: connects, refusals, bad requests, protocol errors.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// Offer persistent grants (<c>feature-persistent</c> = 1; Linux blkback's <c>feature_persistent</c>,
    /// on by default). A frontend that writes feature-persistent = 1 then has its grants mapped and kept.
    /// </summary>
    public bool PersistentGrants { get; init; } = true;

    /// <summary>The most grants each ring keeps mapped (Linux blkback's <c>max_persistent_grants</c>, 1056); 0 keeps none.</summary>
    public int MaxPersistentGrants { get; init; } = Block.PersistentGrants.DefaultLimit;

    /// <summary>
    /// How long a kept grant may go unused before it is unmapped (Linux blkback's
    /// <c>persistent_grant_unused_seconds</c>, 60 s); zero keeps them until the ring disconnects.
    /// </summary>
    public TimeSpan PersistentGrantUnusedTime { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The most queues (rings) a frontend may use (<c>multi-queue-max-queues</c>). By default the
    /// host's processor count, as Linux blkback's <c>max_queues</c> defaults to its CPUs, at most
    /// <see cref="BlkBack.DefaultMaxQueuesLimit"/>.
    /// </summary>
    public int? MaxQueues { get; init; }

    /// <summary>The clock of the persistent grants' purge (tests advance it by hand).</summary>
    internal TimeProvider? Time { get; init; }
}

/// <summary>
/// The block backend (blkback) of one virtual disk of one domain: the XenBus device
/// (<c>vbd</c>, devid from the vdev name) with the nodes libxl and Linux's blkback write, and,
/// while a frontend is connected, its rings served from an <see cref="IBlockDevice"/>
/// (io/blkif.h: read, write, flush, barrier, discard, indirect requests of up to
/// <see cref="MaxIndirectSegments"/> segments; one-page rings, one per queue up to
/// <c>multi-queue-max-queues</c>; segments by grant copy, or through grants mapped and kept when
/// the frontend takes <c>feature-persistent</c>).
/// Disposing detaches the disk; the frontend closing, or its domain crashing, shutting down or
/// dying, disconnects the ring (in-flight requests finish, every grant mapping goes).
/// </summary>
public sealed class BlkBack : IAsyncDisposable
{
    /// <summary>Segments an indirect request may carry: <c>feature-max-indirect-segments</c> (Linux blkback's MAX_INDIRECT_SEGMENTS).</summary>
    public const int MaxIndirectSegments = 256;

    /// <summary>The most queues offered by default, however many processors the host has: each queue's ring has its own dispatcher and up to 32 requests in flight.</summary>
    public const int DefaultMaxQueuesLimit = 8;

    private readonly BlkBackOptions _options;
    private readonly BackendLifecycle<BlkifConnection> _life;

    private BlkBack(Domain domain, string vdev, uint devid, IBlockDevice device, BlkBackOptions options)
    {
        Domain = domain;
        VirtualDevice = vdev;
        DevId = devid;
        Device = device;
        _options = options;
        MaxQueues = options.MaxQueues ?? Math.Clamp(Environment.ProcessorCount, 1, DefaultMaxQueuesLimit);
        _life = new BackendLifecycle<BlkifConnection>(domain, "disk", $"blkback {vdev} (vbd {devid})", Counters, Log, DisposeAsync);
    }

    /// <summary>The frontend's domain.</summary>
    public Domain Domain { get; }

    /// <summary>The name it was attached as (<c>xvda</c>).</summary>
    public string VirtualDevice { get; }

    /// <summary>The XenBus devid and the frontend's <c>virtual-device</c> (<c>xvda</c> → 51712).</summary>
    public uint DevId { get; }

    public IBlockDevice Device { get; }

    /// <summary><c>/local/domain/&lt;domid&gt;/device/vbd/&lt;devid&gt;</c>.</summary>
    public string FrontendPath => Xenbus.FrontendPath;

    /// <summary><c>/local/domain/0/backend/vbd/&lt;domid&gt;/&lt;devid&gt;</c>.</summary>
    public string BackendPath => Xenbus.BackendPath;

    /// <summary>The backend's XenBus state.</summary>
    public XenbusState State => Xenbus.State;

    /// <summary>True while a frontend's ring is being served.</summary>
    public bool IsConnected => _life.Connection is not null;

    /// <summary>The most queues a frontend may use (<c>multi-queue-max-queues</c>).</summary>
    public int MaxQueues { get; }

    /// <summary>Rings (queues) of the connection being served; 0 when none is.</summary>
    public int Queues => _life.Connection?.Rings.Count ?? 0;

    /// <summary>Requests taken from each ring (queue) of the connection being served, queue 0 first; empty when none is.</summary>
    public IReadOnlyList<long> QueueRequests => _life.Connection?.Rings.Select(r => r.Requests).ToArray() ?? [];

    /// <summary>True while the connection served maps and keeps its grants (both ends wrote feature-persistent = 1).</summary>
    public bool UsesPersistentGrants => _life.Connection?.PersistentGrants ?? false;

    /// <summary>Grants kept mapped now, over every ring of the connection.</summary>
    public int PersistentGrantCount => _life.Connection?.PersistentGrantCount ?? 0;

    public BlkBackStats Stats => Counters.Snapshot();

    /// <summary>Completes once the disk is detached (disposed, or its domain died).</summary>
    public Task Detached => _life.Detached;

    internal BlkBackCounters Counters { get; } = new();

    internal BlkBackOptions Options => _options;

    internal Hypervisor Hypervisor => Domain.Hypervisor;

    private XenBusBackendDevice Xenbus => _life.Xenbus;

    /// <summary>
    /// Completes when no ring is being served (at once if none is): after a disconnect, once its
    /// in-flight requests are answered and its ring is unmapped.
    /// </summary>
    public Task WaitForDisconnectAsync(CancellationToken cancellationToken = default) => _life.WaitForDisconnectAsync(cancellationToken);

    internal static BlkBack Attach(Domain domain, string vdev, IBlockDevice device, BlkBackOptions? options)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        options ??= new BlkBackOptions();
        var devid = VirtualDeviceNumber.Parse(vdev);
        if (options.MaxQueues is < 1 or > 255)
        {
            throw new ArgumentException($"MaxQueues is {options.MaxQueues}: a disk offers 1 to 255 queues", nameof(options));
        }

        if (options.MaxPersistentGrants < 0 || options.PersistentGrantUnusedTime < TimeSpan.Zero)
        {
            throw new ArgumentException($"MaxPersistentGrants ({options.MaxPersistentGrants}) and PersistentGrantUnusedTime ({options.PersistentGrantUnusedTime}) must not be negative", nameof(options));
        }

        if (domain.Id == 0)
        {
            throw new ArgumentException("domain 0 is the host: a disk is attached to a guest", nameof(domain));
        }

        BlockDevice.CheckSectorSize(device.SectorSize);
        if (device.SectorCount <= 0 || device.PhysicalSectorSize < device.SectorSize || device.PhysicalSectorSize % device.SectorSize != 0)
        {
            throw new ArgumentException($"the device must have sectors ({device.SectorCount}) and a physical sector size ({device.PhysicalSectorSize}) that is a multiple of its sector size ({device.SectorSize})", nameof(device));
        }

        var hv = domain.Hypervisor;
        if (hv.FindDomain(domain.Id) != domain || !domain.IsAlive)
        {
            throw new InvalidOperationException($"domain {domain.Id} ({domain.Name}) is {domain.State}; a disk is attached to a live domain");
        }

        var backendPath = XenBusBackendDevice.BackendPathOf(domain.Id, "vbd", devid);
        if (hv.XenStore.Read(backendPath + "/state") is not null)
        {
            throw new InvalidOperationException($"domain {domain.Id} already has a vbd {devid} ({vdev}): detach it first");
        }

        var disk = new BlkBack(domain, vdev, devid, device, options);
        disk._life.Register(() => XenBusBackendDevice.Create(hv, domain.Id, "vbd", devid, new XenBusBackendOptions
        {
            Features = disk.BackendNodes(),
            FrontendEntries = new Dictionary<string, string>
            {
                ["virtual-device"] = Decimal(devid),
                ["device-type"] = "disk",
            },
            FrontendKeys = [], // ring-ref and event-channel, or queue-N/…: read by ConnectAsync
            Connect = disk.ConnectAsync,
            Disconnect = (_, _) => disk.DisconnectAsync("the frontend closed"),
            Log = options.Log,
        }));
        return disk;
    }

    private static string Decimal(long n) => n.ToString(CultureInfo.InvariantCulture);

    /// <summary>The backend directory: libxl's device nodes, then what Xen's blkback advertises (io/blkif.h).</summary>
    private Dictionary<string, string> BackendNodes()
    {
        var d = Device;
        var nodes = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            // libxl__device_disk_add
            ["params"] = _options.Params ?? (d is FileBlockDevice f ? f.Path : ""),
            ["type"] = d is FileBlockDevice ? "file" : "phy",
            ["mode"] = d.IsReadOnly ? "r" : "w",
            ["dev"] = VirtualDevice,
            ["device-type"] = "disk",
            ["removable"] = "0",
            ["bootable"] = "1",
            ["discard-enable"] = d.SupportsDiscard ? "1" : "0",
            ["specification"] = "xen",

            // blkback: device properties and features. One-page rings only: no max-ring-page-order.
            ["sectors"] = Decimal(d.SectorCount),
            ["sector-size"] = Decimal(d.SectorSize),
            ["physical-sector-size"] = Decimal(d.PhysicalSectorSize),
            ["info"] = Decimal(d.IsReadOnly ? Blkif.VDISK_READONLY : 0),
            ["feature-flush-cache"] = "1",
            ["feature-barrier"] = "1",
            ["feature-discard"] = d.SupportsDiscard ? "1" : "0",
            ["feature-max-indirect-segments"] = Decimal(MaxIndirectSegments),
            ["multi-queue-max-queues"] = Decimal(MaxQueues),

            // Linux's blkback writes its feature_persistent parameter as it connects; here it is
            // there from the start (a frontend reads it only once the backend is Connected).
            ["feature-persistent"] = _options.PersistentGrants ? "1" : "0",
        };
        if (d.SupportsDiscard)
        {
            nodes["discard-granularity"] = Decimal(d.PhysicalSectorSize);
            nodes["discard-alignment"] = "0";
            nodes["discard-secure"] = "0";
        }

        return nodes;
    }

    private Task ConnectAsync(XenBusConnectRequest request, CancellationToken cancellationToken)
    {
        var store = Hypervisor.XenStore;
        var fe = request.Device.FrontendPath;
        var protocol = store.Read(fe + "/protocol");
        if (protocol is not null && protocol != Protocols.XEN_IO_PROTO_ABI_NATIVE)
        {
            throw new InvalidOperationException($"frontend protocol '{protocol}' is not supported: only {Protocols.XEN_IO_PROTO_ABI_NATIVE} (or no protocol node) is");
        }

        var order = store.Read(fe + "/ring-page-order");
        if (order is not null && order != "0")
        {
            throw new InvalidOperationException($"ring-page-order {order} is not supported: the backend offers one-page rings only (no max-ring-page-order)");
        }

        // io/blkif.h: one queue keeps ring-ref and event-channel at the top; N > 1 puts them under
        // queue-0 … queue-(N-1). As Linux's connect_ring, 0 or more than offered is refused.
        var queues = 1;
        var asked = store.Read(fe + "/multi-queue-num-queues");
        if (asked is not null && (!int.TryParse(asked, NumberStyles.None, CultureInfo.InvariantCulture, out queues) || queues < 1 || queues > MaxQueues))
        {
            throw new InvalidOperationException($"multi-queue-num-queues '{asked}' is not supported: the backend serves 1 to {MaxQueues} queues (multi-queue-max-queues)");
        }

        var rings = new (uint RingRef, uint Port)[queues];
        for (var q = 0; q < queues; q++)
        {
            var dir = queues == 1 ? "" : string.Create(CultureInfo.InvariantCulture, $"queue-{q}/");
            rings[q] = (ReadKey(store, fe, dir + "ring-ref"), ReadKey(store, fe, dir + "event-channel"));
        }

        if (Device.SectorSize != 512 && store.Read(fe + "/feature-large-sector-size") != "1")
        {
            throw new InvalidOperationException($"the disk's sectors are {Device.SectorSize} bytes and the frontend did not write feature-large-sector-size = 1 (io/blkif.h)");
        }

        // Linux's connect_ring: persistent when offered and the frontend's node reads as a non-zero number.
        var persistent = _options.PersistentGrants
            && uint.TryParse(store.Read(fe + "/feature-persistent"), NumberStyles.None, CultureInfo.InvariantCulture, out var fePersistent)
            && fePersistent != 0;

        if (!Domain.IsAlive)
        {
            throw new InvalidOperationException($"domain {Domain.Id} is {Domain.State}");
        }

        var connection = BlkifConnection.Open(this, new BlkifConnectRequest(rings, persistent));
        _life.Adopt(connection, "a ring is already connected");
        connection.Start();
        var where = queues == 1
            ? $"ring-ref {rings[0].RingRef}, event-channel {rings[0].Port}"
            : $"{queues} queues (ring-ref/event-channel {string.Join(", ", rings.Select(r => $"{r.RingRef}/{r.Port}"))})";
        _life.Connected($"{where}, {connection.Rings[0].RingSize} entries each, "
            + (persistent ? "persistent grants" : "grant copy") + $", indirect requests up to {MaxIndirectSegments} segments");
        return Task.CompletedTask;
    }

    private static uint ReadKey(XenStore.HostXenStore store, string frontend, string key)
    {
        var value = store.Read($"{frontend}/{key}") ?? throw new InvalidOperationException($"frontend key '{key}' is missing");
        return uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new InvalidOperationException($"frontend {key} '{value}' is not a decimal number");
    }

    /// <summary>Stops serving the ring (if one is served): in-flight requests finish, the ring is unmapped, the port closed.</summary>
    internal Task DisconnectAsync(string why) => _life.DisconnectAsync(why);

    /// <summary>The frontend broke the ring protocol: its domain is crashed (the crash disconnects the ring).</summary>
    internal void OnProtocolError(string what) => _life.OnProtocolError(what);

    internal void Log(string message) => _options.Log?.Invoke($"blkback {Domain.Id}/{VirtualDevice}: {message}");

    /// <summary>
    /// Detaches the disk: disconnects a connected ring (in-flight requests finish), removes both
    /// XenStore directories, and disposes the device unless <see cref="BlkBackOptions.LeaveOpen"/>.
    /// </summary>
    public ValueTask DisposeAsync() => _life.DetachAsync(() =>
    {
        if (!_options.LeaveOpen)
        {
            Device.Dispose();
        }

        return ValueTask.CompletedTask;
    });
}
