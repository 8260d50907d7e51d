using System.Diagnostics;
using Paravirt.Core.XenStore;

namespace Paravirt.Tests.Conformance;

/// <summary>
/// Debian's real xenstore-* tools (xenstore-utils 4.17, libxenstore) talk to our store over a Unix
/// socket named by XENSTORED_PATH, unchanged.
/// </summary>
public sealed class XenStoreToolsTests : IAsyncLifetime
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(20);
    private readonly string dir = Directory.CreateTempSubdirectory("pv-xs-").FullName;
    private XenStoreSocketServer server = null!;

    private string Socket => Path.Combine(dir, "socket");

    public ValueTask InitializeAsync()
    {
        server = XenStoreSocketServer.Start(Socket);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    private static string Tool(string name)
    {
        var path = Path.Combine("/usr/bin", name);
        File.Exists(path).Should().BeTrue($"{path} is missing: install xenstore-utils: apt-get install -y xenstore-utils");
        return path;
    }

    private ProcessStartInfo StartInfo(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(Tool(tool))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["XENSTORED_PATH"] = Socket;
        return psi;
    }

    private async Task<(int Exit, string Out, string Err)> Run(string tool, params string[] args)
    {
        using var p = Process.Start(StartInfo(tool, args))!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        try
        {
            await p.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(ToolTimeout, TestContext.Current.CancellationToken);
        }
        catch (TimeoutException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish within {ToolTimeout}");
        }

        return (p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs a tool that must succeed; returns its standard output.</summary>
    private async Task<string> Ok(string tool, params string[] args)
    {
        var (exit, stdout, stderr) = await Run(tool, args);
        exit.Should().Be(0, $"{tool} {string.Join(' ', args)} should succeed; stderr: {stderr}; stdout: {stdout}");
        return stdout;
    }

    [Fact]
    public async Task Write_Then_Read_Returns_The_Value()
    {
        await Ok("xenstore-write", "/vm/a", "hello", "/vm/b", "world");
        (await Ok("xenstore-read", "/vm/a")).Should().Be("hello\n");
        (await Ok("xenstore-read", "/vm/a", "/vm/b")).Should().Be("hello\nworld\n");
    }

    [Fact]
    public async Task Read_Of_A_Missing_Node_Fails()
    {
        var (exit, _, stderr) = await Run("xenstore-read", "/nope");
        exit.Should().NotBe(0);
        stderr.Should().Contain("couldn't read path /nope");
    }

    [Fact]
    public async Task Relative_Paths_Are_Under_Local_Domain_0()
    {
        await Ok("xenstore-write", "name", "dom0");
        (await Ok("xenstore-read", "/local/domain/0/name")).Should().Be("dom0\n");
    }

    [Fact]
    public async Task List_Shows_The_Children_In_Creation_Order()
    {
        await Ok("xenstore-write", "/d/z", "1", "/d/a", "2", "/d/m", "3");
        (await Ok("xenstore-list", "/d")).Should().Be("z\na\nm\n");
    }

    [Fact]
    public async Task Ls_Shows_The_Tree_With_Values()
    {
        await Ok("xenstore-write", "/t/x", "1", "/t/y/z", "deep");
        var ls = await Ok("xenstore-ls", "/t");
        ls.Should().Be("x = \"1\"\ny = \"\"\n z = \"deep\"\n");
    }

    [Fact]
    public async Task Ls_Of_The_Root_Shows_Tool_Xenstored()
    {
        (await Ok("xenstore-ls", "/")).Should().Contain("tool = \"\"\n xenstored = \"\"\n");
    }

    [Fact]
    public async Task Exists_Tells_Present_From_Absent()
    {
        await Ok("xenstore-write", "/e", "1");
        (await Run("xenstore-exists", "/e")).Exit.Should().Be(0);
        (await Run("xenstore-exists", "/missing")).Exit.Should().NotBe(0);
    }

    [Fact]
    public async Task Rm_Removes_The_Subtree()
    {
        await Ok("xenstore-write", "/r/a/b", "1", "/r/c", "2");
        await Ok("xenstore-rm", "/r/a");
        (await Ok("xenstore-list", "/r")).Should().Be("c\n");
        (await Run("xenstore-exists", "/r/a/b")).Exit.Should().NotBe(0);
    }

    [Fact]
    public async Task Chmod_Sets_Perms_That_Ls_P_Shows()
    {
        await Ok("xenstore-write", "/p", "v");
        await Ok("xenstore-chmod", "/p", "n0", "r5", "b7");
        var ls = await Ok("xenstore-ls", "-p", "/");
        // xenstore-ls pads with dots to the terminal width before the permissions.
        ls.Should().MatchRegex(@"(?m)^p = ""v""[ .]*\(n0,r5,b7\)$");
        (await Ok("xenstore-ls", "-p", "/tool")).Should().MatchRegex(@"(?m)^xenstored = """"[ .]*\(n0\)$");
    }

    [Fact]
    public async Task Watch_Prints_The_Initial_Event_And_Later_Changes()
    {
        using var watcher = Process.Start(StartInfo("xenstore-watch", "-n", "3", "/w"))!;
        try
        {
            var ct = TestContext.Current.CancellationToken;
            var first = await watcher.StandardOutput.ReadLineAsync(ct).AsTask().WaitAsync(ToolTimeout, ct);
            first.Should().Be("/w", $"the initial event comes first; stderr: {StdErrSoFar(watcher)}");

            await Ok("xenstore-write", "/w/child", "1");
            var second = await watcher.StandardOutput.ReadLineAsync(ct).AsTask().WaitAsync(ToolTimeout, ct);
            second.Should().Be("/w/child");

            await Ok("xenstore-write", "/other", "1");
            await Ok("xenstore-rm", "/w");
            var third = await watcher.StandardOutput.ReadLineAsync(ct).AsTask().WaitAsync(ToolTimeout, ct);
            third.Should().Be("/w", "a write elsewhere does not fire; removing /w does");

            await watcher.WaitForExitAsync(ct).WaitAsync(ToolTimeout, ct);
            watcher.ExitCode.Should().Be(0, "-n 3 exits after three events");
        }
        finally
        {
            if (!watcher.HasExited)
            {
                watcher.Kill(entireProcessTree: true);
            }
        }
    }

    private static string StdErrSoFar(Process p) => p.HasExited ? p.StandardError.ReadToEnd() : "(still running)";
}
