using System.Globalization;
using Paravirt.Cli.Config;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;

namespace Paravirt.Cli.Host;

/// <summary>How a supervised domain ended for good: the exit code <c>run</c> gives it, and the table taken before it was destroyed.</summary>
/// <param name="Table">The domain table taken when it ended (null when it was preserved: shown then, or destroyed on request).</param>
/// <param name="SetupError">Why a boot could not be set up ("FILE:LINE: …"), or null.</param>
internal sealed record SupervisorEnd(int Code, IReadOnlyList<DomainRow>? Table, string? SetupError = null);

/// <summary>Why the first boot could not be set up: the message and the exit code <c>run</c> gives it.</summary>
internal sealed record BootFailure(string Error, int Code);

/// <summary>One boot of a supervised domain: the domain, and what became of it once it ended.</summary>
internal sealed class Incarnation(Domain domain)
{
    private readonly TaskCompletionSource<string> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Domain Domain { get; } = domain;

    /// <summary>
    /// Completes once the domain has ended and its <c>on_*</c> action was taken (a restart: once the
    /// new domain runs, or could not be set up), with the words that say so.
    /// </summary>
    public Task<string> Ended => _ended.Task;

    internal void SetEnded(string what) => _ended.TrySetResult(what);
}

/// <summary>
/// One named domain through its life as xl runs it: builds it from its <see cref="DomainSpec"/>
/// (a managed guest or a PV kernel image, its disks and vifs), starts it, and when it ends applies
/// <c>on_poweroff</c>/<c>on_reboot</c>/<c>on_crash</c> (destroy; restart: destroy and boot a new
/// domain from the same spec; preserve: keep it listed until told otherwise). <c>paravirt run</c>
/// supervises one; <c>paravirt host</c> one per created domain. Host messages go to the log as
/// <c>paravirt: …</c> lines.
/// </summary>
internal sealed class DomainSupervisor
{
    private readonly DomainSpec _spec;
    private readonly Hypervisor _hv;
    private readonly TextWriter _log;
    private readonly int _maxRestarts;
    private readonly Func<Domain, Task> _console;
    private readonly TaskCompletionSource<BootFailure?> _firstBoot = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _destroy = new();
    private volatile Incarnation? _current;
    private volatile bool _noRestart;

    /// <param name="console">Called with each boot's domain once it runs; returns the task that copies its console, which ends once the domain is destroyed.</param>
    public DomainSupervisor(DomainSpec spec, Hypervisor hv, TextWriter log, int maxRestarts, Func<Domain, Task> console)
    {
        _spec = spec;
        _hv = hv;
        _log = log;
        _maxRestarts = maxRestarts;
        _console = console;
    }

    public DomainSpec Spec => _spec;

    public string Name => _spec.Name;

    /// <summary>The current boot, or null before the first one and after the last.</summary>
    public Incarnation? Current => _current;

    /// <summary>The domain of the first boot, once it runs.</summary>
    public Domain? FirstDomain { get; private set; }

    /// <summary>Completes when the first boot runs (null) or could not be set up (why).</summary>
    public Task<BootFailure?> FirstBoot => _firstBoot.Task;

    /// <summary>Whether the domain is to be destroyed (<see cref="RequestDestroy"/>).</summary>
    public bool DestroyRequested => _destroy.IsCancellationRequested;

    /// <summary>What the "kept (preserve)" message says the domain is listed until.</summary>
    public string PreservedUntil { get; init; } = "SIGINT/SIGTERM";

    /// <summary>Called with the table when a domain is preserved (<c>run</c> prints it then).</summary>
    public Action<IReadOnlyList<DomainRow>>? Preserved { get; init; }

    /// <summary>Destroys the domain now, without its <c>on_*</c> action (xl destroy); a preserved domain goes too.</summary>
    public void RequestDestroy() => _destroy.Cancel();

    /// <summary>From now on an end that asks for a restart destroys instead (the host is stopping).</summary>
    public void StopRestarting() => _noRestart = true;

    /// <summary>
    /// Boots the domain and follows it until it ends for good. Cancelling <paramref name="interrupt"/>
    /// destroys it at once (SIGINT/SIGTERM): the code is then <see cref="ExitCodes.Interrupted"/>.
    /// </summary>
    public async Task<SupervisorEnd> RunAsync(CancellationToken interrupt)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(interrupt, _destroy.Token);
        var restarts = 0;
        (Incarnation Incarnation, string Ended)? restarted = null;
        while (true)
        {
            var (dom, disks, setupError, setupCode) = await BootAsync().ConfigureAwait(false);
            if (dom is null)
            {
                _firstBoot.TrySetResult(new BootFailure(setupError, setupCode));
                restarted?.Incarnation.SetEnded($"{restarted.Value.Ended}; the restart failed: {setupError}");
                return new SupervisorEnd(setupCode, null, setupError);
            }

            // The boot a restart replaced is over once its successor runs.
            restarted?.Incarnation.SetEnded(string.Create(CultureInfo.InvariantCulture, $"{restarted.Value.Ended}; restarted as domain {dom.Id}"));
            restarted = null;
            var incarnation = new Incarnation(dom);
            _current = incarnation;
            FirstDomain ??= dom;
            _firstBoot.TrySetResult(null);
            var console = _console(dom);
            DomainExit exit;
            try
            {
                exit = await dom.WaitForShutdownAsync(stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                if (interrupt.IsCancellationRequested)
                {
                    await _log.WriteLineAsync($"paravirt: interrupted; destroying domain {dom.Id} ({dom.Name})").ConfigureAwait(false);
                    var rows = DomainTable.Snapshot(_hv, Environment.ProcessId);
                    await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                    End(incarnation, "destroyed (interrupted)");
                    return new SupervisorEnd(ExitCodes.Interrupted, rows);
                }

                await _log.WriteLineAsync($"paravirt: domain {dom.Id} ({dom.Name}) destroyed on request").ConfigureAwait(false);
                await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                End(incarnation, "destroyed");
                return new SupervisorEnd(ExitCodes.Ok, null);
            }

            var table = DomainTable.Snapshot(_hv, Environment.ProcessId);
            var (what, action, code) = Classify(exit);
            await _log.WriteLineAsync($"paravirt: domain {dom.Id} ({dom.Name}) {what}; {ActionKey(exit)} = {action.ToString().ToLowerInvariant()}").ConfigureAwait(false);
            if (action == LifecycleAction.Restart && _noRestart)
            {
                await _log.WriteLineAsync("paravirt: the host is stopping; destroying instead").ConfigureAwait(false);
                action = LifecycleAction.Destroy;
            }
            else if (action == LifecycleAction.Restart && restarts >= _maxRestarts)
            {
                await _log.WriteLineAsync($"paravirt: the restart limit ({_maxRestarts}, --max-restarts) is reached; destroying instead").ConfigureAwait(false);
                action = LifecycleAction.Destroy;
            }

            var ended = $"{what}; {ActionKey(exit)} = {action.ToString().ToLowerInvariant()}";
            if (action == LifecycleAction.Preserve)
            {
                await _log.WriteLineAsync($"paravirt: domain {dom.Id} is kept (preserve) and listed until {PreservedUntil}").ConfigureAwait(false);
                Preserved?.Invoke(table);
                incarnation.SetEnded(ended);
                try
                {
                    await Task.Delay(Timeout.Infinite, stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }

                await _log.WriteLineAsync($"paravirt: destroying the preserved domain {dom.Id} ({dom.Name})").ConfigureAwait(false);
                await DestroyAsync(dom, disks, console).ConfigureAwait(false);
                _current = null;
                return new SupervisorEnd(code, null);
            }

            await DestroyAsync(dom, disks, console).ConfigureAwait(false);
            if (action == LifecycleAction.Restart)
            {
                restarts++;
                await _log.WriteLineAsync($"paravirt: restarting {_spec.Name} (restart {restarts} of at most {_maxRestarts})").ConfigureAwait(false);
                restarted = (incarnation, ended);
                continue;
            }

            End(incarnation, ended);
            return new SupervisorEnd(code, table);
        }
    }

    private void End(Incarnation incarnation, string what)
    {
        _current = null;
        incarnation.SetEnded(what);
    }

    /// <summary>Checks that a kernel image and its ramdisk exist, as <c>run</c> and <c>create</c> do before anything is built; null when they do.</summary>
    public static string? MissingFile(DomainSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Kernel is ImageKernel image)
        {
            foreach (var (what, path) in new[] { ("kernel", image.ImagePath), ("ramdisk", spec.Ramdisk) })
            {
                if (path is not null && !File.Exists(path))
                {
                    return $"{Where(spec)}{what} {path} does not exist; expected {(what == "kernel" ? "\"managed:NAME\" or a PV kernel image path" : "the ramdisk file")}";
                }
            }
        }

        return null;
    }

    /// <summary>
    /// The MAC of a vif given none: xl's OUI 00:16:3e, then the domain id (two bytes) and the devid,
    /// so it is the same for the same domain and vif (xl picks random bytes; a paravirt host numbers its domains from 1).
    /// </summary>
    internal static MacAddress GeneratedMac(int domainId, int devId) =>
        MacAddress.FromValue(0x0016_3E00_0000UL | ((ulong)(domainId & 0xFFFF) << 8) | (byte)devId);

    /// <summary>"FILE:LINE: " of the kernel line, or "" for --kernel.</summary>
    private static string Where(DomainSpec spec) => spec.File == DomainSpec.CommandLineSource ? "" : $"{spec.File}:{spec.KernelLine}: ";

    private (string What, LifecycleAction Action, int Code) Classify(DomainExit exit)
    {
        if (exit.State == DomainState.Crashed)
        {
            return ($"crashed: {exit.Reason}", _spec.OnCrash, ExitCodes.Crashed);
        }

        if (exit.LastVcpuWentDown && exit.ShutdownCode == Sched.SHUTDOWN_poweroff)
        {
            // Xen powers the domain off too, but no guest asked for it: say so, and what the console said last.
            return ($"stopped: {exit.Reason}, without SCHEDOP_shutdown (Xen powers it off); the console above shows why", _spec.OnPoweroff, ExitCodes.AllVcpusDown);
        }

        return exit.ShutdownCode switch
        {
            Sched.SHUTDOWN_poweroff => ("powered off", _spec.OnPoweroff, ExitCodes.Ok),
            Sched.SHUTDOWN_reboot => ("asked to reboot", _spec.OnReboot, ExitCodes.Rebooted),
            _ => ($"shut down ({DomainRow.ShutdownName(exit.ShutdownCode)}): {exit.Reason}", LifecycleAction.Destroy, ExitCodes.OtherShutdown),
        };
    }

    private static string ActionKey(DomainExit exit) => exit.State == DomainState.Crashed ? "on_crash"
        : exit.ShutdownCode == Sched.SHUTDOWN_reboot ? "on_reboot"
        : exit.ShutdownCode == Sched.SHUTDOWN_poweroff ? "on_poweroff"
        : "action";

    /// <summary>Builds the domain, attaches its devices and starts it.</summary>
    private async Task<(Domain? Domain, List<IAsyncDisposable> Disks, string Error, int Code)> BootAsync()
    {
        var spec = _spec;
        Core.Cpu.ManagedKernel? kernel = null;
        Domain dom;
        PvBootImage? boot = null;
        if (spec.Kernel is ImageKernel image)
        {
            byte[] kernelBytes, ramdiskBytes;
            try
            {
                kernelBytes = await File.ReadAllBytesAsync(image.ImagePath).ConfigureAwait(false);
                ramdiskBytes = spec.Ramdisk is null ? [] : await File.ReadAllBytesAsync(spec.Ramdisk).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return (null, [], $"{Where(spec)}cannot read the kernel or ramdisk: {e.Message}", ExitCodes.SetupFailed);
            }

            try
            {
                (dom, boot) = _hv.CreatePvDomain(spec.ToDomainConfig(), kernelBytes, ramdiskBytes);
            }
            catch (FormatException e)
            {
                return (null, [], $"{Where(spec)}kernel {image.ImagePath} is not a bootable 64-bit PV kernel: {e.Message}", ExitCodes.BadKernel);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return (null, [], $"{spec.File}: cannot create domain {spec.Name}: {e.Message}", ExitCodes.SetupFailed);
            }
        }
        else
        {
            try
            {
                kernel = spec.Kernel.Create();
            }
            catch (KernelLoadException e)
            {
                return (null, [], $"{spec.File}:{spec.KernelLine}: {e.Message}", ExitCodes.SetupFailed);
            }

            try
            {
                dom = _hv.CreateDomain(spec.ToDomainConfig());
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return (null, [], $"{spec.File}: cannot create domain {spec.Name}: {e.Message}", ExitCodes.SetupFailed);
            }
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
                return (null, [], $"{(d.Line > 0 ? $"{spec.File}:{d.Line}" : "--disk")}: disk {d.Spec.Vdev}: cannot open {d.Spec.Target}: {e.Message}", ExitCodes.SetupFailed);
            }
        }

        var vifs = new List<string>();
        for (var i = 0; i < spec.Vifs.Count; i++)
        {
            var v = spec.Vifs[i];
            var mac = v.Spec.Mac is { } octets ? MacAddress.Read(octets) : GeneratedMac(dom.Id, i);
            try
            {
                disks.Add(dom.AttachNic(_hv.Switch(v.Spec.Bridge), new NicOptions
                {
                    Mac = mac,
                    DevId = (uint)i,
                    RateBytesPerSecond = v.Spec.Rate?.BytesPerSecond,
                    Ips = v.Spec.Ips,
                    RateInterval = v.Spec.Rate is { } rate ? TimeSpan.FromMicroseconds(rate.IntervalMicroseconds) : TimeSpan.FromMicroseconds(VifRate.DefaultIntervalMicroseconds),
                    Log = m => _log.WriteLine($"paravirt: {m}"),
                }));
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                await DestroyAsync(dom, disks, Task.CompletedTask).ConfigureAwait(false);
                return (null, [], $"{spec.File}:{v.Line}: vif {i}: cannot attach to bridge {v.Spec.Bridge}: {e.Message}", ExitCodes.SetupFailed);
            }

            vifs.Add($"vif {i} {mac} on {v.Spec.Bridge}{(v.Spec.Rate is { } r ? string.Create(CultureInfo.InvariantCulture, $" at {r.BytesPerSecond} B/s per {r.IntervalMicroseconds} us") : "")}");
        }

        await _log.WriteLineAsync(string.Create(
            CultureInfo.InvariantCulture,
            $"paravirt: domain {dom.Id} ({dom.Name}) starting: {spec.Kernel}, {spec.MemoryMiB} MiB, {spec.Vcpus} vCPU(s), {diskCount} disk(s){(vifs.Count > 0 ? ", " + string.Join(", ", vifs) : "")}")).ConfigureAwait(false);
        if (boot is not null)
        {
            await _log.WriteLineAsync(string.Create(
                CultureInfo.InvariantCulture,
                $"paravirt: PV layout: entry 0x{boot.Entry:x}, start_info 0x{boot.StartInfo:x}, stack 0x{boot.StackPointer:x}, {boot.PageTables.Count} page-table frames at 0x{boot.PageTableBase:x} (L4 mfn 0x{boot.L4Mfn:x}), mapped [0x{boot.VirtBase:x}, 0x{boot.VirtEnd:x})")).ConfigureAwait(false);
            try
            {
                PvKernelStart.Start(dom, boot);
            }
            catch (InvalidOperationException e)
            {
                await DestroyAsync(dom, disks, Task.CompletedTask).ConfigureAwait(false);
                return (null, [], $"{Where(spec)}kernel {((ImageKernel)spec.Kernel).ImagePath}: {e.Message}", ExitCodes.SetupFailed);
            }
        }
        else
        {
            dom.Start(kernel!);
        }

        return (dom, disks, "", ExitCodes.Ok);
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
}
