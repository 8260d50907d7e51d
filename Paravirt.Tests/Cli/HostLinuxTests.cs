using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Cli;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Cli;

/// <summary>
/// The real <c>paravirt</c> program, as separate processes: a <c>paravirt host</c> and two of
/// Debian's cloud kernels (with a busybox initramfs each) created from config files through xl's
/// verbs, their consoles taking input and giving output, <c>shutdown -w</c> answered by Linux's own
/// control/shutdown handling, <c>destroy</c>, SIGTERM, and the console logs. The verbs find the host
/// without options: they share its runtime directory. Each boot costs about 20 s of CPU, so one host
/// serves every assertion.
/// </summary>
public sealed partial class HostLinuxTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Forbidden = ["Oops", "BUG:", "WARNING:", "Call Trace", "Kernel panic"];

    private readonly string dir = Directory.CreateTempSubdirectory("pv-hostlinux-").FullName;
    private readonly List<Child> _children = [];

    public void Dispose()
    {
        foreach (var c in _children)
        {
            c.Dispose();
        }

        Directory.Delete(dir, recursive: true);
    }

    private string RuntimeDir => Path.Combine(dir, "rt");

    private string Logs => Path.Combine(dir, "logs");

    /// <summary>A config file for a Linux guest whose /init says it is ready and runs a shell on the console.</summary>
    private string LinuxGuest(string name, string mac)
    {
        var init = $"""
            #!/bin/sh
            mount -t proc proc /proc
            mount -t sysfs sys /sys
            echo "{name} ready: $(uname -r)"
            exec sh
            """;

        // What Linux's orderly_poweroff runs when control/shutdown says poweroff (drivers/xen/manage.c).
        var poweroff = $"""
            #!/bin/sh
            echo "{name}: /sbin/poweroff run by the kernel" > /dev/console
            exec /bin/busybox poweroff -f
            """;
        var image = Initramfs.Busybox(DebianLinux.Busybox, init, "mount", "echo", "cat", "uname", "poweroff")
            .Directory("sbin")
            .Script("sbin/poweroff", poweroff);
        File.WriteAllBytes(Path.Combine(dir, $"{name}.cpio.gz"), image.ToGzip());
        var config = Path.Combine(dir, $"{name}.cfg");
        File.WriteAllText(config, $"""
            # A Debian cloud kernel with a busybox initramfs (relative to this file)
            name    = "{name}"
            kernel  = "{DebianLinux.CloudKernel}"
            ramdisk = "{name}.cpio.gz"
            memory  = 128
            vcpus   = 1
            extra   = "console=hvc0"
            vif     = [ 'bridge=xenbr0,mac={mac}' ]
            on_poweroff = "destroy"
            """);
        return config;
    }

    [Fact]
    public async Task A_Host_Runs_Two_Linux_Guests_Created_From_Config_Files_And_Xls_Verbs_Drive_Them()
    {
        var ct = TestContext.Current.CancellationToken;
        var alphaCfg = LinuxGuest("alpha", "00:16:3e:aa:00:01");
        var betaCfg = LinuxGuest("beta", "00:16:3e:aa:00:02");

        var host = Start("host", "--console-log", Logs, "--memory", "400", "--shutdown-timeout", "60");
        await host.Err.WaitForAsync("paravirt: host listening on", Bound, ct);

        (await Run("create", alphaCfg)).Should().Be((0, "", "paravirt: domain 1 (alpha) created\n"), "create returns once the domain runs; host:\n" + host.Err.Text);
        (await Run("create", betaCfg)).Should().Be((0, "", "paravirt: domain 2 (beta) created\n"), "host:\n" + host.Err.Text);

        var list = await Run("list");
        list.Exit.Should().Be(0, list.Err);
        list.Out.Should().MatchRegex($@"\n{host.Id}\s+alpha\s+1 running\s+128\s+1\s").And.MatchRegex($@"\n{host.Id}\s+beta\s+2 running\s+128\s+1\s", "list asks every host in the runtime directory; Host is its pid");

        // alpha's console: its output (the host's ring first), a typed command, Ctrl-].
        var alpha = Start("console", "alpha");
        await alpha.Out.WaitForAsync("alpha ready", Bound, ct);
        await alpha.TypeAsync("echo typed-$((6*7))\n", ct);
        await alpha.Out.WaitForAsync("typed-42", Bound, ct); // computed by the guest's shell, not the terminal's echo
        await alpha.TypeAsync("\u001d", ct);
        (await alpha.ExitAsync(Bound, ct)).Should().Be(0, alpha.Err.Text);
        alpha.Err.Text.Should().EndWith("paravirt: detached\n");

        // beta's console stays attached until beta is destroyed.
        var beta = Start("console", "2");
        await beta.Out.WaitForAsync("beta ready", Bound, ct);

        var shutdown = await Run("shutdown", "-w", "alpha");
        shutdown.Exit.Should().Be(0, $"Linux acknowledges control/shutdown and powers off; {shutdown.Err}; host: {host.Err.Text}");
        shutdown.Err.Should().Be("paravirt: domain 1 (alpha) powered off; on_poweroff = destroy\n");
        var after = await Run("list");
        after.Out.Should().NotContain("alpha").And.MatchRegex(@"\sbeta\s+2 running\s");

        var destroy = await Run("destroy", "beta");
        destroy.Should().Be((0, "", "paravirt: domain 2 (beta) destroyed\n"));
        (await beta.ExitAsync(Bound, ct)).Should().Be(0);
        beta.Err.Text.Should().EndWith("paravirt: the domain is gone\n");

        host.Signal(15); // SIGTERM
        (await host.ExitAsync(Bound, ct)).Should().Be(0, host.Err.Text);
        host.Err.Text.Should().EndWith("paravirt: host stopped\n");
        Directory.EnumerateFiles(RuntimeDir).Should().BeEmpty("the host removed its socket");
        (await Run("list", "--socket", Path.Combine(RuntimeDir, "host.sock"))).Exit.Should().Be(ExitCodes.NoHost);

        var alphaLog = File.ReadAllText(Path.Combine(Logs, "guest-alpha.log"));
        alphaLog.Should().Contain("Linux version").And.Contain("Hypervisor detected: Xen PV").And.Contain("alpha ready: 6.").And.Contain("typed-42")
            .And.Contain("alpha: /sbin/poweroff run by the kernel", "Linux's manage.c ran the orderly poweroff on control/shutdown")
            .And.Contain("reboot: System halted", "busybox's poweroff -f; Linux 6.1 PV halts, and xen_machine_halt asks SHUTDOWN_poweroff");
        alphaLog.Should().NotContainAny(Forbidden);
        var betaLog = File.ReadAllText(Path.Combine(Logs, "guest-beta.log"));
        betaLog.Should().Contain("Linux version").And.Contain("beta ready: 6.").And.NotContain("/sbin/poweroff");
        betaLog.Should().NotContainAny(Forbidden);
    }

    // ------------------------------------------------------------------ the program as a process

    /// <summary>The built <c>paravirt</c> beside the tests (the CLI project is referenced, so its apphost is copied here).</summary>
    private static ProcessStartInfo Program(IEnumerable<string> args)
    {
        var apphost = Path.Combine(AppContext.BaseDirectory, "paravirt");
        ProcessStartInfo psi;
        if (File.Exists(apphost))
        {
            psi = new ProcessStartInfo(apphost);
        }
        else
        {
            psi = new ProcessStartInfo("dotnet");
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "paravirt.dll"));
        }

        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        return psi;
    }

    private Child Start(params string[] args)
    {
        var psi = Program(args);
        psi.Environment["PARAVIRT_RUNTIME_DIR"] = RuntimeDir; // the host and the verbs meet there without options
        var child = new Child(Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {psi.FileName}"), string.Join(' ', args));
        _children.Add(child);
        return child;
    }

    private async Task<(int Exit, string Out, string Err)> Run(params string[] args)
    {
        using var child = Start(args);
        child.CloseInput();
        var exit = await child.ExitAsync(Bound, TestContext.Current.CancellationToken);
        return (exit, child.Out.Text, child.Err.Text);
    }

    /// <summary>A running <c>paravirt</c>: its stdout and stderr collected as they come, its stdin writable.</summary>
    private sealed partial class Child : IDisposable
    {
        private readonly Process _process;
        private readonly string _what;
        private readonly Task _pumps;
        private int _disposed;

        public Child(Process process, string what)
        {
            _process = process;
            _what = what;
            _pumps = Task.WhenAll(Out.CollectAsync(process.StandardOutput.BaseStream), Err.CollectAsync(process.StandardError.BaseStream));
        }

        public Collected Out { get; } = new();

        public int Id => _process.Id;

        public Collected Err { get; } = new();

        public async Task TypeAsync(string text, CancellationToken ct)
        {
            await _process.StandardInput.BaseStream.WriteAsync(Encoding.ASCII.GetBytes(text), ct);
            await _process.StandardInput.BaseStream.FlushAsync(ct);
        }

        public void CloseInput() => _process.StandardInput.Close();

        public void Signal(int signal) => kill(_process.Id, signal).Should().Be(0, "kill(2) reaches the host");

        public async Task<int> ExitAsync(TimeSpan bound, CancellationToken ct)
        {
            try
            {
                await _process.WaitForExitAsync(ct).WaitAsync(bound, ct);
                await _pumps.WaitAsync(bound, ct);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"paravirt {_what} did not exit within {bound.TotalMinutes} min; stdout: {Out.Text}; stderr: {Err.Text}");
            }

            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }

            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            _process.Dispose();
        }

        [LibraryImport("libc", SetLastError = true)]
        private static partial int kill(int pid, int sig);
    }

    /// <summary>Text a child wrote, awaitable (woken by each append, bounded).</summary>
    private sealed class Collected
    {
        private readonly StringBuilder _text = new();
        private readonly SemaphoreSlim _appended = new(0);
        private volatile bool _ended;

        public string Text
        {
            get
            {
                lock (_text)
                {
                    return _text.ToString();
                }
            }
        }

        public async Task CollectAsync(Stream stream)
        {
            var buffer = new byte[4096];
            var decoder = Encoding.UTF8.GetDecoder();
            var chars = new char[Encoding.UTF8.GetMaxCharCount(buffer.Length)];
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                lock (_text)
                {
                    _text.Append(chars, 0, decoder.GetChars(buffer, 0, n, chars, 0));
                }

                _appended.Release();
            }

            _ended = true;
            _appended.Release();
        }

        public async Task WaitForAsync(string wanted, TimeSpan bound, CancellationToken ct)
        {
            var deadline = DateTime.UtcNow + bound;
            while (!Text.Contains(wanted, StringComparison.Ordinal) && !_ended)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !await _appended.WaitAsync(left, ct))
                {
                    break;
                }
            }

            Text.Should().Contain(wanted, $"it should appear within {bound.TotalMinutes} min; so far:\n{Text}");
        }
    }
}
