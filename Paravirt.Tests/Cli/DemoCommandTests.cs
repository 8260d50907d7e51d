using Paravirt.Cli;
using Paravirt.Cli.Guests;

namespace Paravirt.Tests.Cli;

/// <summary><c>paravirt demo</c>, the README's main job.</summary>
public sealed class DemoCommandTests
{
    [Fact]
    public async Task The_Demo_Passes_Every_Check_And_Exits_0()
    {
        var (exit, output, error) = await CliRunner.RunAsync(["demo"]);

        exit.Should().Be(ExitCodes.Ok, output + error);
        foreach (var step in new[] { "boot", "guests end", "consoles", "block", "xenstore and events", "network", "isolation", "metering" })
        {
            output.Should().Contain($"\ncheck {step}: ok: ");
        }

        output.Should().NotContain("FAILED");
        output.Should().Contain("[alpha] result block vbd 51712: wrote 1048576 bytes, flushed, read back: match")
            .And.Contain("[beta] result events: 300 sent and 300 received")
            .And.Contain("[alpha] result network: 200 pings to 00:16:3e:de:00:02 answered and checked; 201 pings answered;")
            .And.Contain("[beta] result network: 200 pings to 00:16:3e:de:00:01 answered and checked; 200 pings answered;")
            .And.Contain("came back from alpha byte for byte")
            .And.Contain("[bomb] limit event-channels: EVTCHNOP_alloc_unbound answered -ENOSPC (-28)")
            .And.Contain("[bomb] limit grant-frames: XENMEM_add_to_physmap(XENMAPSPACE_grant_table, 64) answered -EINVAL (-22) after 63 frames")
            .And.Contain("[bomb] limit xenstore: XS_WRITE answered -ENOSPC (-28)")
            .And.Contain("[bomb] limit memory: XENMEM_increase_reservation answered 0 of 1 extents after 512 pages; reservation 2560 of maximum 2560");
        output.Should().MatchRegex(@"\nalpha\s+1 shutdown:poweroff\s+16\s+1\s+[\d.]+\s+\d+\s+\d+/\d+\s+1048576/1048576\s+[1-9]\d*/[1-9]\d*\n")
            .And.MatchRegex(@"\nbeta\s+2 shutdown:poweroff\s")
            .And.MatchRegex(@"\nbomb\s+3 crashed\s+10\s");
        output.Should().Contain("\ndemo: all 8 checks passed\n\nName ");
        output.Should().MatchRegex(@"\nbomb\s+3 crashed\s+10\s.*\n$", "the output ends with the domain table");
    }

    [Fact]
    public async Task A_Failed_Check_Is_Named_And_Exits_8()
    {
        var output = new WatchedWriter();
        await using var demo = new Demo(output);
        demo.Steps.Add(new DemoStep("always fails", _ => throw new CheckFailedException("on purpose")));

        var exit = await demo.RunAsync(TestContext.Current.CancellationToken).WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken);

        exit.Should().Be(ExitCodes.CheckFailed).And.Be(8);
        output.ToString().Should().Contain("check always fails: FAILED: on purpose\n").And.Contain("\ndemo: FAILED: 1 of 9 checks run failed (always fails)\n");
    }

    [Fact]
    public async Task Network_Bytes_The_Guest_Did_Not_Count_Fail_The_Network_Check()
    {
        var output = new WatchedWriter();
        await using var demo = new Demo(output);
        var i = demo.Guests.FindIndex(g => g.Config.Name == "alpha");
        demo.Guests[i] = demo.Guests[i] with { Kernel = _ => new WorkerGuest(new GuestLedger()) }; // alpha counts into a ledger the demo never sees

        var exit = await demo.RunAsync(TestContext.Current.CancellationToken).WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken);

        exit.Should().Be(ExitCodes.CheckFailed);
        output.ToString().Should().MatchRegex(@"check network: FAILED: alpha: netback carried [1-9]\d*/[1-9]\d* frames out/in, the guest counted 0/0\n")
            .And.Contain("check xenstore and events: ok");
    }

    [Fact]
    public async Task A_Bomb_That_Behaves_Fails_The_Isolation_Check()
    {
        var output = new WatchedWriter();
        await using var demo = new Demo(output);
        var i = demo.Guests.FindIndex(g => g.IsBomb);
        demo.Guests[i] = demo.Guests[i] with { Kernel = _ => new HelloGuest(), Config = demo.Guests[i].Config with { CommandLine = "shutdown=crash" } };

        var exit = await demo.RunAsync(TestContext.Current.CancellationToken).WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken);

        exit.Should().Be(ExitCodes.CheckFailed);
        output.ToString().Should().Contain("check isolation: FAILED: the bomb reported no 'memory' limit")
            .And.Contain("check block: ok").And.Contain("check metering: ok");
    }

    [Fact]
    public async Task Help_Documents_The_Exit_Codes()
    {
        var (exit, output, _) = await CliRunner.RunAsync(["demo", "--help"]);
        exit.Should().Be(0);
        output.Should().Contain("Exit codes: 0 every check passed; 1 bad command line; 8 a check failed");
    }

    [Fact]
    public async Task Root_Help_Lists_Every_Command_And_Each_Has_Help()
    {
        var (exit, output, _) = await CliRunner.RunAsync(["--help"]);
        exit.Should().Be(0);
        foreach (var command in new[] { "demo", "run", "list", "info", "xenstored", "scan", "host", "create", "console", "shutdown", "reboot", "destroy", "pause", "unpause", "vcpu-list", "top" })
        {
            output.Should().MatchRegex($@"\n\s+{command}\s");
            var help = await CliRunner.RunAsync([command, "--help"]);
            help.Exit.Should().Be(0, command);
            help.Out.Should().Contain("Usage:", command);
        }
    }
}
