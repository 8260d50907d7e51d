using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// Page types, validation and references of the classic PV memory model (xen/arch/x86/mm.c):
/// what pinning checks, what a validated table holds, and that everything is given back.
/// </summary>
public sealed class PageTableValidationTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW, US = PvTestDomain.US;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Pinning_An_L4_Validates_Every_Level_And_Stores_Entries_As_Xen_Does()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        var frames = _hv.Frames;
        var dataMfn = d.Mfn(300);
        var refsBefore = frames.ReferenceCount(dataMfn);

        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);

        PvMemory.TypeOf(d.Domain, d.Mfn(t.L4)).Should().Be(PageType.L4);
        PvMemory.TypeOf(d.Domain, d.Mfn(t.L3)).Should().Be(PageType.L3);
        PvMemory.TypeOf(d.Domain, d.Mfn(t.L2)).Should().Be(PageType.L2);
        PvMemory.TypeOf(d.Domain, d.Mfn(t.L1)).Should().Be(PageType.L1);
        PvMemory.TypeOf(d.Domain, dataMfn).Should().Be(PageType.Writable, "an L1 entry maps it read-write");
        frames.Types.IsPinned(d.Mfn(t.L4)).Should().BeTrue();
        frames.ReferenceCount(dataMfn).Should().Be(refsBefore + 1, "the validated entry holds a reference on the frame it maps");

        // adjust_guest_l*e: user on every level, accessed on L4, a kernel L1 entry marked _PAGE_GUEST_KERNEL.
        (d.Read(t.L4, 0) & (US | PvTestDomain.A)).Should().Be(US | PvTestDomain.A);
        (d.Read(t.L3, 0) & US).Should().Be(US);
        (d.Read(t.L1, 300) & (US | PvTestDomain.GuestKernel)).Should().Be(US | PvTestDomain.GuestKernel);
    }

    [Fact]
    public void A_User_L1_Entry_Becomes_Global()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.Write(t.L1, 301, d.Entry(301, P | RW | US));
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        (d.Read(t.L1, 301) & (PvTestDomain.G | PvTestDomain.GuestKernel)).Should().Be(PvTestDomain.G);
    }

    [Fact]
    public void Pinning_A_Table_That_Maps_Itself_Writable_Is_EBUSY_And_Leaves_No_Trace()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.Write(t.L1, (int)t.L1, d.Entry(t.L1, P | RW)); // the L1 maps itself writable
        var dataMfn = d.Mfn(300);
        var refsBefore = _hv.Frames.ReferenceCount(dataMfn);

        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(-(long)Errno.EBUSY);

        foreach (var pfn in new[] { t.L4, t.L3, t.L2, t.L1 })
        {
            _hv.Frames.Types.CountOf(d.Mfn(pfn)).Should().Be(0, $"pfn {pfn} holds no type after the failed pin");
        }

        _hv.Frames.ReferenceCount(dataMfn).Should().Be(refsBefore, "entries validated before the bad one let go again");
    }

    [Theory]
    [InlineData(PvTestDomain.PCD, 1)] // cache attributes are not a domU's
    [InlineData(PvTestDomain.PWT, 1)]
    [InlineData(1UL << 62, 1)]       // _PAGE_GNTTAB is Xen's
    [InlineData(PvTestDomain.PSE, 2)] // no superpages
    [InlineData(PvTestDomain.G, 2)]
    [InlineData(PvTestDomain.PCD, 3)]
    [InlineData(PvTestDomain.PSE, 4)]
    public void Pinning_A_Table_With_A_Disallowed_Bit_Is_EINVAL(ulong bit, int level)
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        var (table, index) = level switch
        {
            1 => (t.L1, 300),
            2 => (t.L2, 0),
            3 => (t.L3, 0),
            _ => (t.L4, 0),
        };
        d.Write(table, index, d.Read(table, index) | bit);

        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(-(long)Errno.EINVAL);
        _hv.Frames.Types.CountOf(d.Mfn(t.L4)).Should().Be(0);
    }

    [Fact]
    public void An_L1_Entry_Beyond_Machine_Memory_Is_EPERM_As_MMIO()
    {
        var d = new PvTestDomain(_hv);
        var l1 = d.NewPage();
        d.Write(l1, 0, ((ulong)_hv.TotalFrames << 12) | P);
        PvMemory.PinTable(d.Domain, d.Mfn(l1), 1).Should().Be(-(long)Errno.EPERM);
    }

    [Fact]
    public void An_L1_Entry_Mapping_Another_Domains_Frame_Is_EBUSY()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var l1 = d.NewPage();
        d.Write(l1, 0, (other.Mfn(100) << 12) | P);
        PvMemory.PinTable(d.Domain, d.Mfn(l1), 1).Should().Be(-(long)Errno.EBUSY);
    }

    [Fact]
    public void An_L2_Entry_Pointing_At_A_Frame_Mapped_Writable_Is_EINVAL()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.Write(t.L2, 1, d.Entry(300, P | RW)); // pfn 300 is mapped writable by the L1
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void The_Guest_Cannot_Write_A_Pinned_Table_Through_Its_Own_Memory_But_Can_Read_It()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);

        d.Domain.Memory.TryWrite((t.L1 << 12) + 8, 0UL).Should().BeFalse("a validated page table is read-only to everyone but the memory model");
        d.Domain.Memory.TryRead(t.L1 << 12, out ulong _).Should().BeTrue();
        PvMemory.UnpinTable(d.Domain, d.Mfn(t.L4)).Should().Be(0);
        d.Domain.Memory.TryWrite((t.L1 << 12) + 8, d.Read(t.L1, 1)).Should().BeTrue("unpinned, the last type reference went and it is a plain page again");
    }

    [Fact]
    public void Unpinning_Twice_Is_EINVAL_And_Unpinning_Drops_Every_Type()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(-(long)Errno.EINVAL, "already pinned");

        PvMemory.UnpinTable(d.Domain, d.Mfn(t.L4)).Should().Be(0);
        PvMemory.UnpinTable(d.Domain, d.Mfn(t.L4)).Should().Be(-(long)Errno.EINVAL, "not pinned");
        foreach (var pfn in new[] { t.L4, t.L3, t.L2, t.L1, 300UL })
        {
            _hv.Frames.Types.CountOf(d.Mfn(pfn)).Should().Be(0, $"pfn {pfn} holds no type once the root is unpinned");
        }
    }

    [Fact]
    public void A_Page_Mapped_Writable_Cannot_Be_Pinned_And_A_Page_Table_Cannot_Be_Mapped_Writable()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);

        // pfn 300 is mapped writable through the L1: it cannot become an L1.
        PvMemory.PinTable(d.Domain, d.Mfn(300), 1).Should().Be(-(long)Errno.EINVAL);

        // The L2 cannot gain a writable mapping.
        d.MmuUpdate((d.PtePtr(t.L1, 400), d.Entry(t.L2, P | RW))).Should().Be(-(long)Errno.EBUSY);
        d.MmuUpdate((d.PtePtr(t.L1, 400), d.Entry(t.L2, P))).Should().Be(0, "read-only is fine");
    }

    [Fact]
    public void Changing_A_Frames_Type_Away_From_Writable_Asks_Every_Vcpu_To_Flush()
    {
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        var page = d.NewPage();
        d.MmuUpdate((d.PtePtr(t.L1, (int)page), d.Entry(page, P | RW))).Should().Be(0);
        d.MmuUpdate((d.PtePtr(t.L1, (int)page), d.Entry(page, P))).Should().Be(0);
        foreach (var v in d.Domain.VcpuList)
        {
            v.Pv.TakeTlbFlushRequest();
        }

        PvMemory.PinTable(d.Domain, d.Mfn(page), 1).Should().Be(0);

        foreach (var v in d.Domain.VcpuList)
        {
            v.Pv.TakeTlbFlushRequest().Should().BeTrue($"vCPU {v.Id} may still cache the old writable translation");
        }
    }

    [Fact]
    public void The_Guest_Entries_In_Xens_L4_Slots_Are_Cleared_On_Pin()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.Write(t.L4, 256, d.Entry(t.L3, P | RW));
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        d.Read(t.L4, 256).Should().Be(0, "init_xen_l4_slots clobbers the hypervisor's slots");
        PvMemory.TypeOf(d.Domain, d.Mfn(t.L3)).Should().Be(PageType.L3);
    }

    [Fact]
    public void SetKernelBase_Holds_The_L4_And_Switching_Releases_The_Old_One()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.SetKernelBase(d.Vcpu, d.Mfn(t.L4)).Should().Be(0, "an unpinned L4 is validated on the spot");
        d.Vcpu.Pv.KernelBaseMfn.Should().Be(d.Mfn(t.L4));
        d.Vcpu.Pv.TakeTlbFlushRequest().Should().BeTrue();
        _hv.Frames.Types.CountOf(d.Mfn(t.L4)).Should().Be(1);

        var l4b = d.NewUnmappedPage();
        d.Write(l4b, 0, d.Read(t.L4, 0) & ~0xFFFUL | P | RW);
        PvMemory.SetKernelBase(d.Vcpu, d.Mfn(l4b)).Should().Be(0);
        _hv.Frames.Types.CountOf(d.Mfn(t.L4)).Should().Be(0, "the old base was its only holder");
        _hv.Frames.Types.CountOf(d.Mfn(t.L3)).Should().Be(1, "the new L4 holds the shared L3");
        PvMemory.SetKernelBase(d.Vcpu, 0).Should().Be(-(long)Errno.EINVAL);
        PvMemory.SetKernelBase(d.Vcpu, d.Mfn(300)).Should().Be(-(long)Errno.EINVAL, "a plain page mapped writable is no L4");
    }

    [Fact]
    public void Destroying_A_Domain_Returns_Every_Frame_With_Tables_Pinned_And_Bases_Set()
    {
        var free = _hv.FreeFrames;
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        PvMemory.PinTable(d.Domain, d.Mfn(t.L1), 1).Should().Be(0);
        PvMemory.SetKernelBase(d.Domain.VcpuList[0], d.Mfn(t.L4)).Should().Be(0);
        PvMemory.SetKernelBase(d.Domain.VcpuList[1], d.Mfn(t.L4)).Should().Be(0);
        PvMemory.SetUserBase(d.Domain.VcpuList[1], d.Mfn(t.L4)).Should().Be(0);
        var mfns = new[] { t.L4, t.L3, t.L2, t.L1, 300UL }.Select(d.Mfn).ToArray();

        d.Domain.Destroy();

        _hv.FreeFrames.Should().Be(free, "every frame, tables and mapped pages included, came back");
        foreach (var mfn in mfns)
        {
            _hv.Frames.Types.CountOf(mfn).Should().Be(0);
            _hv.Frames.Types.IsPinned(mfn).Should().BeFalse();
        }
    }

    [Fact]
    public void A_Page_Table_Cannot_Become_A_Hypervisor_View_Nor_A_View_A_Page_Table()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        Paravirt.Core.Memory.PinnedPage.TryPin(_hv.Frames, d.Mfn(t.L1), d.Domain.Id).Should().BeNull("Xen takes a writable type for vcpu_info and rings");

        // The console ring is held by the console backend: it can be mapped, never pinned as a table.
        var console = Paravirt.Core.Boot.DomainBuilder.ConsoleMfn(d.Domain);
        var l1 = d.NewUnmappedPage();
        d.Write(l1, 0, (console << 12) | P | RW);
        PvMemory.PinTable(d.Domain, d.Mfn(l1), 1).Should().Be(0, "a writable mapping of a page the hypervisor writes is fine");
        PvMemory.PinTable(d.Domain, console, 1).Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void SegDesc_Pages_Exclude_Writable_Mappings()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        var gdt = d.NewPage();
        PvMemory.GetSegDescPage(d.Domain, d.Mfn(gdt)).Should().Be(-(long)Errno.EINVAL, "it is mapped writable");
        d.MmuUpdate((d.PtePtr(t.L1, (int)gdt), d.Entry(gdt, P))).Should().Be(0);
        PvMemory.GetSegDescPage(d.Domain, d.Mfn(gdt)).Should().Be(0);
        d.MmuUpdate((d.PtePtr(t.L1, (int)gdt), d.Entry(gdt, P | RW))).Should().Be(-(long)Errno.EBUSY);
        PvMemory.PutSegDescPage(d.Domain, d.Mfn(gdt));
        d.MmuUpdate((d.PtePtr(t.L1, (int)gdt), d.Entry(gdt, P | RW))).Should().Be(0);
        PvMemory.GetSegDescPage(d.Domain, d.Mfn(gdt)).Should().Be(-(long)Errno.EINVAL, "mapped writable again");
    }
}
