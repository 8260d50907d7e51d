using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 1: start of day, memory and callbacks, translated and classic PV.</summary>
public sealed class GuestBootTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task A_Translated_Guest_Boots_Maps_Shared_Info_And_Allocates_Zeroed_Pages_Above_Pt_Base()
    {
        BootInfo? info = null;
        ulong sharedInfo = 0, wcSec = 0;
        GuestPage a = default, b = default, c = default;
        bool zeroed = false, irqsOff = true;
        await StubRunner.RunAsync(hv, g =>
        {
            info = g.Info;
            sharedInfo = g.SharedInfoAddress;
            g.Clock.TryReadBootWallclock(out wcSec, out _).Should().BeTrue();
            a = g.Pages.Allocate();
            g.Memory.Write(a.Address, (byte)0xAB);
            g.Pages.Free(a);
            b = g.Pages.Allocate();
            zeroed = g.Memory.Read<byte>(b.Address) == 0;
            c = g.Pages.Allocate();
            irqsOff = g.IrqsDisabled;
        });

        info!.Magic.Should().Be("xen-3.0-x86_64");
        info.IsAutoTranslated.Should().BeTrue();
        info.NrPages.Should().Be(8 * 256);
        sharedInfo.Should().Be(info.NrPages << 12, "the first physmap slot above RAM");
        wcSec.Should().BeGreaterThan(1_600_000_000, "the wallclock is readable through the mapped shared_info");
        a.Pfn.Should().BeGreaterThanOrEqualTo(info.PtBase >> 12);
        b.Pfn.Should().Be(a.Pfn, "a freed page is reused");
        zeroed.Should().BeTrue("pages come back zeroed");
        c.Pfn.Should().NotBe(b.Pfn);
        c.Frame.Should().Be(c.Pfn, "a translated guest names pages by GFN");
        irqsOff.Should().BeFalse("boot ends with events enabled");
    }

    [Fact]
    public async Task A_Bad_Magic_Is_Refused_With_A_Clear_Message()
    {
        Exception? error = null;
        await StubRunner.RunAsync(hv, g =>
        {
            g.Memory.Write(g.Info.Address, (byte)'X');
            error = Record.Exception(() => BootInfo.Read(g.Memory, g.Info.Address));
        });

        error.Should().BeOfType<InvalidOperationException>().Which.Message.Should().Contain("expected 'xen-3.0-x86_64'");
    }

    [Fact]
    public async Task A_Classic_Pv_Guest_Boots_With_Mfns_From_Its_P2m_List_And_Fifo_Events()
    {
        BootInfo? info = null;
        GuestPage page = default;
        ulong expectedMfn = 0;
        EventAbi abi = EventAbi.TwoLevel;
        ulong sharedInfo = 1;
        ulong? storePfn = null;
        using var shift = new DomainHolder(hv.CreateDomain(new DomainConfig { Name = "shift-mfns", MemoryMiB = 4 })); // so MFNs differ from pfns
        await StubRunner.RunAsync(hv, g =>
        {
            info = g.Info;
            page = g.Pages.Allocate();
            expectedMfn = GuestVcpu.MfnOf(g.Current.Cpu!, g.Info.Address, page.Address);
            abi = g.Events.Abi;
            sharedInfo = g.SharedInfoAddress;
            storePfn = g.Pages.PfnOf(g.Info.StoreFrame);
        }, classicPv: true);

        info!.IsAutoTranslated.Should().BeFalse();
        info.MfnList.Should().NotBe(0);
        page.Frame.Should().Be(expectedMfn).And.NotBe(page.Pfn, "classic PV names pages by MFN");
        abi.Should().Be(EventAbi.Fifo, "the 2-level bitmaps live in shared_info, which an unpaged classic PV guest cannot map");
        sharedInfo.Should().Be(0);
        storePfn.Should().Be(2, "the store page's MFN maps back to pfn 2 through the P→M list");
    }

    [Fact]
    public async Task Boot_Registers_The_Event_Callback_So_An_Event_Reaches_The_Stub()
    {
        var handled = 0;
        await StubRunner.RunAsync(hv, g =>
        {
            g.Events.BindIpi(0, _ => handled++, out var port).Should().Be(0);
            g.Events.Send(port).Should().Be(0);
            g.WaitFor(() => handled > 0, g.Clock.SystemTimeNs() + 5_000_000_000).Should().BeTrue();
        });

        handled.Should().Be(1);
    }

    private sealed class DomainHolder(Domain d) : IDisposable
    {
        public void Dispose() => d.Destroy();
    }
}
