using System.Text;
using Paravirt.Cli.Host;

namespace Paravirt.Tests.Cli.Host;

/// <summary>The host's per-domain console: log, ring of recent output, clients that attach late, read slowly or leave.</summary>
public sealed class ConsoleHubTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-hub-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static byte[] Bytes(string s) => Encoding.ASCII.GetBytes(s);

    private static async Task<string> ReadAllAsync(ConsoleClient client)
    {
        var text = new StringBuilder(Encoding.ASCII.GetString(client.Backlog));
        while (await client.NextAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(CliRunner.Bound, TestContext.Current.CancellationToken) is { } chunk)
        {
            text.Append(Encoding.ASCII.GetString(chunk));
        }

        return text.ToString();
    }

    [Fact]
    public async Task A_Client_That_Attaches_Late_Gets_The_Recent_Output_Then_What_Follows_And_The_Log_Gets_Everything()
    {
        using var hub = new ConsoleHub("web", dir);
        hub.Append(Bytes("boot line 1\n"));
        hub.Append(Bytes("boot line 2\n"));
        using var late = hub.Attach();
        Encoding.ASCII.GetString(late.Backlog).Should().Be("boot line 1\nboot line 2\n");
        hub.Append(Bytes("after attach\n"));
        hub.Close();

        (await ReadAllAsync(late)).Should().Be("boot line 1\nboot line 2\nafter attach\n");
        hub.Dispose();
        File.ReadAllText(Path.Combine(dir, "guest-web.log")).Should().Be("boot line 1\nboot line 2\nafter attach\n", "xenconsoled's guest-NAME.log");
    }

    [Fact]
    public void The_Ring_Keeps_The_Most_Recent_Output_Across_Its_Wrap()
    {
        using var hub = new ConsoleHub("wrap", null);
        var pattern = Enumerable.Range(0, ConsoleHub.RingBytes + 3000).Select(i => (byte)('a' + (i % 26))).ToArray();
        for (var at = 0; at < pattern.Length; at += 1000)
        {
            hub.Append(pattern.AsSpan(at, Math.Min(1000, pattern.Length - at)));
        }

        using var client = hub.Attach();
        client.Backlog.Should().Equal(pattern[^ConsoleHub.RingBytes..], "the ring holds exactly the last RingBytes bytes, in order");

        hub.Append(new byte[ConsoleHub.RingBytes * 2]); // one chunk larger than the ring
        using var after = hub.Attach();
        after.Backlog.Should().HaveCount(ConsoleHub.RingBytes).And.OnlyContain(b => b == 0);
    }

    [Fact]
    public async Task A_Client_That_Never_Reads_Loses_Output_For_Itself_Alone()
    {
        using var hub = new ConsoleHub("slow", dir);
        using var stalled = hub.Attach();
        using var reader = hub.Attach();
        var chunk = new byte[64 << 10];
        var chunks = ConsoleHub.ClientBudgetBytes / chunk.Length * 2;
        long got = 0;
        for (var i = 0; i < chunks; i++)
        {
            chunk.AsSpan().Fill((byte)i);
            hub.Append(chunk);
            got += (await reader.NextAsync(TestContext.Current.CancellationToken))!.Length; // this client keeps up
        }

        got.Should().Be((long)chunks * chunk.Length, "a reading client gets every byte");
        stalled.DroppedBytes.Should().Be((long)chunks * chunk.Length - ConsoleHub.ClientBudgetBytes, "the stalled client keeps its budget and loses the rest");
        reader.DroppedBytes.Should().Be(0);
        hub.Dispose();
        new FileInfo(Path.Combine(dir, "guest-slow.log")).Length.Should().Be((long)chunks * chunk.Length, "the log never drops");
    }

    [Fact]
    public async Task A_Detached_Client_Ends_And_The_Others_Go_On()
    {
        using var hub = new ConsoleHub("two", null);
        var leaving = hub.Attach();
        using var staying = hub.Attach();
        hub.ClientCount.Should().Be(2);
        leaving.Dispose();
        hub.ClientCount.Should().Be(1);
        (await leaving.NextAsync(TestContext.Current.CancellationToken)).Should().BeNull("a detached client's queue ends");

        hub.Append(Bytes("still here\n"));
        Encoding.ASCII.GetString((await staying.NextAsync(TestContext.Current.CancellationToken))!).Should().Be("still here\n");
        hub.Close();
        (await staying.NextAsync(TestContext.Current.CancellationToken)).Should().BeNull("the domain is gone");
        using var afterClose = hub.Attach();
        (await afterClose.NextAsync(TestContext.Current.CancellationToken)).Should().BeNull("nothing more will come");
        Encoding.ASCII.GetString(afterClose.Backlog).Should().Be("still here\n");
    }
}
