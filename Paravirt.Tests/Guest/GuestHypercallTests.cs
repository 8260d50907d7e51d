using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 2: the typed hypercall wrappers return Xen's results and errnos.</summary>
public sealed class GuestHypercallTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Wrappers_Return_Xens_Answers_And_Negative_Errnos()
    {
        long version = 0, closeBad = 0, sendBad = 0, pageSize = 0, current = 0, unknownFeature = 0, status = 0, readConsole = 0;
        string caps = "";
        E820Range[] map = [];
        uint submap = 0;
        evtchn_status st = default;
        var calls = new multicall_entry[2];
        await StubRunner.RunAsync(hv, g =>
        {
            var hc = g.Hypercalls;
            version = hc.XenVersion();
            hc.XenVersionString(XenVersion.XENVER_capabilities, out caps).Should().Be(0);
            pageSize = hc.XenVersionPageSize();
            unknownFeature = hc.GetFeatures(5, out _);
            hc.GetFeatures(0, out submap).Should().Be(0);
            closeBad = hc.EvtchnClose(4000);
            sendBad = hc.EvtchnSend(0);
            hc.MemoryMap(out map).Should().Be(0);
            current = hc.CurrentReservation();
            hc.EvtchnBindIpi(0, out var port).Should().Be(0);
            status = hc.EvtchnStatus(port, out st);
            readConsole = hc.ConsoleRead(new byte[16]);
            hc.ConsoleWrite("hello from the stub\n"u8).Should().Be(0);
            calls[0].op = Xen.__HYPERVISOR_xen_version;
            calls[1].op = Xen.__HYPERVISOR_event_channel_op;
            unsafe
            {
                calls[1].args[0] = EventChannel.EVTCHNOP_close;
                calls[1].args[1] = 0xDEAD_0000_0000; // an unmapped argument: -EFAULT in that entry
            }

            hc.Multicall(calls).Should().Be(0);
        });

        version.Should().Be((4 << 16) | 17);
        caps.Should().Be("xen-3.0-x86_64");
        pageSize.Should().Be(4096);
        unknownFeature.Should().Be(-(long)Errno.EINVAL);
        (submap & (1u << Features.XENFEAT_auto_translated_physmap)).Should().NotBe(0u);
        closeBad.Should().Be(-(long)Errno.EINVAL);
        sendBad.Should().Be(-(long)Errno.EINVAL);
        map.Should().ContainSingle().Which.Type.Should().Be(1u);
        current.Should().BeGreaterThanOrEqualTo(8 * 256);
        status.Should().Be(0);
        st.status.Should().Be((uint)EventChannel.EVTCHNSTAT_ipi);
        readConsole.Should().Be(-(long)Errno.EPERM);
        ((long)calls[0].result).Should().Be((4 << 16) | 17);
        ((long)calls[1].result).Should().Be(-(long)Errno.EFAULT);
    }

    [Fact]
    public async Task Console_Io_Writes_Reach_The_Domain_Console()
    {
        var d = StubRunner.Create(hv);
        var console = d.Console;
        await StubRunner.StartAsync(d, g => g.Hypercalls.ConsoleWrite("line one\nline two\n"u8).Should().Be(0));
        console.TryReadLine(out var one).Should().BeTrue();
        console.TryReadLine(out var two).Should().BeTrue();
        (one, two).Should().Be(("line one", "line two"));
    }

    [Fact]
    public async Task An_Upcall_During_A_Hypercall_Does_Not_Clobber_Its_Arguments()
    {
        uint bound = 0, inner = 0;
        var handled = 0;
        await StubRunner.RunAsync(hv, g =>
        {
            // An IPI left pending with events masked: the next hypercall made with events enabled
            // delivers the upcall on its way out, and the handler makes hypercalls of its own.
            g.Events.BindIpi(0, _ =>
            {
                handled++;
                g.Hypercalls.EvtchnBindIpi(0, out inner);
                g.Hypercalls.XenVersionString(XenVersion.XENVER_extraversion, out string _);
            }, out var ipi).Should().Be(0);
            using (g.IrqsOff())
            {
                g.Events.Send(ipi).Should().Be(0);
            }

            // IrqsOff's end forced the upcall; now a bind whose exit carries another upcall.
            g.DisableIrqs();
            g.Events.Send(ipi);
            g.Memory.WriteVolatile(g.Current.VcpuInfoAddress + 1, 1, 0); // unmask without forcing
            g.Hypercalls.EvtchnBindIpi(0, out bound).Should().Be(0);
        });

        handled.Should().Be(2);
        inner.Should().NotBe(0);
        bound.Should().BeLessThan(inner, "the port Xen wrote back for the interrupted bind survives the nested upcall's own bind (which got the next port)");
    }
}
