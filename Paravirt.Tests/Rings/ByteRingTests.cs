using System.Text;
using Paravirt.Core.Rings;

namespace Paravirt.Tests.Rings;

/// <summary>The console and XenStore byte rings over a plain page.</summary>
public sealed class ByteRingTests
{
    [Fact]
    public void Bytes_Written_By_One_Side_Are_Read_By_The_Other_Across_The_Wrap()
    {
        var page = new byte[4096];
        var writer = ByteRing.XenStoreRequests(page);
        var reader = ByteRing.XenStoreRequests(page);
        var buffer = new byte[700];
        for (var round = 0; round < 20; round++)
        {
            var text = Encoding.ASCII.GetBytes($"round {round} " + new string((char)('a' + round), 600));
            writer.Write(text).Should().Be(text.Length);
            var n = reader.Read(buffer);
            buffer.AsSpan(0, n).ToArray().Should().Equal(text);
        }
    }

    [Fact]
    public void A_Full_Ring_Takes_Only_What_Fits()
    {
        var page = new byte[4096];
        var ring = ByteRing.ConsoleIn(page);
        ring.Write(new byte[1000]).Should().Be(1000);
        ring.Write(new byte[100]).Should().Be(24);
        ring.Write(new byte[1]).Should().Be(0);
        ring.Available.Should().Be(1024);
    }

    [Fact]
    public void The_Layouts_Match_The_Abi_Structs()
    {
        var page = new byte[4096];
        ByteRing.ConsoleOut(page).Size.Should().Be(2048);
        ByteRing.ConsoleIn(page).Size.Should().Be(1024);
        ByteRing.XenStoreRequests(page).Size.Should().Be(Paravirt.Core.Abi.Io.XsWire.XENSTORE_RING_SIZE);
        FluentActions.Invoking(() => new ByteRing(page, 0, 1000, 2048, 2052)).Should().Throw<ArgumentException>().WithMessage("*power of two*");
    }
}
