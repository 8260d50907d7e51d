using Paravirt.Cli.Host;

namespace Paravirt.Tests.Cli.Host;

public sealed class MarkerWriterTests
{
    [Fact]
    public void The_Marker_Is_Seen_Once_Even_Split_Across_Writes_And_Everything_Passes_Through()
    {
        var inner = new StringWriter();
        var seen = 0;
        var writer = new MarkerWriter(inner, "READY-42", () => seen++);

        writer.Write("boot log ... REA");
        seen.Should().Be(0);
        writer.Write('D');
        writer.Write("Y-4".ToCharArray(), 0, 3);
        writer.Write("2 and on READY-42 again");

        seen.Should().Be(1, "the first occurrence, written in three pieces, fires; later ones do not");
        writer.Seen.Should().BeTrue();
        inner.ToString().Should().Be("boot log ... READY-42 and on READY-42 again");
    }

    [Fact]
    public void Text_Without_The_Marker_Never_Fires()
    {
        var writer = new MarkerWriter(new StringWriter(), "READY", () => throw new InvalidOperationException("must not fire"));
        writer.Write("REA");
        writer.Write("D-Y, RE");
        writer.Write("ADX READ");
        writer.Seen.Should().BeFalse();
    }
}
