using System.Diagnostics;
using Paravirt.Core.Backends.Network;

namespace Paravirt.Tests.Backends.Network;

/// <summary>netback's transmit credit, on a clock the test moves.</summary>
public sealed class CreditLimiterTests
{
    private static readonly long Window = Stopwatch.Frequency / 20; // 50 ms in Stopwatch ticks

    [Fact]
    public void Credit_Is_Spent_Then_A_Frame_Waits_For_The_Next_Window()
    {
        var l = new CreditLimiter(3000, TimeSpan.FromMilliseconds(50), now: 0);
        l.TryConsume(1500, 10, out _).Should().BeTrue();
        l.TryConsume(1500, 20, out _).Should().BeTrue();
        l.TryConsume(1, 30, out var retry).Should().BeFalse("the window's 3000 bytes are spent");
        retry.Should().Be(Window);
        l.TryConsume(1, Window - 1, out _).Should().BeFalse();
        l.TryConsume(1000, Window, out _).Should().BeTrue("a new window brings 3000 more");
        l.Remaining.Should().Be(2000);
        l.Waits.Should().Be(2);
    }

    [Fact]
    public void Unused_Credit_Does_Not_Pile_Up_Into_A_Burst()
    {
        var l = new CreditLimiter(3000, TimeSpan.FromMilliseconds(50), now: 0);
        l.TryConsume(2000, 0, out _).Should().BeTrue();
        l.TryConsume(2000, 100 * Window, out _).Should().BeTrue(); // replenished, capped at 3000
        l.Remaining.Should().Be(1000);
        l.TryConsume(1001, (100 * Window) + 1, out _).Should().BeFalse();
    }

    [Fact]
    public void A_Frame_Larger_Than_The_Credit_Goes_Once_The_Credit_Is_Full()
    {
        var l = new CreditLimiter(1000, TimeSpan.FromMilliseconds(50), now: 0);
        l.TryConsume(1514, 0, out _).Should().BeTrue("the credit is full: a larger frame is not stuck for ever");
        l.Remaining.Should().Be(0);
        l.TryConsume(1514, 1, out _).Should().BeFalse();
        l.TryConsume(1514, Window, out _).Should().BeTrue("full again after a window");
    }

    [Fact]
    public void Over_Any_Run_The_Bytes_Sent_Stay_Within_The_Credit_Of_The_Windows_Passed()
    {
        var l = new CreditLimiter(5000, TimeSpan.FromMilliseconds(50), now: 0);
        var rng = new Random(42);
        long now = 0, sent = 0;
        for (var i = 0; i < 100_000; i++)
        {
            now += rng.Next(0, (int)(Window / 50));
            var size = rng.Next(60, 1515);
            if (l.TryConsume(size, now, out _))
            {
                sent += size;
            }

            (sent <= 5000 * (1 + (now / Window))).Should().BeTrue($"after {i} frames at t={now}: {sent} bytes sent");
        }

        sent.Should().BeGreaterThan(5000 * (now / Window) * 9 / 10, "and the credit is used when frames keep coming (a window opens at the first frame after it is due)");
    }
}
