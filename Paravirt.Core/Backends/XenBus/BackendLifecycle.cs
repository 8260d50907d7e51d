using Paravirt.Core.Domains;

namespace Paravirt.Core.Backends.XenBus;

/// <summary>What a split-driver backend serves while a frontend is connected (a blkif ring, a netif ring pair).</summary>
internal interface IBackendConnection
{
    /// <summary>Stops serving: in-flight work finishes, the rings are unmapped, the ports closed.</summary>
    Task StopAsync();
}

/// <summary>The counters every backend keeps of its connection's life.</summary>
internal interface IBackendCounters
{
    void CountConnect();

    void CountDisconnect();

    void CountProtocolError();
}

/// <summary>
/// The life of one backend device of one domain, shared by blkback and netback: its XenBus
/// device, at most one served connection at a time, connect and disconnect with awaitable
/// states, a fatal protocol error crashing the frontend's domain, the domain's end disconnecting
/// (shutdown, crash) or detaching (death) the device, and a detach that runs once.
/// </summary>
/// <remarks>
/// A member of each backend rather than its base class: the backends are public and their
/// connection types internal, and a public type cannot derive from a base generic in an internal one.
/// </remarks>
internal sealed class BackendLifecycle<TConnection>
    where TConnection : class, IBackendConnection
{
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource _detached = Pending();
    private readonly Domain _domain;
    private readonly string _noun;
    private readonly string _device;
    private readonly IBackendCounters _counters;
    private readonly Action<string> _log;
    private readonly Func<ValueTask> _dispose;
    private XenBusBackendDevice? _xenbus;
    private TConnection? _connection;
    private TaskCompletionSource _disconnected = Completed();
    private TaskCompletionSource _connected = Pending();
    private int _detaching;

    /// <param name="domain">The frontend's domain.</param>
    /// <param name="noun">What the device is to a reader: "disk", "vif".</param>
    /// <param name="device">The device in a crash reason: "blkback xvda (vbd 51712)".</param>
    /// <param name="counters">The backend's connect, disconnect and protocol-error counters.</param>
    /// <param name="log">The backend's diagnostics.</param>
    /// <param name="dispose">The backend's whole detach (its <c>DisposeAsync</c>), run when the domain dies.</param>
    public BackendLifecycle(Domain domain, string noun, string device, IBackendCounters counters, Action<string> log, Func<ValueTask> dispose)
    {
        _domain = domain;
        _noun = noun;
        _device = device;
        _counters = counters;
        _log = log;
        _dispose = dispose;
    }

    public XenBusBackendDevice Xenbus => _xenbus ?? throw new InvalidOperationException($"the {_noun} is still being attached");

    /// <summary>The connection being served, if any.</summary>
    public TConnection? Connection
    {
        get
        {
            lock (_gate)
            {
                return _connection;
            }
        }
    }

    public Task Detached => _detached.Task;

    public Task WaitForConnectAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return _connected.Task.WaitAsync(cancellationToken);
        }
    }

    public Task WaitForDisconnectAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            return _disconnected.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Creates the XenBus device and starts following the domain's state. A domain that died while
    /// the device was being created (before its state change could be seen) detaches it at once.
    /// </summary>
    public void Register(Func<XenBusBackendDevice> create)
    {
        _domain.StateChanged += OnDomainStateChanged;
        try
        {
            _xenbus = create();
        }
        catch
        {
            _domain.StateChanged -= OnDomainStateChanged;
            throw;
        }

        if (!_domain.IsAlive)
        {
            _ = Task.Run(DetachInBackgroundAsync);
        }
    }

    /// <summary>
    /// Takes <paramref name="connection"/> as the one served, or stops it and throws when one is
    /// already served (<paramref name="already"/> says so) or the device is being detached.
    /// </summary>
    public void Adopt(TConnection connection, string already)
    {
        lock (_gate)
        {
            if (_connection is not null || Volatile.Read(ref _detaching) != 0)
            {
                _ = connection.StopAsync();
                throw new InvalidOperationException(_connection is not null ? already : $"the {_noun} is being detached");
            }

            _connection = connection;
            _disconnected = Pending();
        }
    }

    /// <summary>Undoes <see cref="Adopt"/> for a connection that could not start; stops it.</summary>
    public void Abandon(TConnection connection)
    {
        lock (_gate)
        {
            if (_connection == connection)
            {
                _connection = null;
                _disconnected.TrySetResult();
            }
        }

        _ = connection.StopAsync();
    }

    /// <summary>The adopted connection is running: counted, logged, awaited connects released.</summary>
    public void Connected(string description)
    {
        _counters.CountConnect();
        _log($"connected: {description}");
        lock (_gate)
        {
            _connected.TrySetResult();
        }

        if (!_domain.IsAlive)
        {
            _ = DisconnectAsync($"domain {_domain.Id} is {_domain.State}");
        }
    }

    /// <summary>Stops serving the connection (if one is served). Concurrent callers all wait for the same stop.</summary>
    public async Task DisconnectAsync(string why)
    {
        TConnection? connection;
        TaskCompletionSource done;
        lock (_gate)
        {
            connection = _connection;
            _connection = null;
            done = _disconnected;
            if (connection is not null)
            {
                _connected = Pending();
            }
        }

        if (connection is null)
        {
            await done.Task.ConfigureAwait(false); // someone else is (or was) disconnecting it
            return;
        }

        await connection.StopAsync().ConfigureAwait(false);
        _counters.CountDisconnect();
        _log($"disconnected: {why}");
        done.TrySetResult();
    }

    /// <summary>The frontend broke the protocol fatally: its domain is crashed (the crash disconnects it).</summary>
    public void OnProtocolError(string what)
    {
        _counters.CountProtocolError();
        var reason = $"{_device}: {what}";
        _log(reason);
        _domain.Crash(reason);
    }

    /// <summary>
    /// Detaches once: stops following the domain, removes the XenBus device, disconnects, then runs
    /// <paramref name="release"/> (the backend's own resources). A second caller waits for the first.
    /// </summary>
    public async ValueTask DetachAsync(Func<ValueTask>? release = null)
    {
        if (Interlocked.Exchange(ref _detaching, 1) != 0)
        {
            await _detached.Task.ConfigureAwait(false);
            return;
        }

        _domain.StateChanged -= OnDomainStateChanged;
        try
        {
            if (_xenbus is not null)
            {
                await _xenbus.DestroyAsync().ConfigureAwait(false);
            }

            await DisconnectAsync($"the {_noun} was detached").ConfigureAwait(false);
            if (release is not null)
            {
                await release().ConfigureAwait(false);
            }
        }
        finally
        {
            _detached.TrySetResult();
        }
    }

    private void OnDomainStateChanged(object? sender, DomainState state)
    {
        // Raised on whichever thread changed the state (a vCPU, a backend worker): never block it.
        switch (state)
        {
            case DomainState.Crashed or DomainState.Shutdown:
                _ = Task.Run(() => DisconnectAsync($"domain {_domain.Id} {state.ToString().ToLowerInvariant()}"));
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
            await _dispose().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // nobody awaits a detach the domain's death started: report, do not lose it
        catch (Exception e)
#pragma warning restore CA1031
        {
            _log($"detaching after the domain died failed: {e.Message}");
        }
    }

    private static TaskCompletionSource Pending() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static TaskCompletionSource Completed()
    {
        var t = Pending();
        t.SetResult();
        return t;
    }
}
