using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 3: the virtual IF flag, halt, time and one-shot timers.</summary>
public sealed class GuestPvOpsTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Theory]
    [InlineData(EventAbi.TwoLevel)]
    [InlineData(EventAbi.Fifo)]
    public async Task A_Masked_Event_Is_Delivered_When_Events_Are_Enabled_Again(EventAbi abi)
    {
        int whileMasked = -1, afterEnable = -1;
        await StubRunner.RunAsync(hv, g =>
        {
            var handled = 0;
            g.Events.BindIpi(0, _ => handled++, out var port).Should().Be(0);
            var was = g.DisableIrqs();
            was.Should().BeFalse();
            g.Events.Send(port).Should().Be(0);
            g.Hypercalls.XenVersion(); // a hypercall with events masked delivers nothing
            whileMasked = handled;
            g.EnableIrqs(); // sees evtchn_upcall_pending and forces the callback
            afterEnable = handled;
        }, options: new GuestOptions { EventAbi = abi });

        whileMasked.Should().Be(0);
        afterEnable.Should().Be(1);
    }

    [Fact]
    public async Task Halt_Blocks_Until_The_Timer_Virq_Wakes_The_Vcpu()
    {
        ulong start = 0, woke = 0;
        var fired = false;
        await StubRunner.RunAsync(hv, g =>
        {
            start = g.Clock.SystemTimeNs();
            g.Clock.AddTimer(start + 20_000_000, () => fired = true);
            while (!fired)
            {
                g.Halt();
            }

            woke = g.Clock.SystemTimeNs();
        });

        fired.Should().BeTrue();
        (woke - start).Should().BeGreaterThanOrEqualTo(20_000_000, "the timer fired no earlier than its deadline");
    }

    [Fact]
    public async Task Timers_Fire_In_Deadline_Order_And_A_Cancelled_One_Never_Fires()
    {
        var order = new List<int>();
        await StubRunner.RunAsync(hv, g =>
        {
            var now = g.Clock.SystemTimeNs();
            g.Clock.AddTimer(now + 30_000_000, () => order.Add(3));
            g.Clock.AddTimer(now + 10_000_000, () => order.Add(1));
            var cancelled = g.Clock.AddTimer(now + 20_000_000, () => order.Add(2));
            g.Clock.CancelTimer(cancelled).Should().BeTrue();
            g.WaitFor(() => order.Count == 2, now + 5_000_000_000).Should().BeTrue();
            g.Clock.PendingTimers.Should().Be(0);
        });

        order.Should().Equal(1, 3);
    }

    [Fact]
    public async Task System_Time_Is_Monotonic_And_Sleep_Lasts_At_Least_Its_Length()
    {
        var backwards = 0;
        ulong slept = 0;
        await StubRunner.RunAsync(hv, g =>
        {
            var last = g.Clock.SystemTimeNs();
            for (var i = 0; i < 10_000; i++)
            {
                var now = g.Clock.SystemTimeNs();
                if (now < last)
                {
                    backwards++;
                }

                last = now;
            }

            var before = g.Clock.SystemTimeNs();
            g.Sleep(15_000_000);
            slept = g.Clock.SystemTimeNs() - before;
        });

        backwards.Should().Be(0);
        slept.Should().BeGreaterThanOrEqualTo(15_000_000);
    }

    [Fact]
    public async Task The_Wallclock_Is_The_Hosts_Time()
    {
        DateTimeOffset guestNow = default;
        var before = DateTimeOffset.UtcNow;
        await StubRunner.RunAsync(hv, g => g.Clock.TryGetWallclock(out guestNow).Should().BeTrue());
        var after = DateTimeOffset.UtcNow;
        guestNow.Should().BeOnOrAfter(before.AddSeconds(-2)).And.BeOnOrBefore(after.AddSeconds(2));
    }

    [Fact]
    public async Task WaitFor_Times_Out_On_A_Condition_That_Never_Holds()
    {
        bool result = true;
        ulong waited = 0;
        await StubRunner.RunAsync(hv, g =>
        {
            var start = g.Clock.SystemTimeNs();
            result = g.WaitFor(() => false, start + 10_000_000);
            waited = g.Clock.SystemTimeNs() - start;
        });

        result.Should().BeFalse();
        waited.Should().BeGreaterThanOrEqualTo(10_000_000);
    }
}
