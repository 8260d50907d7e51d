using System.Globalization;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.XenBus;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// The network backend (netback) of one vif of one domain: the XenBus device (<c>vif</c>) with
/// the nodes libxl and Xen's netback write, and, while a frontend is connected, its transmit
/// and receive rings (io/netif.h, grant copy both ways) plugged into a <see cref="VirtualSwitch"/>
/// port. Disposing detaches the vif; the frontend closing, or its domain crashing, shutting down
/// or dying, disconnects the rings (the port leaves the switch, every grant mapping goes).
/// </summary>
public sealed class NetBack : IAsyncDisposable
{
    private readonly NicOptions _options;
    private readonly BackendLifecycle<NetifConnection> _life;

    private NetBack(Domain domain, VirtualSwitch @switch, uint devid, MacAddress mac, NicOptions options)
    {
        Domain = domain;
        Switch = @switch;
        DevId = devid;
        Mac = mac;
        _options = options;
        SourcePolicy = new SourcePolicy(mac, options.Ips);
        _life = new BackendLifecycle<NetifConnection>(domain, "vif", $"netback vif{domain.Id}.{devid}", Counters, Log, DisposeAsync);
        if (options.RateBytesPerSecond is { } rate)
        {
            var usec = (long)Math.Round(options.RateInterval.TotalMicroseconds);
            if (rate < 1 || usec < 1 || usec > uint.MaxValue)
            {
                throw new ArgumentException($"rate {rate} bytes/s every {options.RateInterval}: expected a positive rate and an interval from 1 µs to {uint.MaxValue} µs", nameof(options));
            }

            // xl's rate "B/s@interval" becomes libxl's rate_bytes_per_interval,rate_interval_usecs.
            CreditBytes = (long)Math.Min((decimal)rate * usec / 1_000_000m, long.MaxValue);
            if (CreditBytes < 1)
            {
                throw new ArgumentException($"rate {rate} bytes/s gives no whole byte per {options.RateInterval} window", nameof(options));
            }

            CreditWindow = TimeSpan.FromMicroseconds(usec);
        }
    }

    /// <summary>The frontend's domain.</summary>
    public Domain Domain { get; }

    /// <summary>The switch the vif is plugged into (libxl's <c>bridge</c>).</summary>
    public VirtualSwitch Switch { get; }

    /// <summary>The XenBus devid (<c>vif/&lt;devid&gt;</c>, libxl's <c>handle</c>).</summary>
    public uint DevId { get; }

    /// <summary>The guest's MAC address (the <c>mac</c> node).</summary>
    public MacAddress Mac { get; }

    /// <summary>What the guest may send from: its MAC, and the <c>ip=</c> addresses if any.</summary>
    internal SourcePolicy SourcePolicy { get; }

    /// <summary>Transmit credit per window (libxl's rate_bytes_per_interval), or null when unlimited.</summary>
    public long? CreditBytes { get; }

    /// <summary>The credit window (rate_interval_usecs), or null when unlimited.</summary>
    public TimeSpan? CreditWindow { get; }

    /// <summary><c>/local/domain/&lt;domid&gt;/device/vif/&lt;devid&gt;</c>.</summary>
    public string FrontendPath => Xenbus.FrontendPath;

    /// <summary><c>/local/domain/0/backend/vif/&lt;domid&gt;/&lt;devid&gt;</c>.</summary>
    public string BackendPath => Xenbus.BackendPath;

    /// <summary>The backend's XenBus state.</summary>
    public XenbusState State => Xenbus.State;

    /// <summary>True while a frontend's rings are served (and the vif is a port of the switch).</summary>
    public bool IsConnected => _life.Connection is not null;

    /// <summary>The switch port of the current connection, or null.</summary>
    public SwitchPort? Port => _life.Connection;

    public NetBackStats Stats => Counters.Snapshot();

    /// <summary>Completes once the vif is detached (disposed, or its domain died).</summary>
    public Task Detached => _life.Detached;

    internal NetBackCounters Counters { get; } = new();

    internal Hypervisor Hypervisor => Domain.Hypervisor;

    internal int QueueFrames => _options.QueueFrames ?? Switch.Options.QueueFrames;

    private XenBusBackendDevice Xenbus => _life.Xenbus;

    /// <summary>Completes when a frontend is connected (at once if one is).</summary>
    public Task WaitForConnectAsync(CancellationToken cancellationToken = default) => _life.WaitForConnectAsync(cancellationToken);

    /// <summary>Completes when no ring is served (at once if none is): after a disconnect, once the port has left the switch and the rings are unmapped.</summary>
    public Task WaitForDisconnectAsync(CancellationToken cancellationToken = default) => _life.WaitForDisconnectAsync(cancellationToken);

    internal static NetBack Attach(Domain domain, VirtualSwitch @switch, NicOptions? options)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(@switch);
        options ??= new NicOptions();
        if (domain.Id == 0)
        {
            throw new ArgumentException("domain 0 is the host: a vif is attached to a guest (the host uses VirtualSwitch.ConnectHost)", nameof(domain));
        }

        if (options.QueueFrames is < 1)
        {
            throw new ArgumentException($"QueueFrames {options.QueueFrames}: a port queues at least one frame", nameof(options));
        }

        var hv = domain.Hypervisor;
        if (hv.FindDomain(domain.Id) != domain || !domain.IsAlive)
        {
            throw new InvalidOperationException($"domain {domain.Id} ({domain.Name}) is {domain.State}; a vif is attached to a live domain");
        }

        uint devid;
        if (options.DevId is { } wanted)
        {
            devid = wanted;
            if (hv.XenStore.Read(XenBusBackendDevice.BackendPathOf(domain.Id, "vif", devid) + "/state") is not null)
            {
                throw new InvalidOperationException($"domain {domain.Id} already has a vif {devid}: detach it first");
            }
        }
        else
        {
            devid = 0;
            while (hv.XenStore.Read(XenBusBackendDevice.BackendPathOf(domain.Id, "vif", devid) + "/state") is not null)
            {
                devid++;
            }
        }

        var mac = options.Mac ?? MacAddress.RandomXen();
        if (mac.IsMulticast)
        {
            throw new ArgumentException($"{mac} is a group address: a vif's MAC is unicast", nameof(options));
        }

        var nic = new NetBack(domain, @switch, devid, mac, options);
        nic._life.Register(() => XenBusBackendDevice.Create(hv, domain.Id, "vif", devid, new XenBusBackendOptions
        {
            Features = nic.BackendNodes(),
            FrontendEntries = new Dictionary<string, string>
            {
                // libxl__set_xenstore_nic: front handle, mac, trusted, and (read-only there) mtu.
                ["handle"] = Decimal(devid),
                ["mac"] = mac.ToString(),
                ["trusted"] = "1",
                ["mtu"] = Decimal(VirtualSwitch.MaxFrameBytes - VirtualSwitch.MinFrameBytes),
            },
            FrontendKeys = ["tx-ring-ref", "rx-ring-ref"],
            Connect = nic.ConnectAsync,
            Disconnect = (_, _) => nic.DisconnectAsync("the frontend closed"),
            Log = options.Log,
        }));
        return nic;
    }

    private static string Decimal(long n) => n.ToString(CultureInfo.InvariantCulture);


    /// <summary>The backend directory: libxl's vif nodes, then what netback advertises (io/netif.h).</summary>
    private Dictionary<string, string> BackendNodes()
    {
        var nodes = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            // libxl__set_xenstore_nic (no hotplug script runs, so hotplug-status is written connected at once).
            ["mac"] = Mac.ToString(),
            ["bridge"] = Switch.Name,
            ["handle"] = Decimal(DevId),
            ["type"] = "vif",
            ["hotplug-status"] = "connected",

            // netback: multi-slot transmit (up to XEN_NETIF_NR_SLOTS_MIN slots), receive by copy only,
            // split event channels accepted; no GSO, no multicast control, no multi-queue, no control ring.
            ["feature-sg"] = "1",
            ["feature-gso-tcpv4"] = "0",
            ["feature-gso-tcpv6"] = "0",
            ["feature-ipv6-csum-offload"] = "0",
            ["feature-rx-copy"] = "1",
            ["feature-rx-flip"] = "0",
            ["feature-split-event-channels"] = "1",
        };
        if (CreditBytes is { } credit)
        {
            nodes["rate"] = string.Create(CultureInfo.InvariantCulture, $"{credit},{(long)CreditWindow!.Value.TotalMicroseconds}");
        }

        return nodes;
    }

    private Task ConnectAsync(XenBusConnectRequest request, CancellationToken cancellationToken)
    {
        var store = Hypervisor.XenStore;
        var fe = request.Device.FrontendPath;
        var txRef = ParseKey(request.FrontendKeys["tx-ring-ref"], "tx-ring-ref");
        var rxRef = ParseKey(request.FrontendKeys["rx-ring-ref"], "rx-ring-ref");
        var queues = store.Read(fe + "/multi-queue-num-queues");
        if (queues is not null && queues != "1")
        {
            throw new InvalidOperationException($"multi-queue-num-queues {queues} is not supported: the backend offers one queue (no multi-queue-max-queues)");
        }

        if (store.Read(fe + "/request-rx-copy") != "1")
        {
            throw new InvalidOperationException("the frontend did not write request-rx-copy = 1: receive by copy is the only receive mode (feature-rx-flip is 0)");
        }

        uint txPort, rxPort;
        var single = store.Read(fe + "/event-channel");
        var tx = store.Read(fe + "/event-channel-tx");
        var rx = store.Read(fe + "/event-channel-rx");
        if (tx is not null || rx is not null)
        {
            if (tx is null || rx is null)
            {
                throw new InvalidOperationException("split event channels need both event-channel-tx and event-channel-rx");
            }

            txPort = ParseKey(tx, "event-channel-tx");
            rxPort = ParseKey(rx, "event-channel-rx");
        }
        else
        {
            txPort = rxPort = ParseKey(single ?? throw new InvalidOperationException("the frontend wrote neither event-channel nor event-channel-tx/-rx"), "event-channel");
        }

        if (!Domain.IsAlive)
        {
            throw new InvalidOperationException($"domain {Domain.Id} is {Domain.State}");
        }

        var connection = NetifConnection.Open(this, txRef, rxRef, txPort, rxPort);
        _life.Adopt(connection, "rings are already connected");
        connection.Source = SourcePolicy;
        try
        {
            Switch.Attach(connection);
        }
        catch
        {
            _life.Abandon(connection);
            throw;
        }

        connection.Start();
        _life.Connected($"tx-ring-ref {txRef}, rx-ring-ref {rxRef}, event channel {(txPort == rxPort ? Decimal(txPort) : $"tx {txPort} rx {rxPort}")}");
        return Task.CompletedTask;
    }

    private static uint ParseKey(string value, string key) =>
        uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var v)
            ? v
            : throw new InvalidOperationException($"frontend {key} '{value}' is not a decimal number");

    /// <summary>Stops serving the rings (if they are served): the port leaves the switch, the rings are unmapped, the ports closed.</summary>
    internal Task DisconnectAsync(string why) => _life.DisconnectAsync(why);

    /// <summary>The frontend broke the ring protocol fatally: its domain is crashed (the crash disconnects the rings).</summary>
    internal void OnProtocolError(string what) => _life.OnProtocolError(what);

    internal void Log(string message) => _options.Log?.Invoke($"netback vif{Domain.Id}.{DevId}: {message}");

    /// <summary>Detaches the vif: disconnects connected rings (the port leaves the switch) and removes both XenStore directories.</summary>
    public ValueTask DisposeAsync() => _life.DetachAsync();
}
