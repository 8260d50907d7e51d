using System.Globalization;
using System.Text.Json;
using Paravirt.Cli.Config;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;

namespace Paravirt.Cli.Host;

/// <summary>
/// What <c>paravirt host</c> runs: one hypervisor and the domains created on it, each under a
/// <see cref="DomainSupervisor"/> (so <c>on_*</c> actions work as under <c>run</c>) with a
/// <see cref="ConsoleHub"/>, and the answers to xl's verbs on the control socket
/// (<see cref="HandleAsync"/>). <see cref="StopAsync"/> shuts everything down cleanly.
/// </summary>
internal sealed class DomainHost : IDisposable
{
    /// <summary>How long a guest has to acknowledge <c>control/shutdown</c>: libxl's pvcontrol timeout.</summary>
    public static readonly TimeSpan DefaultAcknowledgeTimeout = TimeSpan.FromSeconds(60);

    private readonly Hypervisor _hv;
    private readonly TextWriter _log;
    private readonly string? _consoleLogDirectory;
    private readonly int _maxRestarts;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Hosted> _byName = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _interrupt = new();
    private bool _stopping;

    /// <summary>A created domain: its supervisor, its console, and the task that follows it to its end.</summary>
    private sealed class Hosted(DomainSupervisor supervisor, ConsoleHub console)
    {
        public DomainSupervisor Supervisor { get; } = supervisor;

        public ConsoleHub Console { get; } = console;

        public Task Run { get; set; } = Task.CompletedTask;

        public Domain? Domain => Supervisor.Current?.Domain;
    }

    public DomainHost(Hypervisor hv, TextWriter log, string? consoleLogDirectory, int maxRestarts, string socketPath)
    {
        _hv = hv;
        _log = log;
        _consoleLogDirectory = consoleLogDirectory;
        _maxRestarts = maxRestarts;
        SocketPath = socketPath;
    }

    public string SocketPath { get; }

    /// <summary>The domain table (<c>list</c>).</summary>
    public IReadOnlyList<DomainRow> Rows() => DomainTable.Snapshot(_hv, Environment.ProcessId);

    /// <summary>Answers one request on its connection.</summary>
    public async Task HandleAsync(ControlRequest request, ControlConnection connection, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(connection);
        if (request.Verb == "console")
        {
            await ConsoleAsync(request, connection, ct).ConfigureAwait(false);
            return;
        }

        var reply = request.Verb switch
        {
            "create" => await CreateAsync(request).ConfigureAwait(false),
            "shutdown" => await ShutdownAsync(request, "poweroff", ct).ConfigureAwait(false),
            "reboot" => await ShutdownAsync(request, "reboot", ct).ConfigureAwait(false),
            "destroy" => await DestroyAsync(request).ConfigureAwait(false),
            "pause" => Pause(request, pause: true),
            "unpause" => Pause(request, pause: false),
            "vcpu-list" => VcpuList(request),
            "info" => Info(),
            _ => ControlReply.Error(ExitCodes.Usage, $"unknown verb '{request.Verb}'; expected create, console, shutdown, reboot, destroy, pause, unpause, vcpu-list or info"),
        };
        await connection.ReplyAsync(reply, ct).ConfigureAwait(false);
    }

    // ------------------------------------------------------------------ create

    private async Task<string> CreateAsync(ControlRequest request)
    {
        if (request.Config is not { Length: > 0 } path)
        {
            return ControlReply.Error(ExitCodes.Usage, "create needs the config file's path");
        }

        DomainSpec spec;
        try
        {
            spec = DomainSpec.Load(path);
        }
        catch (ConfigException e)
        {
            return ControlReply.Error(e.NotSupported ? ExitCodes.NotSupported : ExitCodes.Config, e.Message);
        }

        if (DomainSupervisor.MissingFile(spec) is { } missing)
        {
            return ControlReply.Error(ExitCodes.Config, missing);
        }

        var warnings = spec.Ignored.Select(s => $"{spec.File}:{s.Line}: warning: '{s.Key}' is not used by paravirt (ignored)").ToList();
        Hosted hosted;
        lock (_lock)
        {
            if (_stopping)
            {
                return ControlReply.Error(ExitCodes.Refused, "the host is stopping; it creates no more domains");
            }

            if (_byName.TryGetValue(spec.Name, out var existing))
            {
                var id = existing.Domain is { } d ? string.Create(CultureInfo.InvariantCulture, $" (id {d.Id})") : "";
                return ControlReply.Error(ExitCodes.Refused, $"{spec.File}: a domain named '{spec.Name}' already exists{id}; expected a name no domain of this host has");
            }

            ConsoleHub console;
            try
            {
                console = new ConsoleHub(spec.Name, _consoleLogDirectory);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return ControlReply.Error(ExitCodes.SetupFailed, $"cannot open the console log in {_consoleLogDirectory}: {e.Message}");
            }

            var supervisor = new DomainSupervisor(spec, _hv, _log, _maxRestarts, console.PumpAsync) { PreservedUntil = "'paravirt destroy' or the host's end" };
            hosted = new Hosted(supervisor, console);
            _byName.Add(spec.Name, hosted);
            hosted.Run = Task.Run(() => FollowAsync(hosted));
        }

        var failure = await hosted.Supervisor.FirstBoot.ConfigureAwait(false);
        if (failure is not null)
        {
            await hosted.Run.ConfigureAwait(false); // the name is free again before the client hears
            return ControlReply.Error(failure.Code, failure.Error);
        }

        var dom = hosted.Supervisor.FirstDomain!;
        return ControlReply.Ok(w =>
        {
            w.WriteNumber("id", dom.Id);
            w.WriteString("name", dom.Name);
            w.WriteStartArray("warnings");
            foreach (var line in warnings)
            {
                w.WriteStringValue(line);
            }

            w.WriteEndArray();
        });
    }

    /// <summary>Follows a created domain to its end, then forgets it.</summary>
    private async Task FollowAsync(Hosted hosted)
    {
        var end = await hosted.Supervisor.RunAsync(_interrupt.Token).ConfigureAwait(false);
        if (end.SetupError is { } error)
        {
            await _log.WriteLineAsync($"paravirt: {hosted.Supervisor.Name}: {error}").ConfigureAwait(false);
        }

        lock (_lock)
        {
            _byName.Remove(hosted.Supervisor.Name);
        }

        hosted.Console.Dispose();
    }

    // ------------------------------------------------------------------ finding a domain

    /// <summary>xl's rule: all digits is a domain id, anything else a name.</summary>
    private Hosted? Find(string? domain)
    {
        if (string.IsNullOrEmpty(domain))
        {
            return null;
        }

        lock (_lock)
        {
            if (domain.All(char.IsAsciiDigit))
            {
                return int.TryParse(domain, NumberStyles.None, CultureInfo.InvariantCulture, out var id)
                    ? _byName.Values.FirstOrDefault(h => h.Domain?.Id == id)
                    : null;
            }

            return _byName.GetValueOrDefault(domain);
        }
    }

    private static string NoSuchDomain(string? domain) =>
        ControlReply.Error(ExitCodes.NoSuchDomain, $"no domain '{domain}' on this host (by {(domain is { Length: > 0 } d && d.All(char.IsAsciiDigit) ? "id" : "name")}); expected a name or id that 'paravirt list' shows");

    private static string Describe(Domain d) => string.Create(CultureInfo.InvariantCulture, $"domain {d.Id} ({d.Name})");

    private static bool IsAlive(Domain d) => d.State is DomainState.Created or DomainState.Running or DomainState.Paused;

    // ------------------------------------------------------------------ console

    private async Task ConsoleAsync(ControlRequest request, ControlConnection connection, CancellationToken ct)
    {
        if (Find(request.Domain) is not { } hosted || hosted.Domain is not { } dom)
        {
            await connection.ReplyAsync(NoSuchDomain(request.Domain), ct).ConfigureAwait(false);
            return;
        }

        using var client = hosted.Console.Attach();
        await connection.ReplyAsync(ControlReply.Ok(w =>
        {
            w.WriteNumber("id", dom.Id);
            w.WriteString("name", dom.Name);
        }), ct).ConfigureAwait(false);
        using var detached = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var output = CopyOutputAsync(client, connection, detached.Token);

        // Input runs to the client's end (it detached, or went away), so what it typed before it
        // left still reaches the guest; output stops then. When the domain goes first, output
        // ends and the client, seeing the end, closes.
        await CopyInputAsync(hosted.Console, connection, ct).ConfigureAwait(false);
        await detached.CancelAsync().ConfigureAwait(false);
        await output.ConfigureAwait(false);
    }

    /// <summary>The backlog, then live output, until the domain is gone (then the client sees the end) or the client is.</summary>
    private static async Task CopyOutputAsync(ConsoleClient client, ControlConnection connection, CancellationToken ct)
    {
        try
        {
            await connection.WriteAsync(client.Backlog, ct).ConfigureAwait(false);
            while (await client.NextAsync(ct).ConfigureAwait(false) is { } chunk)
            {
                await connection.WriteAsync(chunk, ct).ConfigureAwait(false);
            }

            connection.EndOutput();
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            // The client went away (or the host is stopping): the others and the guest go on.
        }
    }

    /// <summary>The client's bytes to the guest until it closes its side (detached) or goes away.</summary>
    private static async Task CopyInputAsync(ConsoleHub console, ControlConnection connection, CancellationToken ct)
    {
        var buffer = new byte[1024];
        try
        {
            int n;
            while ((n = await connection.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                await console.WriteInputAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
        }
    }

    // ------------------------------------------------------------------ shutdown, reboot, destroy

    /// <summary>
    /// xl shutdown / reboot: writes <c>control/shutdown</c> in the guest's XenStore home, as libxl's
    /// pvcontrol does, and waits (bounded) for the guest to acknowledge by emptying the node, as
    /// Linux's drivers/xen/manage.c does before it acts; then, with <c>wait</c>, until the domain
    /// has ended and its <c>on_*</c> action was taken. A guest that never acknowledges is left
    /// running with the request in place (libxl's ERROR_TIMEDOUT).
    /// </summary>
    private async Task<string> ShutdownAsync(ControlRequest request, string what, CancellationToken ct)
    {
        if (Find(request.Domain) is not { } hosted || hosted.Supervisor.Current is not { } incarnation)
        {
            return NoSuchDomain(request.Domain);
        }

        var dom = incarnation.Domain;
        if (!IsAlive(dom))
        {
            return ControlReply.Error(ExitCodes.Refused, $"{Describe(dom)} has ended ({DomainRow.Of(dom, 0).State}, kept by on_* = preserve); expected a running domain (destroy removes it)");
        }

        var timeout = request.TimeoutSeconds is > 0 and var t ? TimeSpan.FromSeconds(t) : DefaultAcknowledgeTimeout;
        var path = $"{HostXenStore.DomainPath(dom.Id)}/control/shutdown";
        bool acknowledged;
        try
        {
            using var watch = _hv.XenStore.Watch(path, "pvcontrol");
            _hv.XenStore.Write(path, what);
            await _log.WriteLineAsync($"paravirt: {Describe(dom)}: control/shutdown = {what}").ConfigureAwait(false);
            acknowledged = await WaitForAcknowledgementAsync(dom, path, watch, timeout, ct).ConfigureAwait(false);
        }
        catch (XenStoreException e)
        {
            return ControlReply.Error(ExitCodes.Refused, $"{Describe(dom)}: cannot write {path}: {e.Message}");
        }

        if (!acknowledged)
        {
            return ControlReply.Error(
                ExitCodes.NotAcknowledged,
                string.Create(CultureInfo.InvariantCulture, $"{Describe(dom)} did not acknowledge the {what} request within {timeout.TotalSeconds:0.###} s: its kernel does not act on control/shutdown (Linux's Xen drivers do; managed:echo does); it is still running; expected a guest that watches control/shutdown, or use 'paravirt destroy'"));
        }

        if (!request.Wait)
        {
            return ControlReply.Ok(w => w.WriteString("message", $"{Describe(dom)} acknowledged the {what} request"));
        }

        var ended = await incarnation.Ended.WaitAsync(ct).ConfigureAwait(false);
        return ControlReply.Ok(w => w.WriteString("message", $"{Describe(dom)} {ended}"));
    }

    /// <summary>True once the node is empty or gone (acknowledged) or the domain has ended anyway; false after <paramref name="timeout"/>.</summary>
    private async Task<bool> WaitForAcknowledgementAsync(Domain dom, string path, XenStoreWatch watch, TimeSpan timeout, CancellationToken ct)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bounded.CancelAfter(timeout);
        var exit = dom.WaitForShutdownAsync(CancellationToken.None);
        try
        {
            while (true)
            {
                if (exit.IsCompleted || string.IsNullOrEmpty(ReadOrNull(dom, path)))
                {
                    return true;
                }

                var changed = watch.Events.WaitToReadAsync(bounded.Token).AsTask();
                await Task.WhenAny(changed, exit).WaitAsync(bounded.Token).ConfigureAwait(false);
                while (watch.Events.TryRead(out _))
                {
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return exit.IsCompleted;
        }

        string? ReadOrNull(Domain dom, string path)
        {
            try
            {
                return dom.State == DomainState.Dead ? null : _hv.XenStore.Read(path);
            }
            catch (XenStoreException)
            {
                return null;
            }
        }
    }

    private async Task<string> DestroyAsync(ControlRequest request)
    {
        if (Find(request.Domain) is not { } hosted || hosted.Domain is not { } dom)
        {
            return NoSuchDomain(request.Domain);
        }

        var name = Describe(dom);
        hosted.Supervisor.RequestDestroy();
        await hosted.Run.ConfigureAwait(false);
        return ControlReply.Ok(w => w.WriteString("message", $"{name} destroyed"));
    }

    // ------------------------------------------------------------------ pause, unpause

    private string Pause(ControlRequest request, bool pause)
    {
        if (Find(request.Domain) is not { } hosted || hosted.Domain is not { } dom)
        {
            return NoSuchDomain(request.Domain);
        }

        try
        {
            if (pause)
            {
                dom.Pause();
            }
            else
            {
                dom.Unpause();
            }
        }
        catch (InvalidOperationException e)
        {
            return ControlReply.Error(ExitCodes.Refused, e.Message);
        }

        return ControlReply.Ok(w => w.WriteString("message", $"{Describe(dom)} {(pause ? "paused" : "unpaused")}"));
    }

    // ------------------------------------------------------------------ vcpu-list, info

    private string VcpuList(ControlRequest request)
    {
        List<Domain> domains;
        if (request.Domain is { Length: > 0 })
        {
            if (Find(request.Domain) is not { } hosted || hosted.Domain is not { } one)
            {
                return NoSuchDomain(request.Domain);
            }

            domains = [one];
        }
        else
        {
            domains = [.. _hv.Domains];
        }

        return ControlReply.Ok(w =>
        {
            w.WriteStartArray("vcpus");
            foreach (var d in domains)
            {
                foreach (var v in d.VcpuList)
                {
                    WriteVcpu(w, d, v);
                }
            }

            w.WriteEndArray();
        });
    }

    /// <summary>One vCPU as xl's vcpu-list sees it (libxl_vcpuinfo): online (not down), running, blocked, and its time.</summary>
    private static void WriteVcpu(Utf8JsonWriter w, Domain d, Vcpu v)
    {
        var runstate = v.CurrentRunstate;
        var alive = IsAlive(d);
        w.WriteStartObject();
        w.WriteString("name", d.Name);
        w.WriteNumber("id", d.Id);
        w.WriteNumber("vcpu", v.Id);
        w.WriteBoolean("online", alive && v.IsUp);
        w.WriteBoolean("running", alive && d.State != DomainState.Paused && runstate == VcpuOp.RUNSTATE_running);
        w.WriteBoolean("blocked", alive && runstate == VcpuOp.RUNSTATE_blocked);
        w.WriteNumber("cpuSeconds", v.CpuTimeNs / 1e9);
        w.WriteEndObject();
    }

    private string Info() => ControlReply.Ok(w =>
    {
        w.WriteString("version", _hv.Version);
        w.WriteNumber("pid", Environment.ProcessId);
        w.WriteString("socket", SocketPath);
        w.WriteNumber("totalMiB", _hv.TotalFrames / 256);
        w.WriteNumber("freeMiB", _hv.FreeFrames / 256);
        w.WriteNumber("domains", _hv.Domains.Count);
    });

    // ------------------------------------------------------------------ the host's end

    /// <summary>
    /// Shuts every domain down cleanly: no more creates or restarts, <c>control/shutdown =
    /// poweroff</c> to each running domain, up to <paramref name="bound"/> for them to end, then the
    /// rest (those that did not, and preserved ones) destroyed. Returns once every domain is gone.
    /// </summary>
    public async Task StopAsync(TimeSpan bound)
    {
        Hosted[] all;
        lock (_lock)
        {
            _stopping = true;
            all = [.. _byName.Values];
        }

        var waits = new List<Task>();
        foreach (var h in all)
        {
            h.Supervisor.StopRestarting();
            if (h.Supervisor.Current is { } incarnation && IsAlive(incarnation.Domain))
            {
                try
                {
                    _hv.XenStore.Write($"{HostXenStore.DomainPath(incarnation.Domain.Id)}/control/shutdown", "poweroff");
                    waits.Add(incarnation.Ended);
                }
                catch (XenStoreException)
                {
                    // Going already.
                }
            }
        }

        if (waits.Count > 0)
        {
            await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"paravirt: stopping: asked {waits.Count} domain(s) to power off (control/shutdown); waiting up to {bound.TotalSeconds:0.###} s")).ConfigureAwait(false);
            try
            {
                await Task.WhenAll(waits).WaitAsync(bound).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                await _log.WriteLineAsync("paravirt: stopping: not every domain powered off in time; destroying the rest").ConfigureAwait(false);
            }
        }

        await _interrupt.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(all.Select(h => h.Run)).ConfigureAwait(false);
    }

    public void Dispose() => _interrupt.Dispose();
}
