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
}

/// <summary>
/// The block backend (blkback) of one virtual disk of one domain: the XenBus device
/// (<c>vbd</c>, devid from the vdev name) with the nodes libxl and Xen's blkback write, and,
/// while a frontend is connected, its ring served from an <see cref="IBlockDevice"/>
/// (io/blkif.h: read, write, flush, barrier, discard; one-page ring; segments by grant copy).
/// Disposing detaches the disk; the frontend closing, or its domain crashing, shutting down or
/// dying, disconnects the ring (in-flight requests finish, every grant mapping goes).
/// </summary>
public sealed class BlkBack : IAsyncDisposable
{
    private readonly BlkBackOptions _options;
    private readonly BackendLifecycle<BlkifConnection> _life;

    private BlkBack(Domain domain, string vdev, uint devid, IBlockDevice device, BlkBackOptions options)
    {
        Domain = domain;
        VirtualDevice = vdev;
        DevId = devid;
        Device = device;
        _options = options;
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

    public BlkBackStats Stats => Counters.Snapshot();

    /// <summary>Completes once the disk is detached (disposed, or its domain died).</summary>
    public Task Detached => _life.Detached;

    internal BlkBackCounters Counters { get; } = new();

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
            FrontendKeys = ["ring-ref", "event-channel"],
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

            // blkback: device properties and features. One-page ring (no max-ring-page-order), no
            // indirect segments, no persistent grants, no multi-queue: none of those nodes is written.
            ["sectors"] = Decimal(d.SectorCount),
            ["sector-size"] = Decimal(d.SectorSize),
            ["physical-sector-size"] = Decimal(d.PhysicalSectorSize),
            ["info"] = Decimal(d.IsReadOnly ? Blkif.VDISK_READONLY : 0),
            ["feature-flush-cache"] = "1",
            ["feature-barrier"] = "1",
            ["feature-discard"] = d.SupportsDiscard ? "1" : "0",
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
        var ringRef = ParseKey(request.FrontendKeys, "ring-ref");
        var port = ParseKey(request.FrontendKeys, "event-channel");
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

        var queues = store.Read(fe + "/multi-queue-num-queues");
        if (queues is not null && queues != "1")
        {
            throw new InvalidOperationException($"multi-queue-num-queues {queues} is not supported: the backend offers one queue (no multi-queue-max-queues)");
        }

        if (Device.SectorSize != 512 && store.Read(fe + "/feature-large-sector-size") != "1")
        {
            throw new InvalidOperationException($"the disk's sectors are {Device.SectorSize} bytes and the frontend did not write feature-large-sector-size = 1 (io/blkif.h)");
        }

        if (!Domain.IsAlive)
        {
            throw new InvalidOperationException($"domain {Domain.Id} is {Domain.State}");
        }

        var connection = BlkifConnection.Open(this, ringRef, port);
        _life.Adopt(connection, "a ring is already connected");
        connection.Start();
        _life.Connected($"ring-ref {ringRef}, event-channel {port}, {connection.RingSize} entries");
        return Task.CompletedTask;
    }

    private static uint ParseKey(IReadOnlyDictionary<string, string> keys, string key) =>
        uint.TryParse(keys[key], NumberStyles.None, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new InvalidOperationException($"frontend {key} '{keys[key]}' is not a decimal number");

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
