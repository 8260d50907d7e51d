using System.Globalization;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>
/// A frontend's view of one split device on XenBus (<c>device/&lt;type&gt;/&lt;id&gt;</c> under the
/// domain's home): where the backend is, and the frontend half of the XenbusState handshake
/// (xen/io/xenbus.h): the frontend writes its own <c>state</c>, and waits on a watch for the
/// backend's. A frontend typically: <see cref="Probe"/>; wait for the backend's InitWait; publish
/// ring-ref / event-channel; <see cref="SwitchState"/>(Initialised); wait for Connected;
/// SwitchState(Connected).
/// </summary>
public sealed class XenBusDevice
{
    private bool _backendChanged;
    private string? _watchToken;

    internal XenBusDevice(XenBusClient client, string type, string id)
    {
        Client = client;
        Type = type;
        Id = id;
        NodeName = $"device/{type}/{id}";
    }

    /// <summary>The connection.</summary>
    public XenBusClient Client { get; }

    /// <summary>The device type ("vbd", "vif", "console", ...).</summary>
    public string Type { get; }

    /// <summary>The device id within its type.</summary>
    public string Id { get; }

    /// <summary>The frontend directory, relative to the domain's home: <c>device/&lt;type&gt;/&lt;id&gt;</c>.</summary>
    public string NodeName { get; }

    /// <summary>The backend's directory (from the frontend's <c>backend</c> node), after <see cref="Probe"/>.</summary>
    public string BackendPath { get; private set; } = "";

    /// <summary>The backend's domain (from <c>backend-id</c>), after <see cref="Probe"/>.</summary>
    public ushort BackendId { get; private set; }

    /// <summary>Opens a device by type and id (for one not listed by <see cref="XenBusClient.EnumerateDevices"/>).</summary>
    public static XenBusDevice Open(XenBusClient client, string type, string id) => new(client, type, id);

    /// <summary>Reads <c>backend</c> and <c>backend-id</c> and watches the backend's <c>state</c>.</summary>
    public long Probe()
    {
        var rc = Client.Read($"{NodeName}/backend", out var backend);
        if (rc < 0)
        {
            return rc;
        }

        rc = Client.ReadInt($"{NodeName}/backend-id", out var backendId);
        if (rc < 0)
        {
            return rc;
        }

        BackendPath = backend;
        BackendId = (ushort)backendId;
        if (_watchToken is null)
        {
            rc = Client.Watch($"{BackendPath}/state", _ => _backendChanged = true, out var token);
            if (rc < 0)
            {
                return rc;
            }

            _watchToken = token;
        }

        return 0;
    }

    /// <summary>Writes <c>&lt;key&gt;</c> in the frontend directory.</summary>
    public long WriteOwn(string key, string value) => Client.Write($"{NodeName}/{key}", value);

    /// <summary>Reads <c>&lt;key&gt;</c> from the frontend directory.</summary>
    public long ReadOwn(string key, out string value) => Client.Read($"{NodeName}/{key}", out value);

    /// <summary>Reads <c>&lt;key&gt;</c> from the backend directory (feature-*, sectors, mac, ...).</summary>
    public long ReadBackend(string key, out string value) => Client.Read($"{BackendPath}/{key}", out value);

    /// <summary>Switches the frontend's state (xenbus_switch_state).</summary>
    public long SwitchState(XenbusState state) => WriteOwn("state", ((int)state).ToString(CultureInfo.InvariantCulture));

    /// <summary>The frontend's own state as stored.</summary>
    public XenbusState OwnState => Client.ReadInt($"{NodeName}/state", out var s) < 0 ? XenbusState.Unknown : (XenbusState)s;

    /// <summary>The backend's state (Unknown when missing or not a number).</summary>
    public XenbusState BackendState => Client.ReadInt($"{BackendPath}/state", out var s) < 0 ? XenbusState.Unknown : (XenbusState)s;

    /// <summary>
    /// Waits (blocking the vCPU between watch events) until the backend's state satisfies
    /// <paramref name="done"/>, or until <paramref name="deadlineNs"/> (absolute system time, 0 =
    /// none). Returns the last state seen and whether it satisfied. Not from a watch callback.
    /// </summary>
    public bool WaitForBackendState(Func<XenbusState, bool> done, out XenbusState state, ulong deadlineNs = 0)
    {
        ArgumentNullException.ThrowIfNull(done);
        var guest = GuestOf(Client);
        while (true)
        {
            _backendChanged = false;
            state = BackendState;
            if (done(state))
            {
                return true;
            }

            if (!guest.WaitFor(() => _backendChanged, deadlineNs))
            {
                state = BackendState;
                return done(state);
            }
        }
    }

    /// <summary>
    /// As <see cref="WaitForBackendState(Func{XenbusState, bool}, out XenbusState, ulong)"/> with a timeout from now, for a frontend's handshake:
    /// returns the state reached, or throws naming the device, <paramref name="what"/> it waited
    /// for and the state the backend is in.
    /// </summary>
    /// <exception cref="InvalidOperationException">The backend did not get there within <paramref name="timeout"/>.</exception>
    public XenbusState WaitForBackendState(Func<XenbusState, bool> done, string what, TimeSpan timeout)
    {
        var deadline = GuestOf(Client).Clock.SystemTimeNs() + ((ulong)timeout.Ticks * 100);
        return WaitForBackendState(done, out var state, deadline)
            ? state
            : throw new InvalidOperationException($"{NodeName}: the backend did not reach {what} within {timeout} (it is {state})");
    }

    /// <summary>Throws, naming the device, <paramref name="what"/> was being done and the errno, when <paramref name="rc"/> is negative.</summary>
    /// <exception cref="InvalidOperationException"><paramref name="rc"/> is a Xen errno.</exception>
    public void Check(long rc, string what)
    {
        if (rc < 0)
        {
            throw new InvalidOperationException($"{NodeName}: {what} failed with {XenGuest.ErrnoName(rc)}");
        }
    }

    /// <summary>Stops watching the backend.</summary>
    public long Close()
    {
        if (_watchToken is not { } token)
        {
            return 0;
        }

        _watchToken = null;
        return Client.Unwatch($"{BackendPath}/state", token);
    }

    private static XenGuest GuestOf(XenBusClient client) => client.Guest;
}
