using System.Buffers;
using System.Text;
using Paravirt.Core.Console;
using Paravirt.Tests.Backends.Console;

namespace Paravirt.Tests.Console;

/// <summary>The host's view of a console: one ordered stream of output bytes seen as a pipe and as lines, each bounded.</summary>
public sealed class DomainConsoleTests
{
    private static byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);

    [Fact]
    public async Task Output_Goes_To_Both_The_Pipe_And_The_Lines_In_Order()
    {
        var console = new DomainConsole(1024);
        console.Write(Ascii("one\ntw"));
        console.Write(Ascii("o\r\nthree"));
        console.Close();

        Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(console.Output)).Should().Be("one\ntwo\r\nthree", "the pipe carries the bytes as they came");
        var lines = new List<string>();
        await foreach (var line in console.ReadLinesAsync(TestContext.Current.CancellationToken))
        {
            lines.Add(line);
        }

        lines.Should().Equal("one", "two", "three");
        console.BytesWritten.Should().Be(14);
    }

    [Fact]
    public async Task The_Pipe_Drops_While_The_Budget_Is_Unread_And_Takes_Output_Again_Once_Half_Is_Read()
    {
        var console = new DomainConsole(100);
        console.Write(new byte[60]);
        console.Write(Enumerable.Repeat((byte)'a', 60).ToArray()); // 120 unread: the pipe pauses
        console.Write(Ascii("lost"));
        console.DroppedBytes.Should().Be(4);

        var first = await ConsolePipe.ReadExactlyAsync(console.Output, 120); // the host reads: the pause ends
        first.Length.Should().Be(120);
        console.Write(Ascii("kept"));
        console.DroppedBytes.Should().Be(4);
        console.Close();
        Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(console.Output)).Should().Be("kept");
    }

    [Fact]
    public void Lines_Drop_The_Oldest_When_The_Host_Does_Not_Read_Them()
    {
        var console = new DomainConsole(10);
        console.Write(Ascii("aaaa\nbbbb\ncccc\n"));
        console.DroppedLines.Should().Be(1);
        console.TryReadLine(out var line).Should().BeTrue();
        line.Should().Be("bbbb");
    }

    [Fact]
    public void A_Host_That_Completes_Output_Does_Not_Disturb_Writers()
    {
        var console = new DomainConsole(16);
        console.Output.Complete(new InvalidOperationException("the host is not interested"));
        var write = () =>
        {
            console.Write(Ascii("after\n"));
            console.Write(Ascii("again\n"));
        };
        write.Should().NotThrow();
        console.TryReadLine(out var line).Should().BeTrue();
        line.Should().Be("after");
        console.BytesWritten.Should().Be(12);
    }

    [Fact]
    public async Task Close_Completes_The_Pipe_And_Refuses_Input()
    {
        var console = new DomainConsole(64);
        console.Write(Ascii("bye"));
        console.Close();
        Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(console.Output)).Should().Be("bye");
        console.Input.Write(Ascii("nobody listens"));
        var flushed = await console.Input.FlushAsync(TestContext.Current.CancellationToken);
        flushed.IsCompleted.Should().BeTrue();
    }
}
