using System.CommandLine;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt list [--json]</c>: the domain table of every running <c>paravirt run</c> host, reached
/// through their control sockets in the runtime directory (sockets nobody answers on are skipped).
/// With no host running it prints the header alone (or nothing with --json) and exits 0.
/// </summary>
internal static class ListCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "One JSON object per domain, a line each, instead of the table" };
        var runtimeDir = new Option<string?>("--runtime-dir") { Description = "Where the hosts' control sockets are (default: $PARAVIRT_RUNTIME_DIR, $XDG_RUNTIME_DIR/paravirt or /tmp/paravirt-UID)" };
        var command = new Command(
            "list",
            "List the domains of every running paravirt host (ID, name, state, memory, vCPUs, CPU time, hypercalls, events, block and network bytes). "
            + "Exit codes: 0 done (also when no host runs: the header alone); 1 bad command line.");
        command.Options.Add(json);
        command.Options.Add(runtimeDir);
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(runtimeDir), parse.GetValue(json), parse.InvocationConfiguration.Output, ct));
        return command;
    }

    public static async Task<int> RunAsync(string? runtimeDirectory, bool json, TextWriter output, CancellationToken ct)
    {
        var query = await ControlClient.QueryAllAsync(RuntimeDirectory.Resolve(runtimeDirectory), TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
        if (json)
        {
            foreach (var row in query.Rows)
            {
                await output.WriteLineAsync(DomainTable.ToJson(row)).ConfigureAwait(false);
            }
        }
        else
        {
            DomainTable.WriteText(output, query.Rows, withHost: true);
        }

        return ExitCodes.Ok;
    }
}
