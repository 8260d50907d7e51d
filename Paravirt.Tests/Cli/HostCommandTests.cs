using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Paravirt.Cli;

namespace Paravirt.Tests.Cli;

/// <summary>
/// <c>paravirt host</c> and xl's verbs against it, in-process through the CLI's parser, with
/// managed guests: <c>echo</c> acts on control/shutdown as Linux does, <c>netecho</c> does not.
/// </summary>
public sealed partial class HostCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-host-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string RuntimeDir => Path.Combine(dir, "rt");

    private string Socket => Path.Combine(RuntimeDir, "host.sock");

    private string Logs => Path.Combine(dir, "logs");

    private string Config(string name, string text)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private string Echo(string name, string more = "") => Config($"{name}.cfg", $"name = '{name}'\nmemory = 8\nkernel = 'managed:echo'\n{more}");

    /// <summary>An in-process <c>paravirt host</c>, stopped (its token cancelled) when disposed.</summary>
    private sealed class TestHost : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);

        public WatchedWriter Error { get; } = new();

        public Task<int> Run { get; private set; } = Task.FromResult(0);

        public static async Task<TestHost> StartAsync(params string[] args)
        {
            var host = new TestHost();
            host.Run = CliRunner.InvokeAsync(["host", .. args], new WatchedWriter(), host.Error, null, host._stop.Token);
            await host.Error.WaitForAsync("paravirt: host listening on", TestContext.Current.CancellationToken);
            return host;
        }

        /// <summary>Stops the host as SIGTERM would, and returns its exit code.</summary>
        public async Task<int> StopAsync()
        {
            await _stop.CancelAsync();
            return await Run.WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            if (!Run.IsCompleted)
            {
                await StopAsync();
            }

            _stop.Dispose();
        }
    }

    private Task<TestHost> StartHostAsync(params string[] more) => TestHost.StartAsync(["--socket", Socket, "--console-log", Logs, "--memory", "256", .. more]);

    private Task<(int Exit, string Out, string Err)> Verb(params string[] args) => CliRunner.RunAsync([.. args, "--socket", Socket]);

    private async Task CreateAsync(string config)
    {
        var (exit, _, error) = await Verb("create", config);
        exit.Should().Be(ExitCodes.Ok, error);
    }

    /// <summary>A <c>paravirt console</c> in-process, its stdin a pipe the test writes to.</summary>
    private sealed class ConsoleSession
    {
        private readonly Pipe _stdin = new();

        public WatchedWriter Output { get; } = new();

        public WatchedWriter Error { get; } = new();

        public Task<int> Run { get; private set; } = Task.FromResult(0);

        public static ConsoleSession Start(string socket, string domain, params string[] verb)
        {
            var session = new ConsoleSession();
            string[] args = verb.Length > 0 ? verb : ["console", domain];
            session.Run = CliRunner.InvokeAsync([.. args, "--socket", socket], session.Output, session.Error, session._stdin.Reader.AsStream(), TestContext.Current.CancellationToken);
            return session;
        }

        public async Task TypeAsync(string text) => await _stdin.Writer.WriteAsync(Encoding.ASCII.GetBytes(text), TestContext.Current.CancellationToken);

        public async Task<int> DetachAsync()
        {
            await _stdin.Writer.WriteAsync(new[] { ConsoleCommand.Escape }, TestContext.Current.CancellationToken);
            return await Run.WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken);
        }
    }

    private async Task<IReadOnlyList<string>> ListAsync()
    {
        var (exit, output, error) = await Verb("list");
        exit.Should().Be(ExitCodes.Ok, error);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToList();
    }

    [Fact]
    public async Task Create_Returns_Once_The_Domain_Runs_And_List_Shows_It_Here_And_Across_The_Runtime_Directory()
    {
        await using var host = await StartHostAsync();
        var (exit, output, error) = await Verb("create", Echo("web", "vcpus = 2\nvif = [ 'bridge=br0' ]\nfoo = 1\n"));
        exit.Should().Be(ExitCodes.Ok, error);
        output.Should().BeEmpty("create prints what happened on stderr, as xl does");
        error.Should().Contain($"paravirt create: {Path.Combine(dir, "web.cfg")}:6: warning: 'foo' is not used by paravirt (ignored)")
            .And.Contain("paravirt: domain 1 (web) created");
        await CreateAsync(Echo("db"));

        (await ListAsync()).Should().SatisfyRespectively(
            web => web.Should().MatchRegex(@"^web\s+1 running\s+8\s+2\s+\d+\.\d{3}\s+\d+\s+\d+/\d+\s+0/0\s+0/0$"),
            db => db.Should().MatchRegex(@"^db\s+2 running\s+8\s+1\s"));
        host.Error.ToString().Should().Contain("paravirt: domain 1 (web) starting: managed:echo, 8 MiB, 2 vCPU(s), 0 disk(s), vif 0 00:16:3e:00:01:00 on br0");

        var all = await CliRunner.RunAsync(["list", "--runtime-dir", RuntimeDir]);
        all.Exit.Should().Be(0);
        all.Out.Should().MatchRegex($@"\n{Environment.ProcessId}\s+web\s+1 running").And.MatchRegex($@"\n{Environment.ProcessId}\s+db\s+2 running", "paravirt list asks every socket in the runtime directory, the host's too");
        var json = await Verb("list", "--json");
        json.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(2);
    }

    [Fact]
    public async Task Two_Creates_Of_One_Name_Are_Refused_And_A_Config_Error_Names_File_And_Line()
    {
        await using var host = await StartHostAsync();
        var web = Echo("web");
        await CreateAsync(web);
        var again = await Verb("create", web);
        again.Exit.Should().Be(ExitCodes.Refused);
        again.Err.Should().Be($"paravirt create: {web}: a domain named 'web' already exists (id 1); expected a name no domain of this host has\n");

        var bad = Config("bad.cfg", "name = 'bad'\nkernel = 'managed:echo'\nmemory = lots\n");
        var error = await Verb("create", bad);
        error.Exit.Should().Be(ExitCodes.Config);
        error.Err.Should().StartWith($"paravirt create: {bad}:3: ").And.Contain("; expected").And.EndWith("\n");
        error.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().ContainSingle("one line, no stack trace");

        var relative = Path.GetRelativePath(Directory.GetCurrentDirectory(), Config("nokernel.cfg", "name = 'k'\nkernel = 'vmlinuz-missing'\n"));
        var missing = await Verb("create", relative);
        missing.Exit.Should().Be(ExitCodes.Config);
        missing.Err.Should().Be($"paravirt create: {Path.Combine(dir, "nokernel.cfg")}:2: kernel {Path.Combine(dir, "vmlinuz-missing")} does not exist; expected \"managed:NAME\" or a PV kernel image path\n",
            "the client sends the path made absolute; the host reads the file and takes its paths from the file's folder");

        (await ListAsync()).Should().ContainSingle("neither failed create left a domain").Which.Should().StartWith("web ");
    }

    [Fact]
    public async Task Every_Verb_Against_A_Missing_Host_Says_So_In_One_Line()
    {
        var nowhere = Path.Combine(dir, "none", "host.sock");
        var expected = $"paravirt: no host at {nowhere} (start one with: paravirt host)\n";
        string[][] verbs =
        [
            ["create", Echo("x")], ["list"], ["console", "x"], ["shutdown", "-w", "x"], ["reboot", "x"], ["destroy", "x"],
            ["pause", "x"], ["unpause", "x"], ["vcpu-list"], ["top", "-b", "-i", "1"], ["info"],
        ];
        foreach (var verb in verbs)
        {
            var (exit, output, error) = await CliRunner.RunAsync([.. verb, "--socket", nowhere]);
            exit.Should().Be(ExitCodes.NoHost, string.Join(' ', verb));
            error.Should().Be(expected, string.Join(' ', verb));
            output.Should().BeEmpty(string.Join(' ', verb));
        }

        // A stale socket file (a killed host's) is no host either, and a new host replaces it.
        Directory.CreateDirectory(RuntimeDir);
        var bound = Path.Combine(RuntimeDir, "bound.tmp");
        using (var s = new System.Net.Sockets.Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            s.Bind(new UnixDomainSocketEndPoint(bound));
            s.Listen(1);
            File.Move(bound, Socket);
        }

        (await Verb("list")).Exit.Should().Be(ExitCodes.NoHost);
        await using var host = await StartHostAsync();
        (await Verb("list")).Exit.Should().Be(ExitCodes.Ok);
    }

    [Fact]
    public async Task A_Second_Host_On_The_Same_Socket_Is_Refused_And_Info_Shows_The_Host()
    {
        await using var host = await StartHostAsync();
        (OperatingSystem.IsWindows() ? UnixFileMode.None : File.GetUnixFileMode(Socket)).Should().Be(UnixFileMode.UserRead | UnixFileMode.UserWrite, "whoever can connect can destroy domains");
        var (exit, _, error) = await CliRunner.RunAsync(["host", "--socket", Socket]);
        exit.Should().Be(ExitCodes.SocketInUse);
        error.Should().Be($"paravirt host: another host is serving {Socket}; expected one host per socket (stop it, or give --socket)\n");

        await CreateAsync(Echo("web"));
        var info = await Verb("info");
        info.Exit.Should().Be(0, info.Err);
        info.Out.Should().StartWith("paravirt 4.17").And.Contain($"\nhost             : {Socket} (pid {Environment.ProcessId})\n")
            .And.Contain("\ntotal_memory     : 256\n").And.MatchRegex(@"\nfree_memory      : (2[0-4]\d|1\d\d)\n").And.Contain("\nnr_domains       : 1\n")
            .And.MatchRegex(@"\n\s*17  xen_version\s+implemented\n", "the hypercall table follows as before");
    }

    [Fact]
    public async Task Console_Shows_Recent_Output_Takes_Input_And_Detaches_With_Ctrl_Bracket_Leaving_The_Domain_Running()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var host = await StartHostAsync();
        await CreateAsync(Echo("web"));
        var console = ConsoleSession.Start(Socket, "web");
        await console.Output.WaitForAsync("echo: type lines", ct); // printed before anyone attached: the host's ring
        await console.TypeAsync("hello host\n");
        await console.Output.WaitForAsync("echo: hello host\n", ct);
        await console.TypeAsync("raw enter\r"); // Enter on a raw terminal
        await console.Output.WaitForAsync("echo: raw enter\n", ct);
        await console.TypeAsync("\nnext\r\n");
        await console.Output.WaitForAsync("echo: next\n", ct);
        console.Output.ToString().Should().NotContain("echo: \n", "the '\\n' after a '\\r' that ended a line is not a line of its own");
        (await console.DetachAsync()).Should().Be(ExitCodes.Ok);
        console.Error.ToString().Should().Be("paravirt: console of domain 1 (web); Ctrl-] detaches\nparavirt: detached\n");

        (await ListAsync()).Should().ContainSingle().Which.Should().MatchRegex(@"^web\s+1 running");
        var byId = ConsoleSession.Start(Socket, "1");
        await byId.Output.WaitForAsync("echo: next\n", ct);
        await byId.TypeAsync("again\n");
        await byId.Output.WaitForAsync("echo: again\n", ct);
        (await byId.DetachAsync()).Should().Be(0);
        (await Verb("console", "nosuch")).Should().Be((ExitCodes.NoSuchDomain, "", "paravirt console: no domain 'nosuch' on this host (by name); expected a name or id that 'paravirt list' shows\n"));
    }

    [Fact]
    public async Task Create_C_Attaches_And_A_Client_That_Disconnects_Mid_Console_Harms_Nothing_And_Loses_Nothing()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var host = await StartHostAsync();
        var first = ConsoleSession.Start(Socket, "", "create", Echo("web"), "-c");
        await first.Output.WaitForAsync("echo: type lines", ct);
        first.Error.ToString().Should().StartWith("paravirt: domain 1 (web) created\nparavirt: console of domain 1 (web)");

        // A raw client: attaches, types a line, and goes away without detaching.
        using (var raw = new System.Net.Sockets.Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await raw.ConnectAsync(new UnixDomainSocketEndPoint(Socket), ct);
            await raw.SendAsync(Encoding.ASCII.GetBytes("{\"verb\":\"console\",\"domain\":\"web\"}\nfrom the raw client\n"), SocketFlags.None, ct);
            var reply = new byte[256];
            var n = await raw.ReceiveAsync(reply, SocketFlags.None, ct);
            Encoding.ASCII.GetString(reply, 0, n).Should().StartWith("{\"ok\":true,\"id\":1,\"name\":\"web\"}\n");
        }

        await first.Output.WaitForAsync("echo: from the raw client\n", ct); // the other client saw its input's echo
        await first.TypeAsync("still typing\n");
        await first.Output.WaitForAsync("echo: still typing\n", ct);
        (await first.DetachAsync()).Should().Be(0);

        var later = ConsoleSession.Start(Socket, "web");
        await later.Output.WaitForAsync("echo: still typing\n", ct);
        later.Output.ToString().Should().Contain("echo: type lines").And.Contain("echo: from the raw client\n", "the host's ring kept everything for a later client");
        await later.TypeAsync("poweroff\n");
        (await later.Run.WaitAsync(CliRunner.Bound, ct)).Should().Be(0, "the domain powered off: its console ends");
        later.Error.ToString().Should().EndWith("paravirt: the domain is gone\n");

        var log = File.ReadAllText(Path.Combine(Logs, "guest-web.log"));
        log.Should().Be("echo: type lines; 'poweroff' ends, 'crash' crashes\necho: from the raw client\necho: still typing\necho: powering off\n", "the console log holds every byte, once");
    }

    [Fact]
    public async Task Shutdown_W_Waits_For_The_Guests_Own_Poweroff_And_Reboot_Restarts_It_With_A_New_Id()
    {
        await using var host = await StartHostAsync();
        await CreateAsync(Echo("web"));
        var reboot = await Verb("reboot", "-w", "web");
        reboot.Exit.Should().Be(0, reboot.Err);
        reboot.Err.Should().Be("paravirt: domain 1 (web) asked to reboot; on_reboot = restart; restarted as domain 2\n");
        (await ListAsync()).Should().ContainSingle().Which.Should().MatchRegex(@"^web\s+2 running", "xl gives the restarted domain a new id");

        var shutdown = await Verb("shutdown", "-w", "web");
        shutdown.Exit.Should().Be(0, shutdown.Err);
        shutdown.Err.Should().Be("paravirt: domain 2 (web) powered off; on_poweroff = destroy\n");
        (await ListAsync()).Should().BeEmpty();
        File.ReadAllText(Path.Combine(Logs, "guest-web.log")).Should().Be(
            "echo: type lines; 'poweroff' ends, 'crash' crashes\necho: control/shutdown: rebooting\n"
            + "echo: type lines; 'poweroff' ends, 'crash' crashes\necho: control/shutdown: powering off\n",
            "the log follows the name across the restart; the guest acted on control/shutdown itself");
        host.Error.ToString().Should().Contain("paravirt: domain 1 (web): control/shutdown = reboot").And.Contain("paravirt: restarting web (restart 1 of at most 10)");

        var gone = await Verb("shutdown", "web");
        gone.Exit.Should().Be(ExitCodes.NoSuchDomain);
    }

    [Fact]
    public async Task A_Guest_That_Ignores_Control_Shutdown_Is_Reported_And_Left_Running_Until_Destroyed()
    {
        await using var host = await StartHostAsync();
        await CreateAsync(Config("ne.cfg", "name = 'ne'\nmemory = 8\nkernel = 'managed:netecho'\nvif = [ 'bridge=br0' ]\n"));
        var (exit, _, error) = await Verb("shutdown", "--timeout", "0.5", "ne");
        exit.Should().Be(ExitCodes.NotAcknowledged);
        error.Should().StartWith("paravirt shutdown: domain 1 (ne) did not acknowledge the poweroff request within 0.5 s: its kernel does not act on control/shutdown")
            .And.EndWith("or use 'paravirt destroy'\n");
        (await ListAsync()).Should().ContainSingle().Which.Should().MatchRegex(@"^ne\s+1 running");

        var destroy = await Verb("destroy", "1");
        destroy.Should().Be((0, "", "paravirt: domain 1 (ne) destroyed\n"));
        (await ListAsync()).Should().BeEmpty();
        (await Verb("destroy", "1")).Exit.Should().Be(ExitCodes.NoSuchDomain);
    }

    [Fact]
    public async Task Pause_And_Unpause_Show_In_List_And_Vcpu_List_And_Refuse_The_Wrong_State()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var host = await StartHostAsync();
        await CreateAsync(Echo("web", "vcpus = 2\n"));
        await CreateAsync(Echo("db"));
        (await Verb("pause", "web")).Should().Be((0, "", "paravirt: domain 1 (web) paused\n"));
        (await ListAsync())[0].Should().MatchRegex(@"^web\s+1 paused\s");
        var again = await Verb("pause", "web");
        again.Exit.Should().Be(ExitCodes.Refused);
        again.Err.Should().Be("paravirt pause: domain 1 (web) is Paused; only a Running domain can be paused\n");

        var vcpus = await Verb("vcpu-list");
        vcpus.Exit.Should().Be(0, vcpus.Err);
        var lines = vcpus.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines[0].Should().Be("Name                                ID  VCPU State   Time(s)");
        lines.Skip(1).Should().SatisfyRespectively(
            w0 => w0.Should().MatchRegex(@"^web\s+1\s+0\s+-[b-]-\s+\d+\.\d$", "a paused domain's vCPU is not running"),
            w1 => w1.Should().MatchRegex(@"^web\s+1\s+1\s+--p\s+0\.0$", "vCPU 1 was never brought up: offline, as xl shows it"),
            d0 => d0.Should().MatchRegex(@"^db\s+2\s+0\s+[r-][b-]-\s+\d+\.\d$"));
        var one = await Verb("vcpu-list", "db");
        one.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(2);

        (await Verb("unpause", "web")).Should().Be((0, "", "paravirt: domain 1 (web) unpaused\n"));
        (await Verb("unpause", "web")).Exit.Should().Be(ExitCodes.Refused);
        var console = ConsoleSession.Start(Socket, "web");
        await console.TypeAsync("alive\n");
        await console.Output.WaitForAsync("echo: alive\n", ct);
        (await console.DetachAsync()).Should().Be(0);
    }

    [Fact]
    public async Task Top_B_Prints_Xentops_Table_For_Each_Iteration()
    {
        await using var host = await StartHostAsync();
        await CreateAsync(Echo("web"));
        var (exit, output, error) = await Verb("top", "-b", "-i", "2", "-d", "0.05");
        exit.Should().Be(0, error);
        TopHeader().Matches(output).Count.Should().Be(2, output);
        output.Should().Contain("1 domains: 1 running, 0 paused, 0 shutdown, 0 crashed, 0 other\nMem: 262144k total, ")
            .And.Contain("            NAME STATE              CPU(sec)  CPU(%) MEM(MiB) VCPUS  HYPERCALLS   EVENTS(tx/rx)   VBD_RD(B)   VBD_WR(B)   NETTX(B)   NETRX(B)\n");
        TopRow().Matches(output).Count.Should().Be(2, output);
        output.Should().NotContain("\u001b[", "batch mode does not redraw");
    }

    [Fact]
    public async Task Stopping_The_Host_Powers_Off_What_Acknowledges_Destroys_The_Rest_And_Removes_The_Socket()
    {
        await using var host = await StartHostAsync("--shutdown-timeout", "0.5");
        await CreateAsync(Echo("web"));
        await CreateAsync(Config("ne.cfg", "name = 'ne'\nmemory = 8\nkernel = 'managed:netecho'\nvif = [ 'bridge=br0' ]\n"));
        await CreateAsync(Config("kept.cfg", "name = 'kept'\nmemory = 8\nkernel = 'managed:hello'\non_poweroff = 'preserve'\n"));
        await host.Error.WaitForAsync("is kept (preserve) and listed until 'paravirt destroy' or the host's end", TestContext.Current.CancellationToken);

        (await host.StopAsync()).Should().Be(ExitCodes.Ok);
        var log = host.Error.ToString();
        log.Should().Contain("paravirt: stopping: asked 2 domain(s) to power off (control/shutdown); waiting up to 0.5 s")
            .And.Contain("paravirt: domain 1 (web) powered off; on_poweroff = destroy")
            .And.Contain("paravirt: interrupted; destroying domain 2 (ne)")
            .And.Contain("paravirt: destroying the preserved domain 3 (kept)")
            .And.EndWith("paravirt: host stopped\n");
        File.Exists(Socket).Should().BeFalse("the socket goes with the host");
    }

    [GeneratedRegex(@"^paravirt top - \d\d:\d\d:\d\d   paravirt 4\.17", RegexOptions.Multiline)]
    private static partial Regex TopHeader();

    [GeneratedRegex(@"^             web running\s+\d+\s+\d+\.\d\s+8\s+1\s+\d+\s+\d+/\d+\s+0\s+0\s+0\s+0$", RegexOptions.Multiline)]
    private static partial Regex TopRow();
}
