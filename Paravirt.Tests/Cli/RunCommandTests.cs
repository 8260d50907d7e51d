using System.Text;
using System.Text.RegularExpressions;
using Paravirt.Cli;
using Paravirt.Cli.Guests;
using Paravirt.Cli.Host;
using Paravirt.Core.Backends.Network;
using Paravirt.Guest;

namespace Paravirt.Tests.Cli;

/// <summary>A user's managed guest kernel, loaded by <c>kernel = "managed:PATH.dll:Type"</c> from this test assembly.</summary>
public sealed class UserGuestKernel : GuestKernel
{
    protected override void Run(GuestRuntime runtime) => runtime.Out.WriteLine($"user guest says hi from domain {runtime.XenBus.DomainId}");
}

/// <summary><c>paravirt run CONFIG</c> in-process: console to stdout, lifecycle actions, exit codes, errors.</summary>
public sealed class RunCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-run-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string RuntimeDir => Path.Combine(dir, "rt");

    private string Config(string text, string name = "dom.cfg")
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private string Disk(string name = "disk.img", int bytes = 1 << 20)
    {
        var path = Path.Combine(dir, name);
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    private Task<(int Exit, string Out, string Err)> Run(string config, params string[] more) =>
        CliRunner.RunAsync(["run", config, "--runtime-dir", RuntimeDir, .. more]);

    private static int Count(string text, string what) => Regex.Matches(text, Regex.Escape(what)).Count;

    [Fact]
    public async Task A_Hello_Guest_Prints_Its_Console_Writes_Its_Disk_And_Exits_0_On_Poweroff_With_The_Table()
    {
        var disk = Disk();
        var cfg = Config($"name = \"hello1\"\nmemory = 16\nkernel = \"managed:hello\"\ndisk = [ 'file:{disk},xvda,w' ]\nextra = \"greeting\"\n");

        var (exit, output, error) = await Run(cfg);

        exit.Should().Be(ExitCodes.Ok, error);
        output.Should().Contain("hello from domain 1 (hello1)\n")
            .And.Contain("command line: greeting\n")
            .And.Contain("vbd 51712: 2048 sectors of 512 bytes\n")
            .And.Contain("vbd 51712: wrote 65536 bytes at 4096, flushed, read back: match\n")
            .And.Contain("goodbye (poweroff)\n");
        output.Should().MatchRegex(@"\nName\s+ID\s+State\s+Mem\(MiB\)\s+VCPUs\s+Time\(s\)\s+Hypercalls\s+Events\(tx/rx\)\s+Block\(r/w bytes\)\s+Net\(rx/tx bytes\)\n");
        output.Should().MatchRegex(@"\nhello1\s+1 shutdown:poweroff\s+16\s+1\s+\d+\.\d{3}\s+\d+\s+\d+/\d+\s+65536/65536\s+0/0\n");
        error.Should().Contain("paravirt: domain 1 (hello1) starting: managed:hello, 16 MiB, 1 vCPU(s), 1 disk(s)")
            .And.Contain("powered off; on_poweroff = destroy");

        var image = await File.ReadAllBytesAsync(disk, TestContext.Current.CancellationToken);
        image.AsSpan(4096, 65536).SequenceEqual(DiskPattern.Make(65536, 4096, HelloGuest.Seed)).Should().BeTrue("the host finds the guest's bytes in the image");
        Directory.EnumerateFiles(RuntimeDir, "*.sock").Should().BeEmpty("the control socket is removed on exit");
    }

    [Fact]
    public async Task A_Crash_Exits_4_And_A_Reboot_With_On_Reboot_Destroy_Exits_5()
    {
        var crash = await Run(Config("name='c'\nmemory=8\nkernel='managed:hello'\nextra='shutdown=crash'\n", "crash.cfg"));
        crash.Exit.Should().Be(ExitCodes.Crashed).And.Be(4);
        crash.Err.Should().Contain("paravirt: domain 1 (c) crashed:").And.Contain("on_crash = destroy");
        crash.Out.Should().MatchRegex(@"\nc\s+1 crashed\s");

        var reboot = await Run(Config("name='r'\nmemory=8\nkernel='managed:hello'\nextra='shutdown=reboot'\non_reboot='destroy'\n", "reboot.cfg"));
        reboot.Exit.Should().Be(ExitCodes.Rebooted).And.Be(5);
        reboot.Err.Should().Contain("asked to reboot; on_reboot = destroy");
        Count(reboot.Out, "hello from domain").Should().Be(1);
    }

    [Fact]
    public async Task A_Reboot_Restarts_By_Default_Until_The_Restart_Limit()
    {
        var (exit, output, error) = await Run(Config("name='r'\nmemory=8\nkernel='managed:hello'\nextra='shutdown=reboot'\n"), "--max-restarts", "2");

        exit.Should().Be(ExitCodes.Rebooted);
        Count(output, "hello from domain").Should().Be(3, "the first boot and two restarts");
        output.Should().Contain("hello from domain 1 (r)").And.Contain("hello from domain 2 (r)").And.Contain("hello from domain 3 (r)");
        Count(error, "paravirt: restarting r").Should().Be(2);
        error.Should().Contain("the restart limit (2, --max-restarts) is reached; destroying instead");
    }

    [Fact]
    public async Task On_Crash_Restart_Restarts_Once_And_The_Second_Boot_Powers_Off_With_Its_Disk_Remembering()
    {
        var disk = Disk();
        var cfg = Config($"name='once'\nmemory=8\nkernel='managed:hello'\ndisk=['{disk},raw,xvda,w']\nextra='crash-once'\non_crash='restart'\n");

        var (exit, output, error) = await Run(cfg);

        exit.Should().Be(ExitCodes.Ok, error);
        output.Should().Contain("crash-once: first boot, marker written").And.Contain("crash-once: the marker is on disk, so this is a restart; going on");
        output.IndexOf("first boot", StringComparison.Ordinal).Should().BeLessThan(output.IndexOf("so this is a restart", StringComparison.Ordinal));
        Count(error, "paravirt: restarting once (restart 1 of at most 10)").Should().Be(1);
        error.Should().Contain("crashed:").And.Contain("on_crash = restart").And.Contain("powered off; on_poweroff = destroy");
        output.Should().MatchRegex(@"\nonce\s+2 shutdown:poweroff\s", "the table shows the second domain");
    }

    [Fact]
    public async Task On_Crash_Restart_Of_A_Guest_That_Always_Crashes_Restarts_Once_Then_Destroys_With_Max_Restarts_1()
    {
        var (exit, output, error) = await Run(Config("name='loop'\nmemory=8\nkernel='managed:hello'\nextra='shutdown=crash'\non_crash='restart'\n"), "--max-restarts", "1");

        exit.Should().Be(ExitCodes.Crashed);
        Count(output, "hello from domain").Should().Be(2);
        Count(error, "paravirt: restarting loop").Should().Be(1);
        error.Should().Contain("the restart limit (1, --max-restarts) is reached");
    }

    [Fact]
    public async Task Stdin_Goes_To_The_Guests_Console()
    {
        var input = new MemoryStream(Encoding.UTF8.GetBytes("hi there\npoweroff\n"));
        var (exit, output, error) = await CliRunner.RunAsync(["run", Config("name='e'\nmemory=8\nkernel='managed:echo'\n"), "--runtime-dir", RuntimeDir], input);

        exit.Should().Be(ExitCodes.Ok, error);
        output.Should().Contain("echo: hi there\n").And.Contain("echo: powering off\n");
    }

    [Fact]
    public async Task Preserve_Keeps_The_Domain_And_Its_Row_For_List_Until_Interrupted()
    {
        var ct = TestContext.Current.CancellationToken;
        var cfg = Config("name='kept'\nmemory=8\nkernel='managed:hello'\non_poweroff='preserve'\n");
        var output = new WatchedWriter();
        var error = new WatchedWriter();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var run = CliRunner.InvokeAsync(["run", cfg, "--runtime-dir", RuntimeDir], output, error, null, stop.Token);

        await error.WaitForAsync("is kept (preserve)", ct);
        var query = await ControlClient.QueryAllAsync(RuntimeDir, CliRunner.Bound, ct);
        query.Rows.Should().ContainSingle().Which.Should().Match<DomainRow>(r => r.Name == "kept" && r.State == "shutdown:poweroff" && r.MemoryMiB == 8 && r.Hypercalls > 0);

        await stop.CancelAsync();
        (await run.WaitAsync(CliRunner.Bound, ct)).Should().Be(ExitCodes.Ok, "it powered off; the interrupt only ended the keeping");
        Directory.EnumerateFiles(RuntimeDir, "*.sock").Should().BeEmpty();
    }

    [Fact]
    public async Task A_Users_Guest_Kernel_Is_Loaded_From_Its_Assembly()
    {
        var dll = typeof(UserGuestKernel).Assembly.Location;
        var (exit, output, error) = await Run(Config($"name='u'\nmemory=8\nkernel='managed:{dll}:{typeof(UserGuestKernel).FullName}'\n"));

        exit.Should().Be(ExitCodes.Ok, error);
        output.Should().Contain("user guest says hi from domain 1\n");
    }

    [Theory]
    [InlineData("Paravirt.Tests.Cli.NoSuchType", "has no type 'Paravirt.Tests.Cli.NoSuchType'")]
    [InlineData("Paravirt.Tests.Cli.RunCommandTests", "is not a concrete guest kernel")]
    public async Task A_Guest_Type_That_Is_Not_There_Or_Not_A_Kernel_Exits_6_With_The_Config_Line(string type, string message)
    {
        var dll = typeof(UserGuestKernel).Assembly.Location;
        var (exit, _, error) = await Run(Config($"name='u'\nmemory=8\n\nkernel='managed:{dll}:{type}'\n"));

        exit.Should().Be(ExitCodes.SetupFailed);
        error.Should().Contain("dom.cfg:4: ").And.Contain(message);
    }

    [Fact]
    public async Task A_Missing_Assembly_Exits_6()
    {
        var (exit, _, error) = await Run(Config($"name='u'\nkernel='managed:{dir}/absent.dll:A.B'\n"));
        exit.Should().Be(ExitCodes.SetupFailed);
        error.Should().Contain("dom.cfg:2: cannot load the guest assembly");
    }

    [Fact]
    public async Task Config_Errors_Exit_2_With_File_And_Line()
    {
        var missing = await Run(Path.Combine(dir, "absent.cfg"));
        missing.Exit.Should().Be(ExitCodes.Config).And.Be(2);
        missing.Err.Should().Contain("absent.cfg: cannot read the file");

        var bad = await Run(Config("name = 'x'\nmemory = lots\n"));
        bad.Exit.Should().Be(2);
        bad.Err.Should().Contain("dom.cfg:2: 'lots' is not a value (strings need quotes); expected memory = \"lots\"");
        bad.Out.Should().BeEmpty();

        var noKernelFile = await Run(Config($"name='x'\nkernel='{dir}/vmlinuz'\n", "k.cfg"));
        noKernelFile.Exit.Should().Be(2);
        noKernelFile.Err.Should().Contain($"k.cfg:2: kernel {dir}/vmlinuz does not exist");
    }

    [Fact]
    public async Task A_Broken_Kernel_Image_Exits_9_And_A_Qcow2_Disk_Exits_3_Not_Supported()
    {
        var image = Path.Combine(dir, "vmlinuz");
        await File.WriteAllBytesAsync(image, [0x7f, (byte)'E', (byte)'L', (byte)'F'], TestContext.Current.CancellationToken);
        var elf = await Run(Config($"name='x'\n\nkernel='{image}'\n", "elf.cfg"));
        elf.Exit.Should().Be(ExitCodes.BadKernel).And.Be(9);
        elf.Err.Should().Contain($"elf.cfg:3: kernel {image} is not a bootable 64-bit PV kernel: truncated ELF identification: the file is 4 bytes");

        var qcow = await Run(Config("name='x'\nkernel='managed:hello'\ndisk = [ 'format=qcow2, vdev=xvda, target=a.qcow2' ]\n", "q.cfg"));
        qcow.Exit.Should().Be(3);
        qcow.Err.Should().Contain("q.cfg:3: disk 'format=qcow2, vdev=xvda, target=a.qcow2': format 'qcow2' is not supported; expected raw");
    }

    [Fact]
    public async Task A_Vif_Is_Attached_To_Its_Bridge_And_The_Netecho_Guest_Answers_The_Hosts_Frames_Through_It()
    {
        var ct = TestContext.Current.CancellationToken;
        var guestMac = MacAddress.Parse("00:16:3e:00:00:01");
        var hostMac = MacAddress.Parse("00:16:3e:ff:00:01");
        var port = new TaskCompletionSource<SwitchHostPort>(TaskCreationOptions.RunContinuationsAsynchronously);
        var cfg = Config("name='net'\nmemory=8\nkernel='managed:netecho'\nvif = [ 'bridge=br0,mac=00:16:3e:00:00:01,rate=10Mb/s@20ms' ]\n");
        var output = new WatchedWriter();
        var error = new WatchedWriter();
        var run = RunCommand.RunAsync(
            new RunCommand.Options(cfg, RuntimeDir, HypervisorCreated: hv => port.SetResult(hv.Switch("br0").ConnectHost(hostMac))),
            output, error, null, ct);
        using var host = await port.Task.WaitAsync(CliRunner.Bound, ct);
        var frame = new byte[VirtualSwitch.MaxFrameBytes];

        // The guest's hello, broadcast when its vif connected: from then on it is on br0.
        var n = await host.ReceiveAsync(frame, ct).AsTask().WaitAsync(CliRunner.Bound, ct);
        MacAddress.Read(frame.AsSpan(6)).Should().Be(guestMac, "the vif has the config's mac");
        frame.AsSpan(12, 3).ToArray().Should().Equal(0x88, 0xB6, NetEchoGuest.Hello);

        const int Frames = 50;
        long sent = 0;
        var payload = new byte[VirtualSwitch.MaxFrameBytes - 14];
        for (var i = 0; i < Frames; i++)
        {
            var length = 46 + (i * 97 % (payload.Length - 46));
            Random.Shared.NextBytes(payload.AsSpan(0, length));
            host.Send(guestMac, 0x88B5, payload.AsSpan(0, length));
            sent += 14 + length;
            n = await host.ReceiveAsync(frame, ct).AsTask().WaitAsync(CliRunner.Bound, ct);
            n.Should().Be(14 + length, $"echo {i} is as long as the frame sent");
            MacAddress.Read(frame).Should().Be(hostMac, $"echo {i} comes back to the host");
            MacAddress.Read(frame.AsSpan(6)).Should().Be(guestMac);
            frame.AsSpan(14, length).SequenceEqual(payload.AsSpan(0, length)).Should().BeTrue($"echo {i} carries the bytes sent");
        }

        host.Send(guestMac, NetEchoGuest.ControlType, [NetEchoGuest.Stop, .. new byte[45]]);
        var exit = await run.WaitAsync(CliRunner.Bound, ct);

        exit.Should().Be(ExitCodes.Ok, error.ToString());
        error.ToString().Should().Contain("paravirt: domain 1 (net) starting: managed:netecho, 8 MiB, 1 vCPU(s), 0 disk(s), vif 0 00:16:3e:00:00:01 on br0 at 1250000 B/s per 20000 us");
        output.ToString().Should().Contain($"netecho: stop frame: echoed {Frames} frames ({sent} bytes); powering off\n");

        // The table's Net(rx/tx bytes): the guest received our frames and the stop (46 + 14), and sent the hello (60) and the echoes.
        output.ToString().Should().MatchRegex($@"\nnet\s+1 shutdown:poweroff\s+8\s+1\s+[\d.]+\s+\d+\s+\d+/\d+\s+0/0\s+{sent + 60}/{sent + 60}\n");
    }

    [Fact]
    public async Task A_Vif_Without_A_Mac_Gets_One_In_Xens_Oui_From_The_Domain_And_Devid_And_Defaults_To_Xenbr0()
    {
        RunCommand.GeneratedMac(0x1234, 5).ToString().Should().Be("00:16:3e:12:34:05");
        var (exit, output, error) = await Run(Config("name='n2'\nmemory=8\nkernel='managed:netecho'\nextra='frames=0'\nvif = [ 'model=e1000', 'bridge=br7' ]\n"));

        exit.Should().Be(ExitCodes.Ok, error);
        error.Should().Contain("vif 0 00:16:3e:00:01:00 on xenbr0, vif 1 00:16:3e:00:01:01 on br7");
        output.Should().Contain("netecho: vif 0 00:16:3e:00:01:00 connected").And.Contain("netecho: frames=0 reached: echoed 0 frames (0 bytes)");
    }

    [Fact]
    public async Task A_Disk_Image_That_Cannot_Be_Opened_Exits_6_Naming_The_Disk_Line()
    {
        var (exit, _, error) = await Run(Config("name='x'\nmemory=8\nkernel='managed:hello'\ndisk = [\n 'file:absent.img,xvda,w' ]\n"));
        exit.Should().Be(ExitCodes.SetupFailed).And.Be(6);
        error.Should().Contain($"dom.cfg:5: disk xvda: cannot open {dir}/absent.img");
    }

    [Fact]
    public async Task Unknown_Keys_Are_Warned_About_With_Their_Line()
    {
        var (exit, _, error) = await Run(Config("name='w'\nmemory=8\nkernel='managed:hello'\nbootloader='pygrub'\n"));
        exit.Should().Be(0);
        error.Should().Contain("dom.cfg:4: warning: 'bootloader' is not used by paravirt (ignored)");
    }

    [Fact]
    public async Task Help_Documents_The_Exit_Codes()
    {
        var (exit, output, _) = await CliRunner.RunAsync(["run", "--help"]);
        exit.Should().Be(0);
        output.Should().Contain("CONFIG").And.Contain("--runtime-dir").And.Contain("--max-restarts")
            .And.Contain("0 powered off").And.Contain("2 config error").And.Contain("3 not supported").And.Contain("4 crashed")
            .And.Contain("5 rebooted").And.Contain("6 the host could not set the domain up").And.Contain("130 interrupted");
    }
}
