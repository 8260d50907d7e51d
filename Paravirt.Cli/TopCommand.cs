using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt top</c>: xentop's live table of a host's domains, refreshed every <c>--delay</c>
/// seconds: a summary (domains by state, memory) and a row per domain with its CPU seconds and the
/// share of a CPU it used since the last refresh, memory, vCPUs and its meter. <c>-b</c> (batch)
/// prints one table after another instead of redrawing the screen, and <c>--iterations N</c> stops
/// after N tables, as <c>xentop -b -i N -d S</c>.
/// </summary>
internal static class TopCommand
{
    public static Command Create()
    {
        var delay = new Option<double>("--delay", "-d") { Description = "Seconds between refreshes (default 3, as xentop)", DefaultValueFactory = _ => 3 };
        var iterations = new Option<int?>("--iterations", "-i") { Description = "Stop after this many tables (default: until Ctrl-C)" };
        var batch = new Option<bool>("--batch", "-b") { Description = "Print each table after the last instead of redrawing the screen (for scripts)" };
        var socket = HostClient.SocketOption();
        var command = new Command(
            "top",
            "Show the host's domains as xentop does, refreshed: state, CPU seconds and %, memory, vCPUs, hypercalls, events, block and network bytes. "
            + "Exit codes: 0 done (the iterations were shown); 1 bad command line; 11 no host at the socket (also when it goes away).");
        command.Options.Add(delay);
        command.Options.Add(iterations);
        command.Options.Add(batch);
        command.Options.Add(socket);
        command.Validators.Add(result =>
        {
            if (result.GetResult(delay) is { Implicit: false } && result.GetValue(delay) is <= 0 or > 86400)
            {
                result.AddError("--delay is out of range; expected more than 0 and at most 86400 seconds");
            }

            if (result.GetValue(iterations) is < 1)
            {
                result.AddError("--iterations is out of range; expected 1 or more");
            }
        });
        command.SetAction((parse, ct) => RunAsync(
            parse.GetValue(socket),
            TimeSpan.FromSeconds(parse.GetValue(delay)),
            parse.GetValue(iterations),
            parse.GetValue(batch),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error,
            ct));
        return command;
    }

    public static async Task<int> RunAsync(string? socket, TimeSpan delay, int? iterations, bool batch, TextWriter output, TextWriter error, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var path = HostClient.Resolve(socket);
        var last = new Dictionary<(int Id, string Name), double>();
        var clock = Stopwatch.StartNew();
        var lastTime = TimeSpan.Zero;
        for (var i = 0; iterations is null || i < iterations; i++)
        {
            if (i > 0)
            {
                try
                {
                    await Task.Delay(delay, ct).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return ExitCodes.Ok;
                }
            }

            using var info = await HostClient.RequestAsync(path, new ControlRequest("info"), ct).ConfigureAwait(false);
            var rows = await ControlClient.QueryAsync(path, TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
            if (info is null || rows is null)
            {
                await error.WriteLineAsync(HostClient.NoHost(path)).ConfigureAwait(false);
                return ExitCodes.NoHost;
            }

            if (!info.Ok)
            {
                await error.WriteLineAsync($"paravirt top: {info.Error}").ConfigureAwait(false);
                return info.Code;
            }

            var now = clock.Elapsed;
            var seconds = (now - lastTime).TotalSeconds;
            lastTime = now;
            if (!batch)
            {
                await output.WriteAsync("\u001b[H\u001b[2J").ConfigureAwait(false); // home, clear: redraw in place
            }
            else if (i > 0)
            {
                await output.WriteLineAsync().ConfigureAwait(false);
            }

            Write(output, info.Root, rows, r =>
            {
                var previous = last.TryGetValue((r.Id, r.Name), out var p) ? p : (double?)null;
                return previous is { } before && seconds > 0 ? Math.Max(0, (r.CpuSeconds - before) / seconds * 100) : 0;
            });
            last = rows.ToDictionary(r => (r.Id, r.Name), r => r.CpuSeconds);
            await output.FlushAsync(ct).ConfigureAwait(false);
        }

        return ExitCodes.Ok;
    }

    /// <summary>One table: the summary lines and a row per domain (CPU % from <paramref name="cpuPercent"/>).</summary>
    internal static void Write(TextWriter o, JsonElement info, IReadOnlyList<DomainRow> rows, Func<DomainRow, double> cpuPercent)
    {
        var ci = CultureInfo.InvariantCulture;
        var total = info.GetProperty("totalMiB").GetInt64();
        var free = info.GetProperty("freeMiB").GetInt64();
        o.WriteLine(string.Create(ci, $"paravirt top - {DateTime.Now:HH:mm:ss}   paravirt {info.GetProperty("version").GetString()} (pid {info.GetProperty("pid").GetInt32()})"));
        int Count(Func<string, bool> state) => rows.Count(r => state(r.State));
        o.WriteLine(string.Create(ci, $"{rows.Count} domains: {Count(s => s == "running")} running, {Count(s => s == "paused")} paused, {Count(s => s.StartsWith("shutdown", StringComparison.Ordinal))} shutdown, {Count(s => s == "crashed")} crashed, {Count(s => s is "dying" or "created")} other"));
        o.WriteLine(string.Create(ci, $"Mem: {total * 1024}k total, {(total - free) * 1024}k used, {free * 1024}k free"));
        o.WriteLine($"{"NAME",16} {"STATE",-17} {"CPU(sec)",9} {"CPU(%)",7} {"MEM(MiB)",8} {"VCPUS",5} {"HYPERCALLS",11} {"EVENTS(tx/rx)",15} {"VBD_RD(B)",11} {"VBD_WR(B)",11} {"NETTX(B)",10} {"NETRX(B)",10}");
        foreach (var r in rows)
        {
            o.WriteLine(string.Create(
                ci,
                $"{r.Name,16} {r.State,-17} {r.CpuSeconds,9:0} {cpuPercent(r),7:0.0} {r.MemoryMiB,8} {r.Vcpus,5} {r.Hypercalls,11} {$"{r.EventsSent}/{r.EventsReceived}",15} {r.BlockBytesRead,11} {r.BlockBytesWritten,11} {r.NetworkBytesSent,10} {r.NetworkBytesReceived,10}"));
        }
    }
}
