using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Cli.Config;
using Paravirt.Cli.Host;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Backends.Network;
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

    /// <summary>What <c>run</c> was asked to do.</summary>
    /// <param name="HypervisorCreated">Called with the hypervisor before the domain is created (tests plug a host port into its switches).</param>
    internal sealed record Options(string ConfigPath, string? RuntimeDirectory = null, int MaxRestarts = DefaultMaxRestarts, Action<Hypervisor>? HypervisorCreated = null);

    public static Command Create(Func<Stream> stdin)
    {
        var config = new Argument<string>("CONFIG") { Description = "An xl.cfg-style domain configuration file (docs/cli.md)" };
        var runtimeDir = new Option<string?>("--runtime-dir") { Description = "Where to put the control socket (default: $PARAVIRT_RUNTIME_DIR, $XDG_RUNTIME_DIR/paravirt or /tmp/paravirt-UID)" };
        var maxRestarts = new Option<int>("--max-restarts") { Description = "Restarts allowed by on_reboot/on_crash = restart before the domain is destroyed instead", DefaultValueFactory = _ => DefaultMaxRestarts };
        var command = new Command(
            "run",
            "Boot the domain a config file describes (kernel = \"managed:NAME\"), with its console on stdin/stdout, until it ends; "
            + "then print the domain table. Exit codes: 0 powered off; 1 bad command line; 2 config error (FILE:LINE on stderr); "
            + "3 not supported in this build (PV kernel image, non-raw disk); 4 crashed; 5 rebooted and not restarted; "
            + "6 the host could not set the domain up; 7 other shutdown (suspend, watchdog); 130 interrupted (SIGINT/SIGTERM).");
        command.Arguments.Add(config);
        command.Options.Add(runtimeDir);
        command.Options.Add(maxRestarts);
        command.SetAction((parse, ct) => RunAsync(
            new Options(parse.GetValue(config)!, parse.GetValue(runtimeDir), parse.GetValue(maxRestarts)),
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
            spec = DomainSpec.Load(options.ConfigPath);
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

        if (spec.Kernel is ImageKernel image)
        {
            if (!File.Exists(image.ImagePath))
            {
                await error.WriteLineAsync($"paravirt run: {spec.File}:{spec.KernelLine}: kernel {image.ImagePath} does not exist; expected \"managed:NAME\" or a kernel image path").ConfigureAwait(false);
                return ExitCodes.Config;
            }

            await error.WriteLineAsync($"paravirt run: {spec.File}:{spec.KernelLine}: {NotSupportedMessage(image)}").ConfigureAwait(false);
            return ExitCodes.NotSupported;
        }

        using var signalled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            signalled.Cancel();
        }

        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);

        var hostMiB = (spec.MaxMemoryMiB ?? spec.MemoryMiB) + 16;
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = hostMiB });
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
            var session = new Session(spec, hv, output, error, options.MaxRestarts);
            var input2 = input is null ? Task.CompletedTask : session.PumpInputAsync(input, signalled.Token);
            var code = await session.RunAsync(signalled.Token).ConfigureAwait(false);
            _ = input2; // stdin may stay open: the copy ends with the process, never awaited
            return code;
        }
    }

    /// <summary>
    /// The MAC of a vif given none: xl's OUI 00:16:3e, then the domain id (two bytes) and the devid,
    /// so it is the same for the same domain and vif (xl picks random bytes; a paravirt host numbers its domains from 1).
    /// </summary>
    internal static MacAddress GeneratedMac(int domainId, int devId) =>
        MacAddress.FromValue(0x0016_3E00_0000UL | ((ulong)(domainId & 0xFFFF) << 8) | (byte)devId);

    internal static string NotSupportedMessage(ImageKernel image) =>
        $"booting a PV kernel image ({image.ImagePath}) is not supported yet: it needs the x86-64 interpreter (a later issue); "
        + "expected kernel = \"managed:NAME\" (built-in: " + string.Join(", ", Guests.ManagedGuests.All.Select(g => g.Name)) + ") or \"managed:PATH.dll:Namespace.Type\"";

    /// <summary>One <c>run</c>: boots, restarts, and the end.</summary>
    private sealed class Session(DomainSpec spec, Hypervisor hv, TextWriter output, TextWriter error, int maxRestarts)
    {
        private readonly TaskCompletionSource _firstBoot = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile Domain? _current;

        public async Task<int> RunAsync(CancellationToken ct)
        {
            var restarts = 0;
            while (true)
            {
                var (dom, disks, setupError) = await BootAsync().ConfigureAwait(false);
                if (dom is null)
                {
                    await error.WriteLineAsync($"paravirt run: {setupError}").ConfigureAwait(false);
                    return ExitCodes.SetupFailed;
                }

                var console = PumpConsoleAsync(dom, output);
                DomainExit exit;
                try
                {
                    exit = await dom.WaitForShutdownAsync(ct).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    await error.WriteLineAsync($"paravirt: interrupted; destroying domain {dom.Id} ({dom.Name})").ConfigureAwait(false);
                    var rows = DomainTable.Snapshot(hv, Environment.ProcessId);
                    await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                    DomainTable.WriteText(output, rows, withHost: false);
                    return ExitCodes.Interrupted;
                }

                var table = DomainTable.Snapshot(hv, Environment.ProcessId);
                var (what, action, code) = Classify(exit);
                await error.WriteLineAsync($"paravirt: domain {dom.Id} ({dom.Name}) {what}; {ActionKey(exit)} = {action.ToString().ToLowerInvariant()}").ConfigureAwait(false);
                if (action == LifecycleAction.Restart && restarts >= maxRestarts)
                {
                    await error.WriteLineAsync($"paravirt: the restart limit ({maxRestarts}, --max-restarts) is reached; destroying instead").ConfigureAwait(false);
                    action = LifecycleAction.Destroy;
                }

                if (action == LifecycleAction.Preserve)
                {
                    await error.WriteLineAsync($"paravirt: domain {dom.Id} is kept (preserve) and listed until SIGINT/SIGTERM").ConfigureAwait(false);
                    DomainTable.WriteText(output, table, withHost: false);
                    try
                    {
                        await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                    }

                    await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                    return code;
                }

                await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                if (action == LifecycleAction.Restart)
                {
                    restarts++;
                    await error.WriteLineAsync($"paravirt: restarting {spec.Name} (restart {restarts} of at most {maxRestarts})").ConfigureAwait(false);
                    continue;
                }

                DomainTable.WriteText(output, table, withHost: false);
                return code;
            }
        }

        private (string What, LifecycleAction Action, int Code) Classify(DomainExit exit)
        {
            if (exit.State == DomainState.Crashed)
            {
                return ($"crashed: {exit.Reason}", spec.OnCrash, ExitCodes.Crashed);
            }

            return exit.ShutdownCode switch
            {
                Sched.SHUTDOWN_poweroff => ("powered off", spec.OnPoweroff, ExitCodes.Ok),
                Sched.SHUTDOWN_reboot => ("asked to reboot", spec.OnReboot, ExitCodes.Rebooted),
                _ => ($"shut down ({DomainRow.ShutdownName(exit.ShutdownCode)}): {exit.Reason}", LifecycleAction.Destroy, ExitCodes.OtherShutdown),
            };
        }

        private static string ActionKey(DomainExit exit) => exit.State == DomainState.Crashed ? "on_crash"
            : exit.ShutdownCode == Sched.SHUTDOWN_reboot ? "on_reboot"
            : exit.ShutdownCode == Sched.SHUTDOWN_poweroff ? "on_poweroff"
            : "action";

        private async Task<(Domain? Domain, List<IAsyncDisposable> Disks, string Error)> BootAsync()
        {
            Core.Cpu.ManagedKernel kernel;
            try
            {
                kernel = spec.Kernel.Create();
            }
            catch (KernelLoadException e)
            {
                return (null, [], $"{spec.File}:{spec.KernelLine}: {e.Message}");
            }

            Domain dom;
            try
            {
                dom = hv.CreateDomain(spec.ToDomainConfig());
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return (null, [], $"{spec.File}: cannot create domain {spec.Name}: {e.Message}");
            }

            var disks = new List<IAsyncDisposable>();
            var diskCount = 0;
            foreach (var d in spec.Disks)
            {
                try
                {
                    disks.Add(dom.AttachDisk(d.Spec.Vdev, BlockDevice.OpenFile(d.Spec.Target, writable: !d.Spec.ReadOnly)));
                    diskCount++;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException)
                {
                    await DestroyAsync(dom, disks, Task.CompletedTask).ConfigureAwait(false);
                    return (null, [], $"{spec.File}:{d.Line}: disk {d.Spec.Vdev}: cannot open {d.Spec.Target}: {e.Message}");
                }
            }

            var vifs = new List<string>();
            for (var i = 0; i < spec.Vifs.Count; i++)
            {
                var v = spec.Vifs[i];
                var mac = v.Spec.Mac is { } octets ? MacAddress.Read(octets) : GeneratedMac(dom.Id, i);
                try
                {
                    disks.Add(dom.AttachNic(hv.Switch(v.Spec.Bridge), new NicOptions
                    {
                        Mac = mac,
                        DevId = (uint)i,
                        RateBytesPerSecond = v.Spec.Rate?.BytesPerSecond,
                        RateInterval = v.Spec.Rate is { } rate ? TimeSpan.FromMicroseconds(rate.IntervalMicroseconds) : TimeSpan.FromMicroseconds(VifRate.DefaultIntervalMicroseconds),
                        Log = m => error.WriteLine($"paravirt: {m}"),
                    }));
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException)
                {
                    await DestroyAsync(dom, disks, Task.CompletedTask).ConfigureAwait(false);
                    return (null, [], $"{spec.File}:{v.Line}: vif {i}: cannot attach to bridge {v.Spec.Bridge}: {e.Message}");
                }

                vifs.Add($"vif {i} {mac} on {v.Spec.Bridge}{(v.Spec.Rate is { } r ? string.Create(CultureInfo.InvariantCulture, $" at {r.BytesPerSecond} B/s per {r.IntervalMicroseconds} us") : "")}");
            }

            await error.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"paravirt: domain {dom.Id} ({dom.Name}) starting: {spec.Kernel}, {spec.MemoryMiB} MiB, {spec.Vcpus} vCPU(s), {diskCount} disk(s){(vifs.Count > 0 ? ", " + string.Join(", ", vifs) : "")}")).ConfigureAwait(false);
            _current = dom;
            _firstBoot.TrySetResult();
            dom.Start(kernel);
            return (dom, disks, "");
        }

        private static async Task DestroyAsync(Domain dom, List<IAsyncDisposable> disks, Task console)
        {
            dom.Destroy();
            foreach (var d in disks)
            {
                await d.DisposeAsync().ConfigureAwait(false);
            }

            await console.ConfigureAwait(false);
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
                await _firstBoot.Task.WaitAsync(ct).ConfigureAwait(false);
                int n;
                while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
                {
                    if (_current is { } dom && dom.State is DomainState.Running or DomainState.Created)
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
