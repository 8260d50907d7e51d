using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Cli.Config;
using Paravirt.Cli.Host;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt run CONFIG</c>: boots the domain an xl.cfg-style file describes, copies its console to
/// stdout and stdin to its console, applies on_poweroff/on_reboot/on_crash, serves the domain table
/// on a control socket for <c>paravirt list</c>, and prints the table at the end. Host messages go
/// to stderr, prefixed <c>paravirt:</c>, so stdout is the console and the table.
/// </summary>
internal static class RunCommand
{
    public const int DefaultMaxRestarts = 10;

    /// <summary>What <c>run</c> was asked to do: a config file, or a PV kernel given on the command line.</summary>
    /// <param name="HypervisorCreated">Called with the hypervisor before the domain is created (tests plug a host port into its switches).</param>
    internal sealed record Options(string? ConfigPath, string? RuntimeDirectory = null, int MaxRestarts = DefaultMaxRestarts, Action<Hypervisor>? HypervisorCreated = null)
    {
        /// <summary><c>--kernel FILE</c>: a PV kernel image instead of a config file.</summary>
        public string? Kernel { get; init; }

        public int? MemoryMiB { get; init; }

        public IReadOnlyList<string> Disks { get; init; } = [];

        public string? CommandLine { get; init; }

        public string? Ramdisk { get; init; }

        public string? Name { get; init; }

        public int? Vcpus { get; init; }

        /// <summary>What the hypervisor logs to stderr (<c>--log-level</c>, <c>-v</c> for debug).</summary>
        public Microsoft.Extensions.Logging.LogLevel LogLevel { get; init; } = Microsoft.Extensions.Logging.LogLevel.Warning;

        /// <summary><c>--trace FILE</c>: a per-vCPU trace of hypercalls and bounces.</summary>
        public string? TracePath { get; init; }

        /// <summary><c>--profile FILE</c>: where guest code spent its instructions, written when the run ends.</summary>
        public string? ProfilePath { get; init; }

        /// <summary><c>--symbols FILE</c>: a System.map or kallsyms listing that names the profile's addresses.</summary>
        public string? SymbolsPath { get; init; }

        /// <summary><c>--profile-from TEXT</c>: the profile starts afresh when the console first shows TEXT.</summary>
        public string? ProfileFrom { get; init; }
    }

    public static Command Create(Func<Stream> stdin)
    {
        var config = new Argument<string?>("CONFIG") { Description = "An xl.cfg-style domain configuration file (docs/cli.md); or give --kernel instead", Arity = ArgumentArity.ZeroOrOne };
        var runtimeDir = new Option<string?>("--runtime-dir") { Description = "Where to put the control socket (default: $PARAVIRT_RUNTIME_DIR, $XDG_RUNTIME_DIR/paravirt or /tmp/paravirt-UID)" };
        var maxRestarts = new Option<int>("--max-restarts") { Description = "Restarts allowed by on_reboot/on_crash = restart before the domain is destroyed instead", DefaultValueFactory = _ => DefaultMaxRestarts };
        var kernel = new Option<string?>("--kernel") { Description = "Boot this 64-bit PV kernel image (ELF with Xen notes, e.g. /usr/lib/grub-xen/grub-x86_64-xen.bin, or a Linux bzImage such as /boot/vmlinuz-*) without a config file" };
        var memory = new Option<int?>("--memory") { Description = "With --kernel: memory in MiB (default 128)" };
        var disk = new Option<string[]>("--disk") { Description = "With --kernel: a raw disk image (xvda, then xvdb … when repeated), or an xl disk spec", AllowMultipleArgumentsPerToken = false };
        var cmdline = new Option<string?>("--cmdline") { Description = "With --kernel: the kernel command line (start_info.cmd_line)" };
        var ramdisk = new Option<string?>("--ramdisk") { Description = "With --kernel: the initial ramdisk (start_info.mod_start/mod_len)" };
        var name = new Option<string?>("--name") { Description = "With --kernel: the domain's name (default: the kernel file's name)" };
        var logLevel = new Option<Microsoft.Extensions.Logging.LogLevel?>("--log-level") { Description = "What the hypervisor logs to stderr: trace, debug, information, warning (default: hypercalls answered -ENOSYS, instructions the interpreter lacks, MSRs answered #GP), error, critical or none" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log at debug level: also every refused hypercall and every exception bounced to the guest" };
        var trace = new Option<string?>("--trace") { Description = "Write a per-vCPU trace of every hypercall (arguments, result) and every exception or event bounced to the guest to FILE" };
        var profile = new Option<string?>("--profile") { Description = "Sample where the guest's machine code spends its instructions and write the report (most first) to FILE when the run ends" };
        var symbols = new Option<string?>("--symbols") { Description = "With --profile: a System.map or /proc/kallsyms listing that names the sampled addresses" };
        var profileFrom = new Option<string?>("--profile-from") { Description = "With --profile: start the profile afresh when the guest's console first shows TEXT (e.g. a line the guest prints before the phase to measure)" };
        var vcpus = new Option<int?>("--vcpus") { Description = "With --kernel: the number of vCPUs (default 1); the kernel brings up the others with VCPUOP_initialise/up" };
        var command = new Command(
            "run",
            "Boot the domain a config file describes (kernel = \"managed:NAME\" or a PV kernel image), or a PV kernel given with --kernel, "
            + "with its console on stdin/stdout, until it ends; then print the domain table. Exit codes: 0 powered off; 1 bad command line; "
            + "2 config error (FILE:LINE on stderr); 3 not supported in this build (non-raw disk; a PV kernel while no PV CPU engine is wired in); "
            + "4 crashed; 5 rebooted and not restarted; 6 the host could not set the domain up; 7 other shutdown (suspend, watchdog); "
            + "9 not a bootable PV kernel image; 10 its last vCPU went down (VCPUOP_down) without a shutdown request; 130 interrupted (SIGINT/SIGTERM).");
        command.Arguments.Add(config);
        command.Options.Add(runtimeDir);
        command.Options.Add(maxRestarts);
        command.Options.Add(kernel);
        command.Options.Add(memory);
        command.Options.Add(disk);
        command.Options.Add(cmdline);
        command.Options.Add(ramdisk);
        command.Options.Add(name);
        command.Options.Add(vcpus);
        command.Options.Add(logLevel);
        command.Options.Add(verbose);
        command.Options.Add(trace);
        command.Options.Add(profile);
        command.Options.Add(profileFrom);
        command.Options.Add(symbols);
        command.Validators.Add(result =>
        {
            var hasConfig = result.GetValue(config) is not null;
            var hasKernel = result.GetValue(kernel) is not null;
            if (hasConfig == hasKernel)
            {
                result.AddError(hasConfig
                    ? "give either CONFIG or --kernel FILE, not both"
                    : "nothing to run: expected CONFIG (an xl.cfg-style file) or --kernel FILE (a PV kernel image)");
            }
            else if (hasConfig)
            {
                foreach (var o in new Option[] { memory, disk, cmdline, ramdisk, name, vcpus })
                {
                    if (result.GetResult(o) is { Implicit: false })
                    {
                        result.AddError($"{o.Name} goes with --kernel; with a CONFIG file, set it in the file");
                    }
                }
            }
        });
        command.SetAction((parse, ct) => RunAsync(
            new Options(parse.GetValue(config), parse.GetValue(runtimeDir), parse.GetValue(maxRestarts))
            {
                Kernel = parse.GetValue(kernel),
                MemoryMiB = parse.GetValue(memory),
                Disks = parse.GetValue(disk) ?? [],
                CommandLine = parse.GetValue(cmdline),
                Ramdisk = parse.GetValue(ramdisk),
                Name = parse.GetValue(name),
                Vcpus = parse.GetValue(vcpus),
                LogLevel = parse.GetValue(logLevel) ?? (parse.GetValue(verbose) ? Microsoft.Extensions.Logging.LogLevel.Debug : Microsoft.Extensions.Logging.LogLevel.Warning),
                TracePath = parse.GetValue(trace),
                ProfilePath = parse.GetValue(profile),
                SymbolsPath = parse.GetValue(symbols),
                ProfileFrom = parse.GetValue(profileFrom),
            },
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error,
            stdin(),
            ct));
        return command;
    }

    public static async Task<int> RunAsync(Options options, TextWriter output, TextWriter error, Stream? input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        output = TextWriter.Synchronized(output);
        DomainSpec spec;
        try
        {
            spec = options.Kernel is { } kernelPath
                ? DomainSpec.ForKernel(kernelPath, options.MemoryMiB, options.Disks, options.CommandLine, options.Ramdisk, options.Name, Directory.GetCurrentDirectory(), options.Vcpus)
                : DomainSpec.Load(options.ConfigPath ?? throw new ArgumentException("run needs a config file or a kernel", nameof(options)));
        }
        catch (ConfigException e)
        {
            await error.WriteLineAsync($"paravirt run: {e.Message}").ConfigureAwait(false);
            return e.NotSupported ? ExitCodes.NotSupported : ExitCodes.Config;
        }

        foreach (var s in spec.Ignored)
        {
            await error.WriteLineAsync($"paravirt run: {spec.File}:{s.Line}: warning: '{s.Key}' is not used by paravirt (ignored)").ConfigureAwait(false);
        }

        if (DomainSupervisor.MissingFile(spec) is { } missing)
        {
            await error.WriteLineAsync($"paravirt run: {missing}").ConfigureAwait(false);
            return ExitCodes.Config;
        }

        using var signals = new Host.TerminationSignals(cancellationToken);

        var hostMiB = (spec.MaxMemoryMiB ?? spec.MemoryMiB) + 16;
        HypervisorTrace? traceFile = null;
        if (options.TracePath is { } tracePath)
        {
            try
            {
                traceFile = HypervisorTrace.ToFile(tracePath);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                await error.WriteLineAsync($"paravirt run: --trace {tracePath}: cannot write the file ({e.Message}); expected a writable path").ConfigureAwait(false);
                return ExitCodes.SetupFailed;
            }
        }

        using var traceScope = traceFile;
        GuestSymbols? symbolTable = null;
        if (options.SymbolsPath is { } symbolsPath)
        {
            try
            {
                using var reader = File.OpenText(symbolsPath);
                symbolTable = GuestSymbols.Parse(reader);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                await error.WriteLineAsync($"paravirt run: --symbols {symbolsPath}: cannot read the file ({e.Message}); expected a System.map or kallsyms listing").ConfigureAwait(false);
                return ExitCodes.SetupFailed;
            }
        }

        var guestProfile = options.ProfilePath is null ? null : new GuestProfile();
        using var hv = new Hypervisor(new HypervisorOptions
        {
            MemoryMiB = hostMiB,
            Logger = new Host.TextLogger(TextWriter.Synchronized(error), options.LogLevel),
            Trace = traceFile,
            Profile = guestProfile,
        });
        options.HypervisorCreated?.Invoke(hv);
        ControlServer control;
        try
        {
            control = ControlServer.Start(RuntimeDirectory.Resolve(options.RuntimeDirectory), () => DomainTable.Snapshot(hv, Environment.ProcessId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            await error.WriteLineAsync($"paravirt run: cannot serve the control socket in {RuntimeDirectory.Resolve(options.RuntimeDirectory)}: {e.Message}").ConfigureAwait(false);
            return ExitCodes.SetupFailed;
        }

        await using (control.ConfigureAwait(false))
        {
            var console = guestProfile is not null && options.ProfileFrom is { Length: > 0 } from
                ? new Host.MarkerWriter(output, from, guestProfile.Reset)
                : output;
            var session = new Session(spec, hv, console, error, options.MaxRestarts);
            var input2 = input is null ? Task.CompletedTask : session.PumpInputAsync(input, signals.Token);
            var code = await session.RunAsync(signals.Token).ConfigureAwait(false);
            _ = input2; // stdin may stay open: the copy ends with the process, never awaited
            if (guestProfile is not null && options.ProfilePath is { } profilePath)
            {
                try
                {
                    await using var report = File.CreateText(profilePath);
                    if (console is Host.MarkerWriter marker)
                    {
                        await report.WriteLineAsync(marker.Seen
                            ? $"# from the first \"{options.ProfileFrom}\" on the console on"
                            : $"# \"{options.ProfileFrom}\" never appeared on the console: the whole run").ConfigureAwait(false);
                    }

                    guestProfile.WriteReport(report, symbolTable);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
                {
                    await error.WriteLineAsync($"paravirt run: --profile {profilePath}: cannot write the report ({e.Message})").ConfigureAwait(false);
                }
            }

            return code;
        }
    }

    /// <summary>The MAC a vif given none gets (<see cref="DomainSupervisor.GeneratedMac"/>).</summary>
    internal static MacAddress GeneratedMac(int domainId, int devId) => DomainSupervisor.GeneratedMac(domainId, devId);

    /// <summary>One <c>run</c>: the domain's supervisor, its console on stdout and stdin, and the table at the end.</summary>
    private sealed class Session(DomainSpec spec, Hypervisor hv, TextWriter output, TextWriter error, int maxRestarts)
    {
        private readonly DomainSupervisor _supervisor = new(spec, hv, error, maxRestarts, dom => PumpConsoleAsync(dom, output))
        {
            Preserved = table => DomainTable.WriteText(output, table, withHost: false),
        };

        public async Task<int> RunAsync(CancellationToken ct)
        {
            var end = await _supervisor.RunAsync(ct).ConfigureAwait(false);
            if (end.SetupError is { } setupError)
            {
                await error.WriteLineAsync($"paravirt run: {setupError}").ConfigureAwait(false);
                return end.Code;
            }

            if (end.Table is { } table)
            {
                DomainTable.WriteText(output, table, withHost: false);
            }

            return end.Code;
        }

        /// <summary>Copies the console's bytes to <paramref name="o"/> until the domain is destroyed.</summary>
        private static async Task PumpConsoleAsync(Domain dom, TextWriter o)
        {
            var reader = dom.Console.Output;
            var decoder = Encoding.UTF8.GetDecoder();
            var chars = new char[4096];
            while (true)
            {
                var result = await reader.ReadAsync().ConfigureAwait(false);
                foreach (var segment in result.Buffer)
                {
                    var bytes = segment.Span;
                    while (!bytes.IsEmpty)
                    {
                        var take = Math.Min(bytes.Length, 1024);
                        var n = decoder.GetChars(bytes[..take], chars, flush: false);
                        o.Write(chars, 0, n);
                        bytes = bytes[take..];
                    }
                }

                reader.AdvanceTo(result.Buffer.End);
                await o.FlushAsync().ConfigureAwait(false);
                if (result.IsCompleted)
                {
                    await reader.CompleteAsync().ConfigureAwait(false);
                    return;
                }
            }
        }

        /// <summary>Copies <paramref name="input"/> to the console of whichever boot of the domain is current.</summary>
        public async Task PumpInputAsync(Stream input, CancellationToken ct)
        {
            var buffer = new byte[1024];
            try
            {
                await _supervisor.FirstBoot.WaitAsync(ct).ConfigureAwait(false);
                int n;
                while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
                {
                    if (_supervisor.Current?.Domain is { } dom && dom.State is DomainState.Running or DomainState.Created)
                    {
                        await dom.Console.Input.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException or ObjectDisposedException)
            {
                // The run ended, stdin closed, or the console went with its domain.
            }
        }
    }
}
