using System.Net.Sockets;
using System.Text.Json;
using Paravirt.Cli;

namespace Paravirt.Tests.Cli;

/// <summary><c>paravirt list</c>: the rows of every running <c>paravirt run</c> host through its control socket.</summary>
public sealed class ListCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-list-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string RuntimeDir => Path.Combine(dir, "rt");

    private const string Header = "Host     Name                ID State             Mem(MiB) VCPUs  Time(s) Hypercalls   Events(tx/rx)       Block(r/w bytes)  Net(rx/tx bytes)\n";

    [Fact]
    public async Task With_No_Host_Running_List_Prints_The_Header_Alone_And_Exits_0()
    {
        var (exit, output, error) = await CliRunner.RunAsync(["list", "--runtime-dir", RuntimeDir]);
        exit.Should().Be(ExitCodes.Ok);
        output.Should().Be(Header);
        error.Should().BeEmpty();

        var json = await CliRunner.RunAsync(["list", "--json", "--runtime-dir", RuntimeDir]);
        json.Exit.Should().Be(0);
        json.Out.Should().BeEmpty();
    }

    /// <summary>
    /// A socket file nobody listens on any more, as a killed host leaves it: bound, moved aside while
    /// bound (closing a socket removes the file at its bound path), then closed.
    /// </summary>
    private void StaleSocket(string name)
    {
        Directory.CreateDirectory(RuntimeDir);
        var bound = Path.Combine(RuntimeDir, "bound.tmp");
        using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            s.Bind(new UnixDomainSocketEndPoint(bound));
            s.Listen(1);
            File.Move(bound, Path.Combine(RuntimeDir, name));
        }
    }

    [Fact]
    public async Task List_Sees_A_Running_Hosts_Domain_And_Skips_Stale_Sockets()
    {
        var ct = TestContext.Current.CancellationToken;
        StaleSocket("1-1.sock");
        await File.WriteAllTextAsync(Path.Combine(RuntimeDir, "zz-9.sock"), "not a socket", ct);
        File.Exists(Path.Combine(RuntimeDir, "1-1.sock")).Should().BeTrue();

        var cfg = Path.Combine(dir, "echo.cfg");
        await File.WriteAllTextAsync(cfg, "name = 'listed'\nmemory = 8\nvcpus = 2\nkernel = 'managed:echo'\n", ct);
        var output = new WatchedWriter();
        var error = new WatchedWriter();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var run = CliRunner.InvokeAsync(["run", cfg, "--runtime-dir", RuntimeDir], output, error, null, stop.Token);
        try
        {
            await output.WaitForAsync("echo: type lines", ct);

            var (exit, text, listError) = await CliRunner.RunAsync(["list", "--runtime-dir", RuntimeDir]);
            exit.Should().Be(0, listError);
            text.Should().StartWith(Header);
            text.Should().MatchRegex($@"\n{Environment.ProcessId}\s+listed\s+1 running\s+8\s+2\s+\d+\.\d{{3}}\s+\d+\s+\d+/\d+\s+0/0\s+0/0\n");
            text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(2, "one header and the one live row; the stale sockets answer nothing");

            var json = await CliRunner.RunAsync(["list", "--json", "--runtime-dir", RuntimeDir]);
            json.Exit.Should().Be(0);
            using var doc = JsonDocument.Parse(json.Out.Trim());
            var row = doc.RootElement;
            row.GetProperty("host").GetInt32().Should().Be(Environment.ProcessId);
            row.GetProperty("name").GetString().Should().Be("listed");
            row.GetProperty("state").GetString().Should().Be("running");
            row.GetProperty("memoryMiB").GetInt64().Should().Be(8);
            row.GetProperty("vcpus").GetInt32().Should().Be(2);
            row.GetProperty("hypercalls").GetInt64().Should().BePositive();
            row.GetProperty("networkBytesReceived").GetInt64().Should().Be(0);
        }
        finally
        {
            await stop.CancelAsync();
        }

        (await run.WaitAsync(CliRunner.Bound, ct)).Should().Be(ExitCodes.Interrupted);
        error.ToString().Should().Contain("interrupted; destroying domain 1 (listed)");
        Directory.EnumerateFiles(RuntimeDir, "*.sock").Select(Path.GetFileName).Should().BeEquivalentTo(["1-1.sock", "zz-9.sock"], "list leaves others' files alone; run removed its own");

        var after = await CliRunner.RunAsync(["list", "--runtime-dir", RuntimeDir]);
        after.Out.Should().Be(Header, "the host is gone");
    }

    [Fact]
    public async Task Help_Documents_The_Exit_Codes()
    {
        var (exit, output, _) = await CliRunner.RunAsync(["list", "--help"]);
        exit.Should().Be(0);
        output.Should().Contain("--json").And.Contain("--runtime-dir").And.Contain("Exit codes: 0 done");
    }
}
