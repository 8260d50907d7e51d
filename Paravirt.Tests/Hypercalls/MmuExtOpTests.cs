using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;
using Paravirt.Tests.Memory.Pv;

namespace Paravirt.Tests.Hypercalls;

/// <summary>mmuext_op and update_va_mapping as Xen 4.17 answers a 64-bit PV domU (xen/arch/x86/mm.c).</summary>
public sealed class MmuExtOpTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    private static void ClearFlushes(Domain d)
    {
        foreach (var v in d.VcpuList)
        {
            v.Pv.TakeTlbFlushRequest();
        }
    }

    [Fact]
    public void Pin_Each_Level_And_Unpin()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.MmuExt(Xen.MMUEXT_PIN_L1_TABLE, d.Mfn(t.L1)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_PIN_L2_TABLE, d.Mfn(t.L2)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_PIN_L3_TABLE, d.Mfn(t.L3)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_PIN_L4_TABLE, d.Mfn(t.L4)).Should().Be(0);
        _hv.Frames.Types.CountOf(d.Mfn(t.L1)).Should().Be(2, "pinned, and referenced by the L2");

        d.MmuExt(Xen.MMUEXT_PIN_L2_TABLE, d.Mfn(t.L1)).Should().Be(-(long)Errno.EINVAL, "an L1 is no L2");
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L4)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L4)).Should().Be(-(long)Errno.EINVAL);
        _hv.Frames.Types.CountOf(d.Mfn(t.L3)).Should().Be(1, "still pinned itself");
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L3)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L2)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L1)).Should().Be(0);
        _hv.Frames.Types.CountOf(d.Mfn(t.L1)).Should().Be(0);
    }

    [Fact]
    public void Pinning_Or_Unpinning_A_Frame_The_Guest_Does_Not_Own_Is_EINVAL()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var t = other.BuildIdentity();
        d.MmuExt(Xen.MMUEXT_PIN_L4_TABLE, other.Mfn(t.L4)).Should().Be(-(long)Errno.EINVAL);
        other.MmuExt(Xen.MMUEXT_PIN_L4_TABLE, other.Mfn(t.L4)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, other.Mfn(t.L4)).Should().Be(-(long)Errno.EINVAL);
        _hv.Frames.Types.IsPinned(other.Mfn(t.L4)).Should().BeTrue("another domain cannot unpin it");
        d.MmuExt(Xen.MMUEXT_PIN_L1_TABLE, (ulong)_hv.TotalFrames + 5).Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void A_Batch_Reports_Done_And_Stops_At_The_Failure()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        var rc = d.MmuExtBatch(
            out var done,
            (Xen.MMUEXT_PIN_L4_TABLE, d.Mfn(t.L4), 0),
            (Xen.MMUEXT_TLB_FLUSH_LOCAL, 0, 0),
            (Xen.MMUEXT_PIN_L4_TABLE, d.Mfn(t.L4), 0),
            (Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L4), 0));
        rc.Should().Be(-(long)Errno.EINVAL);
        done.Should().Be(2u);
        _hv.Frames.Types.IsPinned(d.Mfn(t.L4)).Should().BeTrue("the unpin after the failure did not run");
    }

    [Fact]
    public void New_Baseptr_And_User_Baseptr_Set_The_Vcpu_Bases()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        d.MmuExt(Xen.MMUEXT_PIN_L4_TABLE, d.Mfn(t.L4)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_NEW_USER_BASEPTR, d.Mfn(t.L4)).Should().Be(0);
        d.Vcpu.Pv.UserBaseMfn.Should().Be(d.Mfn(t.L4));
        d.Vcpu.Pv.IsPaged.Should().BeFalse("no kernel base yet");
        d.MmuExt(Xen.MMUEXT_NEW_BASEPTR, d.Mfn(t.L4)).Should().Be(0);
        d.Vcpu.Pv.KernelBaseMfn.Should().Be(d.Mfn(t.L4));
        _hv.Frames.Types.CountOf(d.Mfn(t.L4)).Should().Be(3, "the pin and both bases");
        d.MmuExt(Xen.MMUEXT_NEW_USER_BASEPTR, 0).Should().Be(0);
        d.Vcpu.Pv.UserBaseMfn.Should().Be(0UL);
        _hv.Frames.Types.CountOf(d.Mfn(t.L4)).Should().Be(2);
        d.MmuExt(Xen.MMUEXT_NEW_BASEPTR, d.Mfn(t.L1)).Should().Be(-(long)Errno.EINVAL, "an L1 is no root");
        d.Vcpu.Pv.KernelBaseMfn.Should().Be(d.Mfn(t.L4), "a failed switch keeps the old base");
    }

    [Fact]
    public void Flushes_Reach_The_Vcpus_They_Name()
    {
        var d = new PvTestDomain(_hv, vcpus: 3);
        var vcpus = d.Domain.VcpuList;
        ClearFlushes(d.Domain);
        d.MmuExt(Xen.MMUEXT_TLB_FLUSH_LOCAL).Should().Be(0);
        vcpus.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(true, false, false);

        d.MmuExt(Xen.MMUEXT_INVLPG_ALL, 0x1000).Should().Be(0);
        vcpus.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(true, true, true);

        d.Domain.Memory.TryWrite(d.Buffer2 + 0x800, 0b100UL).Should().BeTrue();
        d.MmuExt(Xen.MMUEXT_TLB_FLUSH_MULTI, 0, d.Buffer2 + 0x800).Should().Be(0);
        vcpus.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(false, false, true);

        d.MmuExt(Xen.MMUEXT_INVLPG_MULTI, 0x1000, 0xFFFF_8000_0000_0000).Should().Be(-(long)Errno.EINVAL, "the bitmap cannot be read");
    }

    [Fact]
    public void Cache_Flushes_Ldt_And_Unknown_Commands_Answer_As_Xen()
    {
        var d = new PvTestDomain(_hv);
        d.MmuExt(Xen.MMUEXT_FLUSH_CACHE).Should().Be(-(long)Errno.EACCES);
        d.MmuExt(Xen.MMUEXT_FLUSH_CACHE_GLOBAL).Should().Be(-(long)Errno.EINVAL);
        d.MmuExt(Xen.MMUEXT_MARK_SUPER, 1).Should().Be(-(long)Errno.EOPNOTSUPP);
        d.MmuExt(Xen.MMUEXT_UNMARK_SUPER, 1).Should().Be(-(long)Errno.EOPNOTSUPP);
        d.MmuExt(14).Should().Be(-(long)Errno.ENOSYS);
        d.MmuExt(99).Should().Be(-(long)Errno.ENOSYS);

        d.MmuExt(Xen.MMUEXT_SET_LDT, 0x10_0000, 16).Should().Be(0);
        PvMemory.Ldt(d.Vcpu).Should().Be((0x10_0000UL, 16u));
        d.MmuExt(Xen.MMUEXT_SET_LDT, 0x10_0008, 16).Should().Be(-(long)Errno.EINVAL, "not page-aligned");
        d.MmuExt(Xen.MMUEXT_SET_LDT, 0x10_0000, 8193).Should().Be(-(long)Errno.EINVAL, "more than 8192 entries");
        d.MmuExt(Xen.MMUEXT_SET_LDT, 0xFFFF_8000_0000_0000, 1).Should().Be(-(long)Errno.EINVAL, "in Xen's range");
        d.MmuExt(Xen.MMUEXT_SET_LDT, 0xdead_0000, 0).Should().Be(0);
        PvMemory.Ldt(d.Vcpu).Should().Be((0UL, 0u), "no entries means no LDT, whatever the address");
    }

    [Fact]
    public void Clear_And_Copy_Page_Need_Own_Frames_And_A_Writable_Destination()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        var src = d.NewUnmappedPage();
        var dst = d.NewUnmappedPage();
        d.Write(src, 7, 0x5555);
        d.MmuExt(Xen.MMUEXT_COPY_PAGE, d.Mfn(dst), d.Mfn(src)).Should().Be(0);
        d.Read(dst, 7).Should().Be(0x5555);
        d.MmuExt(Xen.MMUEXT_CLEAR_PAGE, d.Mfn(dst)).Should().Be(0);
        d.Read(dst, 7).Should().Be(0);

        other.Write(100, 3, 0x77);
        d.MmuExt(Xen.MMUEXT_CLEAR_PAGE, other.Mfn(100)).Should().Be(-(long)Errno.EINVAL);
        d.MmuExt(Xen.MMUEXT_COPY_PAGE, other.Mfn(100), d.Mfn(src)).Should().Be(-(long)Errno.EINVAL);
        d.MmuExt(Xen.MMUEXT_COPY_PAGE, d.Mfn(dst), other.Mfn(100)).Should().Be(-(long)Errno.EINVAL, "reading another domain's page");
        other.Read(100, 3).Should().Be(0x77);

        var t = d.BuildIdentity();
        d.MmuExt(Xen.MMUEXT_PIN_L4_TABLE, d.Mfn(t.L4)).Should().Be(0);
        d.MmuExt(Xen.MMUEXT_CLEAR_PAGE, d.Mfn(t.L1)).Should().Be(-(long)Errno.EINVAL, "a page table is not writable");
        d.Read(t.L1, 300).Should().NotBe(0);
    }

    [Fact]
    public void Foreign_Domain_Arguments_Are_Refused()
    {
        var d = new PvTestDomain(_hv);
        var other = new PvTestDomain(_hv);
        d.Call(Xen.__HYPERVISOR_mmuext_op, d.Buffer, 1, 0, d.Domain.Id).Should().Be(-(long)Errno.ESRCH);
        d.Call(Xen.__HYPERVISOR_mmuext_op, d.Buffer, 1, 0, 0x7000).Should().Be(-(long)Errno.ESRCH);
        d.Call(Xen.__HYPERVISOR_mmuext_op, d.Buffer, 1, 0, other.Domain.Id).Should().Be(-(long)Errno.EPERM);
        d.Call(Xen.__HYPERVISOR_mmuext_op, 0xFFFF_8000_0000_0000, 1, 0, Xen.DOMID_SELF).Should().Be(-(long)Errno.EFAULT);
    }

    [Fact]
    public void Update_Va_Mapping_Replaces_The_L1_Entry_Of_A_Virtual_Address_And_Flushes()
    {
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildAndEnter();
        var page = d.NewUnmappedPage();
        ClearFlushes(d.Domain);

        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, d.Entry(page, P | RW), Xen.UVMF_INVLPG | Xen.UVMF_ALL).Should().Be(0);

        PvMemory.TryTranslate(d.Vcpu, 0x5_0123, write: true, out var ma).Should().BeTrue();
        ma.Should().Be((d.Mfn(page) << 12) | 0x123);
        d.Domain.VcpuList.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(true, true);

        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, d.Entry(page, P), Xen.UVMF_TLB_FLUSH | Xen.UVMF_LOCAL).Should().Be(0);
        d.Domain.VcpuList.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(true, false);
        PvMemory.TryTranslate(d.Vcpu, 0x5_0123, write: true, out _).Should().BeFalse("read-only now");

        d.Domain.Memory.TryWrite(d.Buffer2 + 0x800, 0b10UL).Should().BeTrue();
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, d.Entry(page, P), Xen.UVMF_INVLPG | (d.Buffer2 + 0x800)).Should().Be(0);
        d.Domain.VcpuList.Select(v => v.Pv.TakeTlbFlushRequest()).Should().Equal(false, true);
        t.Should().NotBeNull();
    }

    [Fact]
    public void Update_Va_Mapping_Refuses_What_Mmu_Update_Refuses_And_Unmapped_Addresses()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var other = new PvTestDomain(_hv);
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, d.Entry(t.L2, P | RW), 0).Should().Be(-(long)Errno.EBUSY);
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, (other.Mfn(5) << 12) | P, 0).Should().Be(-(long)Errno.EBUSY);
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0x4000_0000, d.Entry(5, P), 0).Should().Be(-(long)Errno.EINVAL, "no L2 entry maps 1 GiB");
        d.Call(Xen.__HYPERVISOR_update_va_mapping, 0xFFFF_8000_0000_0000, d.Entry(5, P), 0).Should().Be(-(long)Errno.EINVAL, "Xen's range");
        d.Call(Xen.__HYPERVISOR_update_va_mapping_otherdomain, 0x5_0000, d.Entry(5, P), 0, other.Domain.Id).Should().Be(-(long)Errno.EPERM);
        d.Call(Xen.__HYPERVISOR_update_va_mapping_otherdomain, 0x5_0000, d.Entry(5, P), 0, d.Domain.Id).Should().Be(-(long)Errno.ESRCH);
        d.Call(Xen.__HYPERVISOR_update_va_mapping_otherdomain, 0x5_0000, d.Entry(5, P), 0, Xen.DOMID_SELF).Should().Be(0);

        var unpaged = new PvTestDomain(_hv);
        unpaged.Call(Xen.__HYPERVISOR_update_va_mapping, 0x5_0000, unpaged.Entry(5, P), 0).Should().Be(-(long)Errno.EINVAL, "no page tables to walk");
    }
}
