using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;
using Paravirt.Tests.Memory.Pv;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

/// <summary>mmu_update as Xen 4.17's do_mmu_update answers a 64-bit PV domU, including the abuse cases.</summary>
public sealed class MmuUpdateTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void A_Normal_Update_Of_A_Validated_L1_Maps_A_New_Page_And_Moves_The_References()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var page = d.NewUnmappedPage();
        var refs = _hv.Frames.ReferenceCount(d.Mfn(page));

        d.MmuUpdate((d.PtePtr(t.L1, 100), d.Entry(page, P | RW))).Should().Be(0);

        _hv.Frames.ReferenceCount(d.Mfn(page)).Should().Be(refs + 1);
        PvMemory.TypeOf(d.Domain, d.Mfn(page)).Should().Be(PageType.Writable);
        PvMemory.TryTranslate(d.Vcpu, 100 << 12 | 0x10, write: true, out var ma).Should().BeTrue();
        ma.Should().Be((d.Mfn(page) << 12) | 0x10);

        d.MmuUpdate((d.PtePtr(t.L1, 100), 0)).Should().Be(0);
        _hv.Frames.ReferenceCount(d.Mfn(page)).Should().Be(refs, "the cleared entry let go");
        _hv.Frames.Types.CountOf(d.Mfn(page)).Should().Be(0);
        PvMemory.TryTranslate(d.Vcpu, 100 << 12, write: false, out _).Should().BeFalse();
    }

    [Fact]
    public void Writable_Mapping_Of_A_Page_Table_Frame_Is_EBUSY()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        d.MmuUpdate((d.PtePtr(t.L1, (int)t.L1), d.Entry(t.L1, P | RW))).Should().Be(-(long)Errno.EBUSY);
        d.MmuUpdate((d.PtePtr(t.L1, 100), d.Entry(t.L4, P | RW))).Should().Be(-(long)Errno.EBUSY);
        (d.Read(t.L1, (int)t.L1) & RW).Should().Be(0, "the entry was not changed");
    }

    [Fact]
    public void Mapping_A_Foreign_Frame_Is_EBUSY()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var foreign = other.Mfn(100);
        var refs = _hv.Frames.ReferenceCount(foreign);
        d.MmuUpdate((d.PtePtr(t.L1, 100), (foreign << 12) | P)).Should().Be(-(long)Errno.EBUSY);
        d.MmuUpdate((d.PtePtr(t.L1, 100), (foreign << 12) | P | RW)).Should().Be(-(long)Errno.EBUSY);
        _hv.Frames.ReferenceCount(foreign).Should().Be(refs);
        _hv.Frames.Types.CountOf(foreign).Should().Be(0);
    }

    [Fact]
    public void An_L4_Entry_In_Xens_Slots_Is_EINVAL()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var l3 = d.NewUnmappedPage();
        foreach (var slot in new[] { PvDomainMemory.FirstXenSlot, PvDomainMemory.LastXenSlot })
        {
            d.MmuUpdate((d.PtePtr(t.L4, slot), d.Entry(l3, P | RW))).Should().Be(-(long)Errno.EINVAL, $"slot {slot} is Xen's");
        }

        d.MmuUpdate((d.PtePtr(t.L4, PvDomainMemory.LastXenSlot + 1), d.Entry(l3, P | RW))).Should().Be(0, "the slot after Xen's range is the guest's");
        PvMemory.TypeOf(d.Domain, d.Mfn(l3)).Should().Be(PageType.L3);
        PvDomainMemory.FirstXenSlot.Should().Be(256);
        PvDomainMemory.LastXenSlot.Should().Be(271);
    }

    [Fact]
    public void An_Update_Of_A_Frame_The_Guest_Does_Not_Own_Is_EINVAL()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var target = other.Mfn(100);
        d.MmuUpdate(((target << 12) + 8, 0xdead_beef)).Should().Be(-(long)Errno.EINVAL);
        other.Read(100, 1).Should().Be(0, "the other domain's page is untouched");
        d.MmuUpdate((((ulong)_hv.TotalFrames << 12) + 8, 1)).Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void An_Update_Of_A_Plain_Page_Is_A_Plain_Write()
    {
        var d = new PvTestDomain(_hv);
        var page = d.NewUnmappedPage();
        d.MmuUpdate((d.PtePtr(page, 5), 0x1234_5678)).Should().Be(0);
        d.Read(page, 5).Should().Be(0x1234_5678);
        _hv.Frames.Types.CountOf(d.Mfn(page)).Should().Be(0, "the transient writable type went");
    }

    [Fact]
    public void A_Batch_Stops_At_The_First_Failure_And_Reports_How_Many_Were_Done()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var a = d.NewUnmappedPage();
        var b = d.NewUnmappedPage();
        var rc = d.MmuUpdateWithDone(
            out var done,
            (d.PtePtr(t.L1, 100), d.Entry(a, P)),
            (d.PtePtr(t.L1, 101), d.Entry(b, P | RW)),
            (d.PtePtr(t.L1, 102), d.Entry(t.L2, P | RW)),
            (d.PtePtr(t.L1, 103), d.Entry(a, P)));
        rc.Should().Be(-(long)Errno.EBUSY);
        done.Should().Be(2u);
        d.Read(t.L1, 101).Should().NotBe(0);
        (d.Read(t.L1, 103) & 0xFFFFFFFFFF000UL).Should().Be(d.Mfn(103) << 12, "the request after the failure did not run");
    }

    [Fact]
    public void Preserve_AD_Keeps_The_Accessed_And_Dirty_Bits_Already_In_The_Entry()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.Write(t.L1, 100, d.Entry(100, P | RW | PvTestDomain.A | PvTestDomain.D));
        PvMemory.PinTable(d.Domain, d.Mfn(t.L4), 4).Should().Be(0);
        d.MmuUpdate((d.PtePtr(t.L1, 100, Xen.MMU_PT_UPDATE_PRESERVE_AD), d.Entry(100, P))).Should().Be(0);
        (d.Read(t.L1, 100) & (PvTestDomain.A | PvTestDomain.D | RW)).Should().Be(PvTestDomain.A | PvTestDomain.D);
        d.MmuUpdate((d.PtePtr(t.L1, 100), d.Entry(100, P))).Should().Be(0);
        (d.Read(t.L1, 100) & (PvTestDomain.A | PvTestDomain.D)).Should().Be(0);
    }

    [Fact]
    public void Replacing_An_L2_Entry_Validates_The_New_L1_And_Releases_The_Old_One()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var l1b = d.NewUnmappedPage();
        d.Write(l1b, 0, d.Entry(300, P));
        foreach (var v in d.Domain.VcpuList)
        {
            v.Pv.TakeTlbFlushRequest();
        }

        d.MmuUpdate((d.PtePtr(t.L2, 1), d.Entry(l1b, P | RW))).Should().Be(0);
        PvMemory.TypeOf(d.Domain, d.Mfn(l1b)).Should().Be(PageType.L1);
        d.Vcpu.Pv.TakeTlbFlushRequest().Should().BeTrue("an L2-L4 change flushes the linear page tables");
        PvMemory.TryTranslate(d.Vcpu, 0x20_0000, write: false, out var ma).Should().BeTrue();
        ma.Should().Be(d.Mfn(300) << 12);

        d.MmuUpdate((d.PtePtr(t.L2, 1), 0)).Should().Be(0);
        _hv.Frames.Types.CountOf(d.Mfn(l1b)).Should().Be(0);
    }

    [Fact]
    public void MachPhys_Update_Sets_The_M2P_Of_An_Own_Frame_Only()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var page = d.NewUnmappedPage();
        d.MmuUpdate(((d.Mfn(page) << 12) | Xen.MMU_MACHPHYS_UPDATE, 0x777)).Should().Be(0);
        _hv.Frames.MachineToPhys(d.Mfn(page)).Should().Be(0x777);
        d.MmuUpdate(((other.Mfn(100) << 12) | Xen.MMU_MACHPHYS_UPDATE, 0x777)).Should().Be(-(long)Errno.EINVAL);
        _hv.Frames.MachineToPhys(other.Mfn(100)).Should().Be(100);
    }

    [Fact]
    public void Unknown_Commands_Are_ENOSYS_And_Foreign_Owners_Are_Refused()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var page = d.NewUnmappedPage();
        d.MmuUpdate(((d.Mfn(page) << 12) | 5, 0)).Should().Be(-(long)Errno.ENOSYS);

        d.Domain.Memory.TryWrite(d.Buffer, new mmu_update { ptr = d.Mfn(page) << 12 }).Should().BeTrue();
        d.Call(Xen.__HYPERVISOR_mmu_update, d.Buffer, 1, 0, d.Domain.Id).Should().Be(-(long)Errno.ESRCH, "itself as the foreign domain");
        d.Call(Xen.__HYPERVISOR_mmu_update, d.Buffer, 1, 0, 0x7000).Should().Be(-(long)Errno.ESRCH, "no such domain");
        d.Call(Xen.__HYPERVISOR_mmu_update, d.Buffer, 1, 0, other.Domain.Id).Should().Be(-(long)Errno.EPERM);
        d.Call(Xen.__HYPERVISOR_mmu_update, d.Buffer, 1, 0, Xen.DOMID_SELF | ((uint)(other.Domain.Id + 1) << 16)).Should().Be(-(long)Errno.EPERM);
        d.Call(Xen.__HYPERVISOR_mmu_update, 0xFFFF_8000_0000_0000, 1, 0, Xen.DOMID_SELF).Should().Be(-(long)Errno.EFAULT, "a handle in Xen's range");
    }

    [Fact]
    public void A_Translated_Domain_Has_No_PV_Mmu_Hypercalls()
    {
        var d = new PvTestDomain(_hv, translated: true);
        d.Call(Xen.__HYPERVISOR_mmu_update, d.Buffer, 0, 0, Xen.DOMID_SELF).Should().Be(-(long)Errno.ENOSYS);
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x1000, 0, 0).Should().Be(-(long)Errno.ENOSYS);
        d.Call(Xen.__HYPERVISOR_update_va_mapping_otherdomain, 0x1000, 0, 0, Xen.DOMID_SELF).Should().Be(-(long)Errno.ENOSYS);
        d.Call(Xen.__HYPERVISOR_mmuext_op, d.Buffer, 1, 0, Xen.DOMID_SELF).Should().Be(-(long)Errno.EINVAL, "is_pv_domain fails for the caller itself");
        PvMemory.PinTable(d.Domain, 1, 1).Should().Be(-(long)Errno.EINVAL);
        PvMemory.SetKernelBase(d.Vcpu, 1).Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void Freeing_A_Pinned_Or_Mapped_Frame_With_Decrease_Reservation_Keeps_It_Until_Released()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        var l1 = d.NewUnmappedPage();
        var mapped = d.NewUnmappedPage();
        d.Write(l1, 0, d.Entry(mapped, P | RW));
        PvMemory.PinTable(d.Domain, d.Mfn(l1), 1).Should().Be(0);
        var l1Mfn = d.Mfn(l1);
        var mappedMfn = d.Mfn(mapped);
        var free = _hv.FreeFrames;

        // Xen 4.17's guest_remove_page drops the allocation reference and succeeds; the frame lives on.
        foreach (var mfn in new[] { l1Mfn, mappedMfn })
        {
            d.Domain.Memory.TryWrite(d.Buffer2 + 0x100, mfn).Should().BeTrue();
            d.Domain.Memory.TryWrite(d.Buffer2, new xen_memory_reservation { extent_start = d.Buffer2 + 0x100, nr_extents = 1, domid = Xen.DOMID_SELF }).Should().BeTrue();
            d.Call(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_decrease_reservation, d.Buffer2).Should().Be(1);
        }

        _hv.FreeFrames.Should().Be(free, "the pin and the mapping still hold both frames");
        _hv.Frames.OwnerOf(l1Mfn).Should().Be(d.Domain.Id);
        PvMemory.TypeOf(d.Domain, l1Mfn).Should().Be(PageType.L1);

        PvMemory.UnpinTable(d.Domain, l1Mfn).Should().Be(0);
        _hv.FreeFrames.Should().Be(free + 2, "with the pin gone, the table and the page it mapped are free");
        t.Should().NotBeNull();
    }

    [Fact]
    public void A_Managed_Classic_PV_Guest_Builds_Pins_And_Enters_Its_Tables_Through_The_Gate()
    {
        ulong[]? seen = null;
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            var si = g.ReadStartInfo();
            ulong Mfn(ulong pfn) => g.Cpu.Memory.Read<ulong>(si.mfn_list + (pfn * 8));
            var first = si.pt_base >> 12;
            ulong l4 = first + 2, l3 = first + 3, l2 = first + 4, l1 = first + 5;
            g.Cpu.Memory.Write(l4 << 12, (Mfn(l3) << 12) | P | RW);
            g.Cpu.Memory.Write(l3 << 12, (Mfn(l2) << 12) | P | RW);
            g.Cpu.Memory.Write(l2 << 12, (Mfn(l1) << 12) | P | RW);
            for (var pfn = 0UL; pfn < 512; pfn++)
            {
                g.Cpu.Memory.Write((l1 << 12) + (pfn * 8), (Mfn(pfn) << 12) | (pfn >= l4 && pfn <= l1 ? P : P | RW));
            }

            var op = new mmuext_op { cmd = Xen.MMUEXT_PIN_L4_TABLE };
            op.arg1.mfn = Mfn(l4);
            g.Cpu.Memory.Write(g.Scratch, op);
            var pin = g.Hypercall(Xen.__HYPERVISOR_mmuext_op, g.Scratch, 1, 0, Xen.DOMID_SELF);
            op.cmd = Xen.MMUEXT_NEW_BASEPTR;
            g.Cpu.Memory.Write(g.Scratch, op);
            var baseptr = g.Hypercall(Xen.__HYPERVISOR_mmuext_op, g.Scratch, 1, 0, Xen.DOMID_SELF);

            // From here handles are virtual: xen_version writes through the identity map.
            var version = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, g.Scratch + 0x100);
            var writeToTable = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, l1 << 12);
            var fault = 0L;
            try
            {
                g.Cpu.Memory.Write((l1 << 12) + 8, 0UL);
            }
            catch (Paravirt.Core.Cpu.GuestFaultException)
            {
                fault = 1;
            }

            seen = [(ulong)pin, (ulong)baseptr, (ulong)version, (ulong)writeToTable, (ulong)fault];
        });

        exit.State.Should().Be(DomainState.Shutdown);
        seen.Should().NotBeNull();
        ((long)seen![0]).Should().Be(0);
        ((long)seen[1]).Should().Be(0);
        ((long)seen[2]).Should().Be(0);
        ((long)seen[3]).Should().Be(-(long)Errno.EFAULT, "the table is mapped read-only, so copy_to_guest faults");
        seen[4].Should().Be(1UL, "the guest's own store into its pinned table faults");
        _hv.FreeFrames.Should().Be(_hv.TotalFrames, "the destroyed domain gave every frame back");
    }
}
