using Paravirt.Core.Events;

namespace Paravirt.Tests.Events;

/// <summary>The host's per-port pending bit and its awaitable edge (<see cref="HostEventDelivery.PortSignal"/>).</summary>
public sealed class HostPortSignalTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task A_Notification_Before_The_Wait_Is_Kept_And_Repeated_Ones_Coalesce()
    {
        var s = new HostEventDelivery.PortSignal();
        s.Set();
        s.Set();
        s.IsSet.Should().BeTrue();
        (await s.WaitAsync(TestContext.Current.CancellationToken)).Should().BeTrue();
        s.IsSet.Should().BeFalse("the wait consumed the one pending bit");
        var next = s.WaitAsync(TestContext.Current.CancellationToken);
        next.IsCompleted.Should().BeFalse("two sends before a wait are one notification");
        s.Set();
        (await next.AsTask().WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeTrue();
    }

    [Fact]
    public async Task A_Waiter_Is_Woken_By_The_Next_Notification_Many_Times_Over()
    {
        var s = new HostEventDelivery.PortSignal();
        for (var i = 0; i < 1000; i++)
        {
            var wait = s.WaitAsync(TestContext.Current.CancellationToken);
            s.Set();
            (await wait.AsTask().WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeTrue($"wake-up {i}");
            s.IsSet.Should().BeFalse("a notification handed to a waiter leaves no pending bit");
        }
    }

    [Fact]
    public async Task Two_Waiters_At_Once_Are_Both_Served_By_Two_Notifications()
    {
        var s = new HostEventDelivery.PortSignal();
        var first = s.WaitAsync(TestContext.Current.CancellationToken).AsTask();
        var second = s.WaitAsync(TestContext.Current.CancellationToken).AsTask();
        s.Set();
        var woken = await Task.WhenAny(first, second).WaitAsync(Bound, TestContext.Current.CancellationToken);
        (await woken).Should().BeTrue();
        var other = woken == first ? second : first;
        other.IsCompleted.Should().BeFalse("one notification wakes one waiter");
        s.Set();
        (await other.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeTrue();
    }

    [Fact]
    public async Task A_Cancelled_Wait_Throws_And_The_Next_Wait_Still_Gets_The_Next_Notification()
    {
        var s = new HostEventDelivery.PortSignal();
        using var cts = new CancellationTokenSource();
        var cancelled = s.WaitAsync(cts.Token).AsTask();
        await cts.CancelAsync();
        var act = () => cancelled.WaitAsync(Bound, TestContext.Current.CancellationToken);
        await act.Should().ThrowAsync<OperationCanceledException>();

        var next = s.WaitAsync(TestContext.Current.CancellationToken).AsTask();
        s.Set();
        (await next.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeTrue("the cancelled wait did not take the notification");
        s.IsSet.Should().BeFalse();
    }

    [Fact]
    public async Task Close_Ends_Every_Wait_With_False()
    {
        var s = new HostEventDelivery.PortSignal();
        var first = s.WaitAsync(TestContext.Current.CancellationToken).AsTask();
        var second = s.WaitAsync(TestContext.Current.CancellationToken).AsTask();
        s.Close();
        (await first.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeFalse();
        (await second.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().BeFalse();
        (await s.WaitAsync(TestContext.Current.CancellationToken)).Should().BeFalse("a closed port stays closed");
        s.Set();
        s.IsSet.Should().BeFalse("a closed port takes no notification");
    }

    [Fact]
    public async Task Notifications_From_Another_Thread_Are_Never_Lost()
    {
        var s = new HostEventDelivery.PortSignal();
        const int Rounds = 5000;
        var acks = new SemaphoreSlim(0);
        var sender = Task.Run(async () =>
        {
            for (var i = 0; i < Rounds; i++)
            {
                s.Set();
                await acks.WaitAsync(TestContext.Current.CancellationToken);
            }
        }, TestContext.Current.CancellationToken);

        for (var i = 0; i < Rounds; i++)
        {
            (await s.WaitAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(Bound, TestContext.Current.CancellationToken))
                .Should().BeTrue($"notification {i} arrives");
            acks.Release();
        }

        await sender.WaitAsync(Bound, TestContext.Current.CancellationToken);
    }
}
