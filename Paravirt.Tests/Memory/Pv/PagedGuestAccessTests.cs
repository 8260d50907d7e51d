using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// Guest handles of a paged classic PV vCPU are virtual addresses: copies translate through its
/// current tables page by page with the checks of Xen's copy_from_guest/copy_to_guest, batches
/// (multicall) read through them too.
/// </summary>
public sealed class PagedGuestAccessTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    /// <summary>Maps virtual 2 MiB + n·4 KiB to the given pfns through a second L1 (read-write unless listed read-only).</summary>
    private static ulong MapHigh(PvTestDomain d, PvTestDomain.Tables t, ulong[] pfns, ulong readOnlyMask = 0)
    {
        var l1 = d.NewUnmappedPage();
        for (var i = 0; i < pfns.Length; i++)
        {
            d.Write(l1, i, d.Entry(pfns[i], (readOnlyMask & (1UL << i)) != 0 ? P : P | RW));
        }

        d.MmuUpdate((d.PtePtr(t.L2, 1), d.Entry(l1, P | RW))).Should().Be(0);
        return 0x20_0000;
    }

    [Fact]
    public void A_Hypercall_Writes_Through_The_Virtual_Mapping_Not_The_Physical_Address()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var target = d.NewUnmappedPage();
        var va = MapHigh(d, t, [target]);

        d.Call(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, va + 0x10).Should().Be(0);

        var bytes = new byte[16];
        d.Domain.Memory.TryRead((target << 12) + 0x10, bytes).Should().BeTrue();
        System.Text.Encoding.ASCII.GetString(bytes).TrimEnd('\0').Should().Be(Hypervisor.ExtraVersion);
    }

    [Fact]
    public void A_Copy_Across_Two_Virtual_Pages_Reaches_Two_Unrelated_Frames()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var first = d.NewUnmappedPage();
        var second = d.NewUnmappedPage();
        var va = MapHigh(d, t, [second, first]); // deliberately in the other order

        var data = Enumerable.Range(0, 32).Select(i => (byte)(i + 1)).ToArray();
        PvMemory.TryCopyToGuest(d.Vcpu, va + 0x1000 - 16, data).Should().BeTrue();

        var back = new byte[32];
        PvMemory.TryCopyFromGuest(d.Vcpu, va + 0x1000 - 16, back).Should().BeTrue();
        back.Should().Equal(data);
        var low = new byte[16];
        var high = new byte[16];
        d.Domain.Memory.TryRead((second << 12) + 0x1000 - 16, low).Should().BeTrue();
        d.Domain.Memory.TryRead(first << 12, high).Should().BeTrue();
        low.Should().Equal(data[..16]);
        high.Should().Equal(data[16..]);
    }

    [Fact]
    public void Copy_Faults_On_Unmapped_Read_Only_And_Hypervisor_Addresses()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var page = d.NewUnmappedPage();
        var va = MapHigh(d, t, [page], readOnlyMask: 1);
        var buffer = new byte[8];

        PvMemory.TryCopyFromGuest(d.Vcpu, va, buffer).Should().BeTrue();
        PvMemory.TryCopyToGuest(d.Vcpu, va, buffer).Should().BeFalse("read-only");
        PvMemory.TryCopyFromGuest(d.Vcpu, va + 0x1000, buffer).Should().BeFalse("unmapped");
        PvMemory.TryCopyFromGuest(d.Vcpu, va + 0xFFC, buffer).Should().BeFalse("the second half is unmapped");
        PvMemory.TryCopyFromGuest(d.Vcpu, ArchX86.MACH2PHYS_VIRT_START, buffer).Should().BeFalse("Xen's range is never a guest handle");
        PvMemory.TryCopyFromGuest(d.Vcpu, 0x0000_8000_0000_0000, buffer).Should().BeFalse("non-canonical");
        d.Call(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, va).Should().Be(-(long)Errno.EFAULT);
    }

    [Fact]
    public void User_Mode_Translates_Through_The_User_Base()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var userL4 = d.NewUnmappedPage();
        PvMemory.SetUserBase(d.Vcpu, d.Mfn(userL4)).Should().Be(0, "an empty L4 is a valid user table");
        PvMemory.TryTranslate(d.Vcpu, 0x5000, write: false, out _).Should().BeTrue();
        d.Vcpu.Pv.KernelMode = false;
        try
        {
            PvMemory.TryTranslate(d.Vcpu, 0x5000, write: false, out _).Should().BeFalse("the user table maps nothing");
        }
        finally
        {
            d.Vcpu.Pv.KernelMode = true;
        }

        t.Should().NotBeNull();
    }

    [Fact]
    public void Memory_Op_Takes_Handles_Above_Xens_Range_Where_A_Kernel_Keeps_Them()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        ulong l3 = d.NewUnmappedPage(), l2 = d.NewUnmappedPage(), l1 = d.NewUnmappedPage(), page = d.NewUnmappedPage();
        d.Write(l1, 0, d.Entry(page, P | RW));
        d.Write(l2, 0, d.Entry(l1, P | RW));
        d.Write(l3, 0, d.Entry(l2, P | RW));
        d.MmuUpdate((d.PtePtr(t.L4, PvDomainMemory.LastXenSlot + 1), d.Entry(l3, P | RW))).Should().Be(0);
        const ulong kernelVa = ArchX86.HYPERVISOR_VIRT_END; // 0xffff880000000000, Linux's direct map

        PvMemory.TryCopyToGuest(d.Vcpu, kernelVa, MemoryMarshal.AsBytes(new[] { new xen_memory_reservation { extent_start = kernelVa + 0x100, nr_extents = 2, domid = Xen.DOMID_SELF } }.AsSpan())).Should().BeTrue();
        // Room for two more pages; the MFNs come back through the kernel mapping.
        d.Domain.MaxPages += 2;
        d.Call(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_increase_reservation, kernelVa).Should().Be(2);
        d.Domain.Memory.TryRead((page << 12) + 0x100, out ulong first).Should().BeTrue();
        _hv.Frames.OwnerOf(first).Should().Be(d.Domain.Id, "an MFN the domain now owns was written through the virtual handle");
    }

    [Fact]
    public void The_Runstate_Area_Of_A_Paged_Vcpu_Is_Written_Through_Its_Virtual_Address()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var target = d.NewUnmappedPage();
        var va = MapHigh(d, t, [target]);
        d.Domain.Memory.TryWrite(d.Buffer2, new vcpu_register_runstate_memory_area { addr = new() { v = va + 0x40 } }).Should().BeTrue();

        d.Call(Xen.__HYPERVISOR_vcpu_op, Paravirt.Core.Abi.VcpuOp.VCPUOP_register_runstate_memory_area, 0, d.Buffer2).Should().Be(0);

        d.Domain.Memory.TryRead((target << 12) + 0x40, out vcpu_runstate_info info).Should().BeTrue();
        info.state_entry_time.Should().NotBe(0UL, "the runstate was published through the mapping");
        d.Read(va >> 12, 8).Should().Be(0, "the guest-physical page with the virtual address's number is untouched");
    }

    private static unsafe multicall_entry Entry(ulong op, params ulong[] args)
    {
        var e = new multicall_entry { op = op };
        for (var i = 0; i < args.Length; i++)
        {
            e.args[i] = args[i];
        }

        return e;
    }

    [Fact]
    public void A_Multicall_List_At_A_Virtual_Address_Runs_Through_The_Tables()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var listPage = d.NewUnmappedPage();
        var outPage = d.NewUnmappedPage();
        var va = MapHigh(d, t, [listPage, outPage]);

        var entries = new[]
        {
            Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, va + 0x1000),
            Entry(Xen.__HYPERVISOR_mmuext_op, va + 0x1800, 1, 0, Xen.DOMID_SELF), // an unpin of nothing: -EINVAL in its result
        };
        var unpin = new mmuext_op { cmd = Xen.MMUEXT_UNPIN_TABLE };
        unpin.arg1.mfn = d.Mfn(outPage);
        PvMemory.TryCopyToGuest(d.Vcpu, va + 0x1800, MemoryMarshal.AsBytes(new[] { unpin }.AsSpan())).Should().BeTrue();
        PvMemory.TryCopyToGuest(d.Vcpu, va, MemoryMarshal.AsBytes(entries.AsSpan())).Should().BeTrue();

        d.Call(Xen.__HYPERVISOR_multicall, va, 2).Should().Be(0);

        d.Domain.Memory.TryRead(listPage << 12, MemoryMarshal.AsBytes(entries.AsSpan())).Should().BeTrue();
        ((long)entries[0].result).Should().Be(0);
        ((long)entries[1].result).Should().Be(-(long)Errno.EINVAL);
        var bytes = new byte[16];
        d.Domain.Memory.TryRead(outPage << 12, bytes).Should().BeTrue();
        System.Text.Encoding.ASCII.GetString(bytes).TrimEnd('\0').Should().Be(Hypervisor.ExtraVersion);
    }
}
