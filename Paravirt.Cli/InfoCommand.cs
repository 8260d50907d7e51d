using System.CommandLine;
using System.Globalization;
using Paravirt.Cli.Host;
using Paravirt.Core.Domains;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt info</c>: the hypervisor's version and hypercall table, like <c>xl info</c>'s header;
/// when a <c>paravirt host</c> answers at the socket, its lines too (its socket and process,
/// <c>total_memory</c> and <c>free_memory</c> in MiB as xl info prints them, <c>nr_domains</c>).
/// </summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var socket = HostClient.SocketOption();
        var command = new Command(
            "info",
            "Print the hypervisor's version and its hypercall table (implemented or -ENOSYS), and the host's memory and domain count when a host answers at the socket. "
            + "Exit codes: 0 done; 1 bad command line; 11 no host at a socket given with --socket.");
        command.Options.Add(socket);
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(socket), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error, ct));
        return command;
    }

    /// <summary>
    /// The table, with the host's lines when one answers at the socket. With no <c>--socket</c> a
    /// missing host is not an error (the table alone, as before there were hosts); with one it is.
    /// </summary>
    public static async Task<int> RunAsync(string? socket, TextWriter output, TextWriter error, CancellationToken ct)
    {
        var path = HostClient.Resolve(socket);
        using var reply = await HostClient.RequestAsync(path, new ControlRequest("info"), ct).ConfigureAwait(false);
        if (reply is null && socket is not null)
        {
            await error.WriteLineAsync(HostClient.NoHost(path)).ConfigureAwait(false);
            return ExitCodes.NoHost;
        }

        if (reply is { Ok: false } && socket is not null)
        {
            await error.WriteLineAsync($"paravirt info: {reply.Error}").ConfigureAwait(false);
            return reply.Code;
        }

        List<string>? host = null;
        if (reply is { Ok: true })
        {
            var r = reply.Root;
            var ci = CultureInfo.InvariantCulture;
            host =
            [
                string.Create(ci, $"host             : {r.GetProperty("socket").GetString()} (pid {r.GetProperty("pid").GetInt32()})"),
                string.Create(ci, $"total_memory     : {r.GetProperty("totalMiB").GetInt64()}"),
                string.Create(ci, $"free_memory      : {r.GetProperty("freeMiB").GetInt64()}"),
                string.Create(ci, $"nr_domains       : {r.GetProperty("domains").GetInt32()}"),
            ];
        }

        return Run(output, host);
    }

    /// <summary>The version, the host's lines (if given) and the hypercall table.</summary>
    public static int Run(TextWriter output, IReadOnlyList<string>? host = null)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 16 });
        output.WriteLine($"paravirt {hv.Version} (Xen {Hypervisor.MajorVersion}.{Hypervisor.MinorVersion} ABI, x86_64 PV guests)");
        output.WriteLine($"capabilities     : {Hypervisor.Capabilities}");
        foreach (var line in host ?? [])
        {
            output.WriteLine(line);
        }

        output.WriteLine();
        output.WriteLine(" nr  hypercall                      status");
        var implemented = 0;
        foreach (var e in hv.Hypercalls.Entries)
        {
            output.WriteLine($"{e.Number,3}  {e.Name,-30} {(e.Implemented ? "implemented" : "-ENOSYS")}");
            implemented += e.Implemented ? 1 : 0;
        }

        output.WriteLine();
        output.WriteLine($"{implemented} of {hv.Hypercalls.Entries.Count} named hypercalls implemented; every other number answers -ENOSYS");
        return 0;
    }
}
