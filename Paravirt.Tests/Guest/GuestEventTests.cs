using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 4: event dispatch over both ABIs, with the host at the other end.</summary>
public sealed class GuestEventTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Theory]
    [InlineData(EventAbi.TwoLevel, false)]
    [InlineData(EventAbi.Fifo, false)]
    [InlineData(EventAbi.Fifo, true)]
    public async Task An_Interdomain_Channel_To_The_Host_Carries_Events_Both_Ways(EventAbi abi, bool classicPv)
    {
        var d = StubRunner.Create(hv, classicPv);
        using var host = hv.Host.AllocUnbound(d);
        var received = 0;
        var run = StubRunner.StartAsync(d, g =>
        {
            g.Events.BindInterdomain(0, host.LocalPort, _ => received++, out var port).Should().Be(0);
            // Xen raises a freshly bound interdomain port once: take that one first.
            g.WaitFor(() => received >= 1, g.Clock.SystemTimeNs() + 5_000_000_000).Should().BeTrue();
            var before = received;
            g.Events.Send(port).Should().Be(0);
            g.WaitFor(() => received > before, g.Clock.SystemTimeNs() + 10_000_000_000).Should().BeTrue("the host answers the guest's event");
        }, new GuestOptions { EventAbi = abi });

        (await host.WaitAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken))
            .Should().BeTrue();
        host.Notify();
        await run;
        received.Should().BeGreaterThanOrEqualTo(2);
    }

    [Theory]
    [InlineData(EventAbi.TwoLevel)]
    [InlineData(EventAbi.Fifo)]
    public async Task A_Masked_Port_Keeps_Its_Event_Pending_Until_Unmasked(EventAbi abi)
    {
        int whileMasked = -1, afterUnmask = -1;
        bool pendingWhileMasked = false, maskedAfterUnmask = true;
        await StubRunner.RunAsync(hv, g =>
        {
            var handled = 0;
            g.Events.BindIpi(0, _ => handled++, out var port).Should().Be(0);
            g.Events.Mask(port);
            g.Events.Send(port).Should().Be(0);
            g.Hypercalls.XenVersion();
            whileMasked = handled;
            pendingWhileMasked = g.Events.IsPending(port);
            g.Events.Unmask(port).Should().Be(0); // pending: EVTCHNOP_unmask re-raises it
            g.WaitFor(() => handled > 0, g.Clock.SystemTimeNs() + 5_000_000_000);
            afterUnmask = handled;
            maskedAfterUnmask = g.Events.IsMasked(port);
        }, options: new GuestOptions { EventAbi = abi });

        whileMasked.Should().Be(0);
        pendingWhileMasked.Should().BeTrue();
        afterUnmask.Should().Be(1);
        maskedAfterUnmask.Should().BeFalse();
    }

    [Theory]
    [InlineData(EventAbi.TwoLevel)]
    [InlineData(EventAbi.Fifo)]
    public async Task Each_Port_Runs_Its_Own_Handler_And_An_Unbound_Port_Runs_None(EventAbi abi)
    {
        var seen = new List<(string, uint)>();
        await StubRunner.RunAsync(hv, g =>
        {
            g.Events.BindIpi(0, p => seen.Add(("a", p)), out var a).Should().Be(0);
            g.Events.BindIpi(0, p => seen.Add(("b", p)), out var b).Should().Be(0);
            g.Events.BindVirq(Core.Abi.Xen.VIRQ_DEBUG, 0, p => seen.Add(("debug", p)), out _).Should().Be(0);
            using (g.IrqsOff())
            {
                g.Events.Send(b).Should().Be(0);
                g.Events.Send(a).Should().Be(0);
            }

            g.WaitFor(() => seen.Count >= 2, g.Clock.SystemTimeNs() + 5_000_000_000).Should().BeTrue();
            g.Events.Unbind(a).Should().Be(0);
            g.Events.Send(a).Should().BeNegative("a closed port cannot be sent on");
            seen.Should().BeEquivalentTo([("a", a), ("b", b)]);
        }, options: new GuestOptions { EventAbi = abi });
    }

    [Fact]
    public async Task A_Secondary_Vcpu_Runs_Its_Entry_And_Takes_Its_Own_Ipi()
    {
        var onVcpu1 = -1;
        await StubRunner.RunAsync(hv, g =>
        {
            var started = false;
            var handledOn = -1;
            g.StartVcpu(1, v =>
            {
                v.Hypercalls.Cpu.VcpuId.Should().Be(1);
                started = true;
                g.Events.BindIpi(1, _ => handledOn = g.Current.Id, out var port).Should().Be(0);
                g.Events.Send(port).Should().Be(0);
                g.WaitFor(() => handledOn >= 0, g.Clock.SystemTimeNs() + 5_000_000_000).Should().BeTrue();
                onVcpu1 = handledOn;
            }).Should().Be(0);
            g.WaitFor(() => onVcpu1 >= 0 || (started && onVcpu1 >= 0), g.Clock.SystemTimeNs() + 10_000_000_000).Should().BeTrue();
        }, options: new GuestOptions { EventAbi = EventAbi.Fifo }, vcpus: 2);

        onVcpu1.Should().Be(1);
    }
}
