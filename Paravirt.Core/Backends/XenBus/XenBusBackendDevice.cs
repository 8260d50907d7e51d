using System.Globalization;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;

namespace Paravirt.Core.Backends.XenBus;

/// <summary>What the backend read from the frontend's directory when the frontend became ready.</summary>
/// <param name="Device">The device being connected.</param>
/// <param name="FrontendKeys">The requested keys (relative to the frontend directory) and their values.</param>
public sealed record XenBusConnectRequest(XenBusBackendDevice Device, IReadOnlyDictionary<string, string> FrontendKeys);

/// <summary>How a <see cref="XenBusBackendDevice"/> behaves: the keys it advertises and reads, and what it does on connect/disconnect.</summary>
public sealed class XenBusBackendOptions
{
    /// <summary>Keys written into the backend directory before it moves to InitWait (feature-*, …).</summary>
    public IReadOnlyDictionary<string, string> Features { get; init; } = new Dictionary<string, string>();

    /// <summary>Keys written into the frontend directory (owned by the frontend) when it is created, as libxl's virtual-device, device-type.</summary>
    public IReadOnlyDictionary<string, string> FrontendEntries { get; init; } = new Dictionary<string, string>();

    /// <summary>Keys of the frontend directory read when the frontend is Initialised (ring-ref, event-channel …); all are required.</summary>
    public IReadOnlyList<string> FrontendKeys { get; init; } = [];

    /// <summary>Called once per connection with the frontend's keys; on success the backend goes Connected, on an exception Closing.</summary>
    public required Func<XenBusConnectRequest, CancellationToken, Task> Connect { get; init; }

    /// <summary>Called when a connected device is torn down (frontend Closing/Closed, or destroy).</summary>
    public Func<XenBusBackendDevice, CancellationToken, Task>? Disconnect { get; init; }

    /// <summary>Diagnostics: ignored frontend states, failed connects …</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// The backend (host, domain 0) end of a split device on XenBus, laid out as libxl's
/// libxl__device_generic_add does and driven as Linux/QEMU backends drive it: the frontend's
/// <c>state</c> node is watched and the backend's own <c>state</c> follows
/// Initialising → InitWait → Connected → Closing → Closed (→ InitWait on reconnect).
/// </summary>
/// <remarks>
/// Closing takes two steps, as in Linux's blkback and netback: a frontend that goes Closing gets
/// the device disconnected and the backend to Closing, and stays there until the frontend goes
/// Closed; only then is the backend Closed. A frontend shutting down (Linux's
/// <c>xenbus_dev_shutdown</c>) waits for the backend's Closing and never goes Closed, so a backend
/// that went straight to Closed would leave it waiting out its timeout.
/// </remarks>
public sealed class XenBusBackendDevice : IAsyncDisposable
{
    private readonly HostXenStore store;
    private readonly XenBusBackendOptions options;
    private readonly XenStoreWatch watch;
    private readonly CancellationTokenSource stopping = new();
    private readonly Task loop;
    private int destroyed;

    private XenBusBackendDevice(Hypervisor hv, ushort frontendDomain, string type, uint devid, XenBusBackendOptions options)
    {
        store = hv.XenStore;
        this.options = options;
        FrontendDomain = frontendDomain;
        Type = type;
        DevId = devid;
        FrontendPath = FrontendPathOf(frontendDomain, type, devid);
        BackendPath = BackendPathOf(frontendDomain, type, devid);

        WriteDirectories();
        WriteFeaturesAndInitWait();
        watch = store.Watch(FrontendPath + "/state", "xenbus-backend");
        loop = Task.Run(RunAsync);
    }

    public ushort FrontendDomain { get; }

    public string Type { get; }

    public uint DevId { get; }

    /// <summary><c>/local/domain/&lt;fe&gt;/device/&lt;type&gt;/&lt;devid&gt;</c>.</summary>
    public string FrontendPath { get; }

    /// <summary><c>/local/domain/0/backend/&lt;type&gt;/&lt;fe&gt;/&lt;devid&gt;</c>.</summary>
    public string BackendPath { get; }

    /// <summary>The state the backend last wrote.</summary>
    public XenbusState State { get; private set; }

    /// <summary>Frontend state values that were not a XenbusState and were ignored.</summary>
    public int IgnoredStates => Volatile.Read(ref ignoredStates);

    private int ignoredStates;

    public static string FrontendPathOf(ushort frontendDomain, string type, uint devid) =>
        string.Create(CultureInfo.InvariantCulture, $"{HostXenStore.DomainPath(frontendDomain)}/device/{type}/{devid}");

    public static string BackendPathOf(ushort frontendDomain, string type, uint devid) =>
        string.Create(CultureInfo.InvariantCulture, $"{HostXenStore.DomainPath(0)}/backend/{type}/{frontendDomain}/{devid}");

    /// <summary>
    /// Writes the frontend and backend directories (both Initialising), then the backend's features
    /// and InitWait, and starts following the frontend's state.
    /// </summary>
    public static XenBusBackendDevice Create(Hypervisor hv, ushort frontendDomain, string type, uint devid, XenBusBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(hv);
        ArgumentException.ThrowIfNullOrEmpty(type);
        ArgumentNullException.ThrowIfNull(options);
        if (type.Contains('/', StringComparison.Ordinal))
        {
            throw new ArgumentException("a device type is one path element", nameof(type));
        }

        return new XenBusBackendDevice(hv, frontendDomain, type, devid, options);
    }

    private static string Decimal(XenbusState s) => ((int)s).ToString(CultureInfo.InvariantCulture);

    private void WriteDirectories()
    {
        var fe = FrontendDomain.ToString(CultureInfo.InvariantCulture);
        // libxl: frontend_perms = owner the frontend, read for the backend; backend_perms = owner
        // the backend, read for the frontend.
        string[] frontendPerms = ["n" + fe, "r0"];
        string[] backendPerms = ["n0", "r" + fe];
        store.Transaction(tx =>
        {
            RmIfPresent(tx, FrontendPath);

            tx.Mkdir(FrontendPath);
            tx.SetPerms(FrontendPath, frontendPerms);
            WriteWithPerms(tx, FrontendPath + "/backend", BackendPath, frontendPerms);
            WriteWithPerms(tx, FrontendPath + "/backend-id", "0", frontendPerms);
            WriteWithPerms(tx, FrontendPath + "/state", Decimal(XenbusState.Initialising), frontendPerms);
            foreach (var (key, value) in options.FrontendEntries)
            {
                WriteWithPerms(tx, $"{FrontendPath}/{key}", value, frontendPerms);
            }

            RmIfPresent(tx, BackendPath);

            tx.Mkdir(BackendPath);
            tx.SetPerms(BackendPath, backendPerms);
            tx.Write(BackendPath + "/frontend", FrontendPath);
            tx.Write(BackendPath + "/frontend-id", fe);
            tx.Write(BackendPath + "/online", "1");
            tx.Write(BackendPath + "/state", Decimal(XenbusState.Initialising));
        });
        State = XenbusState.Initialising;
    }

    private static void RmIfPresent(XenStoreTransaction tx, string path)
    {
        try
        {
            tx.Rm(path);
        }
        catch (XenStoreException e) when (e.Error == "ENOENT")
        {
            // its parent is missing too
        }
    }

    private static void WriteWithPerms(XenStoreTransaction tx, string path, string value, string[] perms)
    {
        tx.Write(path, value);
        tx.SetPerms(path, perms);
    }

    private void WriteFeaturesAndInitWait()
    {
        State = XenbusState.InitWait;
        store.Transaction(tx =>
        {
            foreach (var (key, value) in options.Features)
            {
                tx.Write($"{BackendPath}/{key}", value);
            }

            tx.Write(BackendPath + "/state", Decimal(XenbusState.InitWait));
        });
    }

    // State is set before the store is written so that whoever sees the node sees the property too.
    private void SwitchState(XenbusState s)
    {
        State = s;
        store.Write(BackendPath + "/state", Decimal(s));
    }

    private void Log(string message) => options.Log?.Invoke($"xenbus {BackendPath}: {message}");

    private async Task RunAsync()
    {
        try
        {
            await foreach (var _ in watch.Events.ReadAllAsync(stopping.Token).ConfigureAwait(false))
            {
                try
                {
                    await OnFrontendChangedAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is XenStoreException or InvalidOperationException)
                {
                    Log($"handling a frontend state change failed: {e.Message}");
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    private async Task OnFrontendChangedAsync()
    {
        var raw = store.Read(FrontendPath + "/state");
        XenbusState fe;
        if (raw is null)
        {
            // The frontend's directory went (its domain was destroyed): as a Linux backend does for
            // Unknown, tear down, but do not offer a new connection to nobody.
            Log("frontend state node is gone");
            fe = XenbusState.Closed;
        }
        else if (!int.TryParse(raw, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || !Enum.IsDefined((XenbusState)n))
        {
            Interlocked.Increment(ref ignoredStates);
            Log($"ignoring frontend state '{raw}'");
            return;
        }
        else
        {
            fe = (XenbusState)n;
        }

        switch (fe)
        {
            case XenbusState.Initialised or XenbusState.Connected when State == XenbusState.InitWait:
                await ConnectAsync().ConfigureAwait(false);
                break;
            case XenbusState.Closing when State is not (XenbusState.Closing or XenbusState.Closed):
                await CloseAsync(closed: false).ConfigureAwait(false);
                break;
            case XenbusState.Closed when State is not XenbusState.Closed:
                await CloseAsync(closed: true).ConfigureAwait(false);
                break;
            case XenbusState.Initialising or XenbusState.Unknown when State is XenbusState.Closed or XenbusState.Closing && raw is not null:
                // Reconnect: the frontend starts over. From Closing it went Closed and on before
                // this watch fired (a watch reports the node, not every value it held).
                await CloseAsync(closed: true).ConfigureAwait(false);
                WriteFeaturesAndInitWait();
                break;
            default:
                break;
        }
    }

    /// <summary>Disconnects a connected device, then Closing, and Closed when the frontend is (<paramref name="closed"/>).</summary>
    private async Task CloseAsync(bool closed)
    {
        if (State == XenbusState.Connected)
        {
            await DisconnectAsync().ConfigureAwait(false);
        }

        if (State is not (XenbusState.Closing or XenbusState.Closed))
        {
            SwitchState(XenbusState.Closing);
        }

        if (closed && State != XenbusState.Closed)
        {
            SwitchState(XenbusState.Closed);
        }
    }

    private async Task ConnectAsync()
    {
        var keys = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in options.FrontendKeys)
        {
            var value = store.Read($"{FrontendPath}/{key}");
            if (value is null)
            {
                Fatal($"frontend key '{key}' is missing");
                return;
            }

            keys[key] = value;
        }

        try
        {
            await options.Connect(new XenBusConnectRequest(this, keys), stopping.Token).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // a failing connect is reported through XenStore, as xenbus_dev_fatal does
        catch (Exception e) when (!stopping.IsCancellationRequested)
#pragma warning restore CA1031
        {
            Fatal($"connect failed: {e.Message}");
            return;
        }

        SwitchState(XenbusState.Connected);
    }

    private async Task DisconnectAsync()
    {
        if (options.Disconnect is null)
        {
            return;
        }

        try
        {
            await options.Disconnect(this, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the device is going away whatever the callback says
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log($"disconnect failed: {e.Message}");
        }
    }

    // xenbus_dev_fatal: the reason in the backend's error node, then Closing.
    private void Fatal(string message)
    {
        Log(message);
        store.Write(BackendPath + "/error", message);
        SwitchState(XenbusState.Closing);
    }

    /// <summary>
    /// Stops following the frontend, disconnects a connected device and removes both directories
    /// (as libxl's device removal does once the backend is done).
    /// </summary>
    public async Task DestroyAsync()
    {
        if (Interlocked.Exchange(ref destroyed, 1) != 0)
        {
            return;
        }

        watch.Dispose();
        await stopping.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(false);
        if (State == XenbusState.Connected)
        {
            await DisconnectAsync().ConfigureAwait(false);
        }

        store.Transaction(tx =>
        {
            RmIfPresent(tx, FrontendPath); // gone already if the frontend's domain was destroyed
            RmIfPresent(tx, BackendPath);
        });
        stopping.Dispose();
    }

    public ValueTask DisposeAsync() => new(DestroyAsync());
}
