using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// xl's request-and-answer verbs against a <c>paravirt host</c> (<c>create</c>, <c>shutdown</c>,
/// <c>reboot</c>, <c>destroy</c>, <c>pause</c>, <c>unpause</c>, <c>vcpu-list</c>): each sends one
/// request on the host's socket and prints the answer. What happened goes to stderr as
/// <c>paravirt: …</c> (as xl does); tables go to stdout; an error is one line
/// <c>paravirt VERB: …</c> and the exit code of docs/cli.md.
/// </summary>
internal static class VerbCommands
{
    /// <summary>The exit codes every verb shares, for its help.</summary>
    public const string CommonExitCodes = "1 bad command line; 11 no host at the socket; 12 no such domain; 13 refused (the domain's state, or the host is stopping)";

    public static IEnumerable<Command> Create(Func<Stream> stdin, Func<bool> interactive)
    {
        yield return CreateVerb(stdin, interactive);
        yield return ShutdownVerb("shutdown", "Ask a domain to power off: control/shutdown = poweroff in its XenStore (as xl shutdown), answered once the guest acknowledges");
        yield return ShutdownVerb("reboot", "Ask a domain to reboot: control/shutdown = reboot in its XenStore (as xl reboot); on_reboot then applies");
        yield return DomainVerb("destroy", "Destroy a domain at once, without its on_* action (as xl destroy)");
        yield return DomainVerb("pause", "Pause a domain: its vCPUs stop at their next boundary (hypercall or interpreter slice) until unpause");
        yield return DomainVerb("unpause", "Let a paused domain run again");
        yield return VcpuListVerb();
    }

    private static Argument<string> DomainArgument() => new("DOMAIN") { Description = "The domain's name or id (all digits: an id)" };

    private static Command CreateVerb(Func<Stream> stdin, Func<bool> interactive)
    {
        var config = new Argument<string>("CONFIG") { Description = "An xl.cfg-style domain configuration file (docs/cli.md); the host reads it, paths in it are relative to its folder" };
        var console = new Option<bool>("--console", "-c") { Description = "Attach to the domain's console once it runs (Ctrl-] detaches)" };
        var socket = HostClient.SocketOption();
        var command = new Command(
            "create",
            "Create a domain on the host from a config file; returns once it runs (as xl create). Exit codes: 0 running; "
            + "2 config error (FILE:LINE on stderr); 3 not supported in this build; 6 the host could not set the domain up; 9 not a bootable PV kernel; "
            + CommonExitCodes + " (13: a domain of that name exists).");
        command.Arguments.Add(config);
        command.Options.Add(console);
        command.Options.Add(socket);
        command.SetAction((parse, ct) => CreateAsync(
            parse.GetValue(socket),
            parse.GetValue(config)!,
            parse.GetValue(console) ? stdin : null,
            interactive(),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error,
            ct));
        return command;
    }

    public static async Task<int> CreateAsync(string? socket, string config, Func<Stream>? console, bool interactive, TextWriter output, TextWriter error, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(error);
        string name = "";
        var code = await HostClient.RunVerbAsync("create", socket, new ControlRequest("create") { Config = Path.GetFullPath(config) }, error, async reply =>
        {
            foreach (var w in reply.GetProperty("warnings").EnumerateArray())
            {
                await error.WriteLineAsync($"paravirt create: {w.GetString()}").ConfigureAwait(false);
            }

            name = reply.GetProperty("name").GetString() ?? "";
            await error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"paravirt: domain {reply.GetProperty("id").GetInt32()} ({name}) created")).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        if (code != ExitCodes.Ok || console is null)
        {
            return code;
        }

        return await ConsoleCommand.RunAsync(socket, name, console, interactive, output, error, ct).ConfigureAwait(false);
    }

    private static Command ShutdownVerb(string verb, string description)
    {
        var domain = DomainArgument();
        var wait = new Option<bool>("--wait", "-w") { Description = "Wait until the domain has ended and its on_* action was taken" };
        var timeout = new Option<double>("--timeout") { Description = $"Seconds the guest has to acknowledge the request (default {DomainHost.DefaultAcknowledgeTimeout.TotalSeconds}, libxl's)", DefaultValueFactory = _ => DomainHost.DefaultAcknowledgeTimeout.TotalSeconds };
        var socket = HostClient.SocketOption();
        var command = new Command(
            verb,
            $"{description}. A guest that does not acknowledge in time (its kernel does not watch control/shutdown) is left running. "
            + $"Exit codes: 0 acknowledged (with -w: ended); 14 not acknowledged in time; {CommonExitCodes}.");
        command.Arguments.Add(domain);
        command.Options.Add(wait);
        command.Options.Add(timeout);
        command.Options.Add(socket);
        command.Validators.Add(result =>
        {
            if (result.GetResult(timeout) is { Implicit: false } && result.GetValue(timeout) is <= 0 or > 86400)
            {
                result.AddError("--timeout is out of range; expected more than 0 and at most 86400 seconds");
            }
        });
        command.SetAction((parse, ct) =>
        {
            var error = parse.InvocationConfiguration.Error;
            var name = parse.GetValue(domain)!;
            var request = new ControlRequest(verb) { Domain = name, Wait = parse.GetValue(wait), TimeoutSeconds = parse.GetValue(timeout) };
            return HostClient.RunVerbAsync(verb, parse.GetValue(socket), request, error, async reply =>
                await error.WriteLineAsync($"paravirt: {reply.GetProperty("message").GetString()}").ConfigureAwait(false), ct);
        });
        return command;
    }

    private static Command DomainVerb(string verb, string description)
    {
        var domain = DomainArgument();
        var socket = HostClient.SocketOption();
        var command = new Command(verb, $"{description}. Exit codes: 0 done; {CommonExitCodes}.");
        command.Arguments.Add(domain);
        command.Options.Add(socket);
        command.SetAction((parse, ct) =>
        {
            var error = parse.InvocationConfiguration.Error;
            return HostClient.RunVerbAsync(verb, parse.GetValue(socket), new ControlRequest(verb) { Domain = parse.GetValue(domain) }, error, async reply =>
                await error.WriteLineAsync($"paravirt: {reply.GetProperty("message").GetString()}").ConfigureAwait(false), ct);
        });
        return command;
    }

    private static Command VcpuListVerb()
    {
        var domain = new Argument<string?>("DOMAIN") { Description = "The domain's name or id (default: every domain)", Arity = ArgumentArity.ZeroOrOne };
        var socket = HostClient.SocketOption();
        var command = new Command(
            "vcpu-list",
            "List the vCPUs of the host's domains (or one): name, id, vCPU, state (r running, b blocked, p offline: down, as xl), CPU time. "
            + $"Exit codes: 0 done; {CommonExitCodes}.");
        command.Arguments.Add(domain);
        command.Options.Add(socket);
        command.SetAction((parse, ct) =>
        {
            var output = parse.InvocationConfiguration.Output;
            return HostClient.RunVerbAsync("vcpu-list", parse.GetValue(socket), new ControlRequest("vcpu-list") { Domain = parse.GetValue(domain) }, parse.InvocationConfiguration.Error, reply =>
            {
                WriteVcpus(output, reply.GetProperty("vcpus"));
                return Task.CompletedTask;
            }, ct);
        });
        return command;
    }

    /// <summary>xl vcpu-list's columns (without the physical CPU and affinity, which a paravirt host does not pin).</summary>
    internal static void WriteVcpus(TextWriter o, JsonElement vcpus)
    {
        o.WriteLine($"{"Name",-32} {"ID",5} {"VCPU",5} {"State",5} {"Time(s)",9}");
        foreach (var v in vcpus.EnumerateArray())
        {
            var state = !v.GetProperty("online").GetBoolean() ? "--p"
                : $"{(v.GetProperty("running").GetBoolean() ? 'r' : '-')}{(v.GetProperty("blocked").GetBoolean() ? 'b' : '-')}-";
            o.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{v.GetProperty("name").GetString(),-32} {v.GetProperty("id").GetInt32(),5} {v.GetProperty("vcpu").GetInt32(),5} {state,5} {v.GetProperty("cpuSeconds").GetDouble(),9:0.0}"));
        }
    }
}
