using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Paravirt.Cli.Host;
using Paravirt.Core.Domains;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt host</c>: one hypervisor (domains, XenStore, switches, backends) in the foreground,
/// taking xl's verbs on its control socket (<see cref="DomainHost"/>), until SIGTERM or Ctrl-C,
/// which shuts every domain down cleanly and removes the socket. Host messages go to stderr as
/// <c>paravirt: …</c>; with <c>--console-log DIR</c> each domain's console is appended to
/// <c>DIR/guest-NAME.log</c>, as xenconsoled's guest log.
/// </summary>
internal static class HostCommand
{
    public const int DefaultMemoryMiB = 1024;

    public static readonly TimeSpan DefaultShutdownTimeout = TimeSpan.FromSeconds(30);

    internal sealed record Options(string? Socket)
    {
        public string? ConsoleLog { get; init; }

        public int MemoryMiB { get; init; } = DefaultMemoryMiB;

        public int MaxRestarts { get; init; } = RunCommand.DefaultMaxRestarts;

        public TimeSpan ShutdownTimeout { get; init; } = DefaultShutdownTimeout;

        public Microsoft.Extensions.Logging.LogLevel LogLevel { get; init; } = Microsoft.Extensions.Logging.LogLevel.Warning;
    }

    public static Command Create()
    {
        var socket = HostClient.SocketOption();
        var consoleLog = new Option<string?>("--console-log") { Description = "Append each domain's console output to DIR/guest-NAME.log (as xenconsoled's guest log); DIR is created if missing" };
        var memory = new Option<int>("--memory") { Description = $"The host's machine memory in MiB, shared by its domains (default {DefaultMemoryMiB})", DefaultValueFactory = _ => DefaultMemoryMiB };
        var maxRestarts = new Option<int>("--max-restarts") { Description = "Restarts allowed per domain by on_reboot/on_crash = restart before it is destroyed instead", DefaultValueFactory = _ => RunCommand.DefaultMaxRestarts };
        var shutdownTimeout = new Option<double>("--shutdown-timeout") { Description = $"On SIGTERM/Ctrl-C: seconds the domains have to power off after control/shutdown before the rest are destroyed (default {DefaultShutdownTimeout.TotalSeconds})", DefaultValueFactory = _ => DefaultShutdownTimeout.TotalSeconds };
        var logLevel = new Option<Microsoft.Extensions.Logging.LogLevel?>("--log-level") { Description = "What the hypervisor logs to stderr: trace, debug, information, warning (default), error, critical or none" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log at debug level" };
        var command = new Command(
            "host",
            "Run one hypervisor in the foreground and take xl's verbs (create, list, console, shutdown, reboot, destroy, pause, unpause, vcpu-list, top, info) "
            + "on its control socket until SIGTERM or Ctrl-C, which shuts every domain down cleanly. Exit codes: 0 stopped; 1 bad command line; "
            + "6 cannot serve the socket or write the console log folder; 15 another host already serves the socket.");
        command.Options.Add(socket);
        command.Options.Add(consoleLog);
        command.Options.Add(memory);
        command.Options.Add(maxRestarts);
        command.Options.Add(shutdownTimeout);
        command.Options.Add(logLevel);
        command.Options.Add(verbose);
        command.Validators.Add(result =>
        {
            if (result.GetResult(memory) is { Implicit: false } && result.GetValue(memory) is < 16 or > (1 << 20))
            {
                result.AddError("--memory is out of range; expected 16 to 1048576 MiB");
            }

            if (result.GetResult(shutdownTimeout) is { Implicit: false } && result.GetValue(shutdownTimeout) is < 0 or > 3600)
            {
                result.AddError("--shutdown-timeout is out of range; expected 0 to 3600 seconds");
            }
        });
        command.SetAction((parse, ct) => RunAsync(
            new Options(parse.GetValue(socket))
            {
                ConsoleLog = parse.GetValue(consoleLog),
                MemoryMiB = parse.GetValue(memory),
                MaxRestarts = parse.GetValue(maxRestarts),
                ShutdownTimeout = TimeSpan.FromSeconds(parse.GetValue(shutdownTimeout)),
                LogLevel = parse.GetValue(logLevel) ?? (parse.GetValue(verbose) ? Microsoft.Extensions.Logging.LogLevel.Debug : Microsoft.Extensions.Logging.LogLevel.Warning),
            },
            parse.InvocationConfiguration.Error,
            ct));
        return command;
    }

    public static async Task<int> RunAsync(Options options, TextWriter error, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        error = TextWriter.Synchronized(error);
        var path = HostClient.Resolve(options.Socket);
        string? logDirectory = null;
        if (options.ConsoleLog is { } consoleLog)
        {
            try
            {
                logDirectory = Path.GetFullPath(consoleLog);
                Directory.CreateDirectory(logDirectory);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                await error.WriteLineAsync($"paravirt host: --console-log {consoleLog}: cannot create the folder ({e.Message}); expected a writable folder").ConfigureAwait(false);
                return ExitCodes.SetupFailed;
            }
        }

        using var signals = new Host.TerminationSignals(cancellationToken);
        using var hv = new Hypervisor(new HypervisorOptions
        {
            MemoryMiB = options.MemoryMiB,
            Logger = new TextLogger(error, options.LogLevel),
        });
        using var host = new DomainHost(hv, error, logDirectory, options.MaxRestarts, path);
        ControlServer server;
        try
        {
            server = ControlServer.StartAt(path, host.Rows, host.HandleAsync);
        }
        catch (SocketInUseException)
        {
            await error.WriteLineAsync($"paravirt host: another host is serving {path}; expected one host per socket (stop it, or give --socket)").ConfigureAwait(false);
            return ExitCodes.SocketInUse;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            await error.WriteLineAsync($"paravirt host: cannot serve {path}: {e.Message}").ConfigureAwait(false);
            return ExitCodes.SetupFailed;
        }

        await using (server.ConfigureAwait(false))
        {
            await error.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"paravirt: host listening on {path} (pid {Environment.ProcessId}, {options.MemoryMiB} MiB{(logDirectory is null ? "" : $", console logs in {logDirectory}")})")).ConfigureAwait(false);
            try
            {
                await Task.Delay(Timeout.Infinite, signals.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // SIGTERM, Ctrl-C or the caller: stop cleanly.
            }

            await error.WriteLineAsync("paravirt: host stopping").ConfigureAwait(false);
            await host.StopAsync(options.ShutdownTimeout).ConfigureAwait(false);
        }

        await error.WriteLineAsync("paravirt: host stopped").ConfigureAwait(false);
        return ExitCodes.Ok;
    }
}
