using System.CommandLine;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt list [--json]</c>: the domain table of every running host — each <c>paravirt run</c>
/// and the <c>paravirt host</c> — reached through their control sockets in the runtime directory
/// (sockets nobody answers on are skipped). With no host running it prints the header alone (or
/// nothing with --json) and exits 0. With <c>--socket PATH</c> it asks that one host (xl list):
/// the table without the Host column, or the no-host line and exit 11.
/// </summary>
internal static class ListCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "One JSON object per domain, a line each, instead of the table" };
        var runtimeDir = new Option<string?>("--runtime-dir") { Description = "Where the hosts' control sockets are (default: $PARAVIRT_RUNTIME_DIR, $XDG_RUNTIME_DIR/paravirt or /tmp/paravirt-UID)" };
        var socket = new Option<string?>("--socket") { Description = "Ask only the host at this control socket (e.g. a 'paravirt host --socket PATH')" };
        var command = new Command(
            "list",
            "List the domains of every running paravirt host, or of the one at --socket (ID, name, state, memory, vCPUs, CPU time, hypercalls, events, block and network bytes). "
            + "Exit codes: 0 done (also when no host runs: the header alone); 1 bad command line; 11 no host at --socket.");
        command.Options.Add(json);
        command.Options.Add(runtimeDir);
        command.Options.Add(socket);
        command.Validators.Add(result =>
        {
            if (result.GetResult(socket) is { Implicit: false } && result.GetResult(runtimeDir) is { Implicit: false })
            {
                result.AddError("give --socket or --runtime-dir, not both");
            }
        });
        command.SetAction((parse, ct) => parse.GetValue(socket) is { } path
            ? RunOneAsync(path, parse.GetValue(json), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error, ct)
            : RunAsync(parse.GetValue(runtimeDir), parse.GetValue(json), parse.InvocationConfiguration.Output, ct));
        return command;
    }

    public static async Task<int> RunAsync(string? runtimeDirectory, bool json, TextWriter output, CancellationToken ct)
    {
        var query = await ControlClient.QueryAllAsync(RuntimeDirectory.Resolve(runtimeDirectory), TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
        await WriteAsync(output, query.Rows, json, withHost: true).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    /// <summary>The table of the one host at <paramref name="socket"/>.</summary>
    public static async Task<int> RunOneAsync(string socket, bool json, TextWriter output, TextWriter error, CancellationToken ct)
    {
        var path = HostClient.Resolve(socket);
        var rows = await ControlClient.QueryAsync(path, TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
        if (rows is null)
        {
            await error.WriteLineAsync(HostClient.NoHost(path)).ConfigureAwait(false);
            return ExitCodes.NoHost;
        }

        await WriteAsync(output, rows, json, withHost: false).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static async Task WriteAsync(TextWriter output, IReadOnlyList<DomainRow> rows, bool json, bool withHost)
    {
        if (json)
        {
            foreach (var row in rows)
            {
                await output.WriteLineAsync(DomainTable.ToJson(row)).ConfigureAwait(false);
            }
        }
        else
        {
            DomainTable.WriteText(output, rows, withHost);
        }
    }
}
