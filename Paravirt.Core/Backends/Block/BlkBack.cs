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
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource _detached = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private XenBusBackendDevice? _xenbus;
    private BlkifConnection? _connection;
    private TaskCompletionSource _disconnected = Completed();
    private int _detaching;

    private BlkBack(Domain domain, string vdev, uint devid, IBlockDevice device, BlkBackOptions options)
    {
        Domain = domain;
        VirtualDevice = vdev;
        DevId = devid;
        Device = device;
        _options = options;
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
    public bool IsConnected
    {
        get
        {
            lock (_gate)
            {
                return _connection is not null;
            }
        }
    }

    public BlkBackStats Stats => Counters.Snapshot();

    /// <summary>Completes once the disk is detached (disposed, or its domain died).</summary>
    public Task Detached => _detached.Task;

    internal BlkBackCounters Counters { get; } = new();

    internal Hypervisor Hypervisor => Domain.Hypervisor;

    private XenBusBackendDevice Xenbus => _xenbus ?? throw new InvalidOperationException("the disk is still being attached");

    /// <summary>
    /// Completes when no ring is being served (at once if none is): after a disconnect, once its
    /// in-flight requests are answered and its ring is unmapped.
    /// </summary>
    public Task WaitForDisconnectAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return _disconnected.Task.WaitAsync(cancellationToken);
        }
    }

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
        domain.StateChanged += disk.OnDomainStateChanged;
        try
        {
            disk._xenbus = XenBusBackendDevice.Create(hv, domain.Id, "vbd", devid, new XenBusBackendOptions
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
            });
        }
        catch
        {
            domain.StateChanged -= disk.OnDomainStateChanged;
            throw;
        }

        if (!domain.IsAlive)
        {
            _ = Task.Run(disk.DetachInBackgroundAsync); // it died while we attached: StateChanged may have come before we listened
        }

        return disk;
    }

    private static string Decimal(long n) => n.ToString(CultureInfo.InvariantCulture);

    private static TaskCompletionSource Completed()
    {
        var t = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        t.SetResult();
        return t;
    }

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
        lock (_gate)
        {
            if (_connection is not null || Volatile.Read(ref _detaching) != 0)
            {
                _ = connection.StopAsync();
                throw new InvalidOperationException(_connection is not null ? "a ring is already connected" : "the disk is being detached");
            }

            _connection = connection;
            _disconnected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        connection.Start();
        Interlocked.Increment(ref Counters.Connects);
        Log($"connected: ring-ref {ringRef}, event-channel {port}, {connection.RingSize} entries");
        if (!Domain.IsAlive)
        {
            _ = DisconnectAsync($"domain {Domain.Id} is {Domain.State}");
        }

        return Task.CompletedTask;
    }

    private static uint ParseKey(IReadOnlyDictionary<string, string> keys, string key) =>
        uint.TryParse(keys[key], NumberStyles.None, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new InvalidOperationException($"frontend {key} '{keys[key]}' is not a decimal number");

    /// <summary>Stops serving the ring (if one is served): in-flight requests finish, the ring is unmapped, the port closed.</summary>
    internal async Task DisconnectAsync(string why)
    {
        BlkifConnection? connection;
        TaskCompletionSource done;
        lock (_gate)
        {
            connection = _connection;
            _connection = null;
            done = _disconnected;
        }

        if (connection is null)
        {
            await done.Task.ConfigureAwait(false); // someone else is (or was) disconnecting it
            return;
        }

        await connection.StopAsync().ConfigureAwait(false);
        Interlocked.Increment(ref Counters.Disconnects);
        Log($"disconnected: {why}");
        done.TrySetResult();
    }

    /// <summary>The frontend broke the ring protocol: its domain is crashed (the crash disconnects the ring).</summary>
    internal void OnProtocolError(string what)
    {
        Interlocked.Increment(ref Counters.ProtocolErrors);
        var reason = $"blkback {VirtualDevice} (vbd {DevId}): {what}";
        Log(reason);
        Domain.Crash(reason);
    }

    private void OnDomainStateChanged(object? sender, DomainState state)
    {
        // Raised on whichever thread changed the state (a vCPU, the dispatcher itself): never block it.
        switch (state)
        {
            case DomainState.Crashed or DomainState.Shutdown:
                _ = Task.Run(() => DisconnectAsync($"domain {Domain.Id} {state.ToString().ToLowerInvariant()}"));
                break;
            case DomainState.Dead:
                _ = Task.Run(DetachInBackgroundAsync);
                break;
            default:
                break;
        }
    }

    private async Task DetachInBackgroundAsync()
    {
        try
        {
            await DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // nobody awaits a detach the domain's death started: report, do not lose it
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log($"detaching after the domain died failed: {e.Message}");
        }
    }

    internal void Log(string message) => _options.Log?.Invoke($"blkback {Domain.Id}/{VirtualDevice}: {message}");

    /// <summary>
    /// Detaches the disk: disconnects a connected ring (in-flight requests finish), removes both
    /// XenStore directories, and disposes the device unless <see cref="BlkBackOptions.LeaveOpen"/>.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _detaching, 1) != 0)
        {
            await _detached.Task.ConfigureAwait(false);
            return;
        }

        Domain.StateChanged -= OnDomainStateChanged;
        try
        {
            if (_xenbus is not null)
            {
                await _xenbus.DestroyAsync().ConfigureAwait(false);
            }

            await DisconnectAsync("the disk was detached").ConfigureAwait(false);
            if (!_options.LeaveOpen)
            {
                Device.Dispose();
            }
        }
        finally
        {
            _detached.TrySetResult();
        }
    }
}
