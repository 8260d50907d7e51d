using System.CommandLine;
using System.Diagnostics;
using Paravirt.Cli;

namespace Paravirt.Tests.Cli;

/// <summary><c>paravirt xenstored --socket PATH</c>, run through the CLI's parser in-process, answering the real xenstore tools.</summary>
public sealed class XenstoredCommandTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private readonly string dir = Directory.CreateTempSubdirectory("pv-xsd-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>Signals when the command prints its first line (it does so once it listens).</summary>
    private sealed class LineSignal : StringWriter
    {
        public TaskCompletionSource<string> First { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override Task WriteLineAsync(string? value)
        {
            base.WriteLine(value);
            First.TrySetResult(value ?? "");
            return Task.CompletedTask;
        }
    }

    private static async Task<(int Exit, string Out, string Err)> Tool(string socket, string tool, params string[] args)
    {
        var path = Path.Combine("/usr/bin", tool);
        File.Exists(path).Should().BeTrue($"{path} is missing: install xenstore-utils");
        var psi = new ProcessStartInfo(path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["XENSTORED_PATH"] = socket;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        try
        {
            await p.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(Bound, TestContext.Current.CancellationToken);
        }
        catch (TimeoutException)
        {
            p.Kill(entireProcessTree: true);
            throw;
        }

        return (p.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task Xenstored_Serves_The_Real_Tools_Until_Cancelled_Then_Removes_Its_Socket()
    {
        var socket = Path.Combine(dir, "socket");
        var output = new LineSignal();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var config = new InvocationConfiguration { Output = output, ProcessTerminationTimeout = null };
        var run = CliRoot.Build().Parse(["xenstored", "--socket", socket]).InvokeAsync(config, stop.Token);

        var line = await output.First.Task.WaitAsync(Bound, TestContext.Current.CancellationToken);
        line.Should().Be($"xenstored listening on {socket}");

        var write = await Tool(socket, "xenstore-write", "/cli/key", "value");
        write.Exit.Should().Be(0, write.Err);
        var read = await Tool(socket, "xenstore-read", "/cli/key");
        read.Exit.Should().Be(0, read.Err);
        read.Out.Should().Be("value\n");

        await stop.CancelAsync();
        (await run.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().Be(0);
        File.Exists(socket).Should().BeFalse("the socket file is removed on the way out");
    }

    [Fact]
    public async Task Xenstored_Without_A_Socket_Is_A_Usage_Error()
    {
        var error = new StringWriter();
        var config = new InvocationConfiguration { Output = new StringWriter(), Error = error, ProcessTerminationTimeout = null };
        var exit = await CliRoot.Build().Parse(["xenstored"]).InvokeAsync(config, TestContext.Current.CancellationToken);
        exit.Should().NotBe(0);
        error.ToString().Should().Contain("--socket");
    }
}
