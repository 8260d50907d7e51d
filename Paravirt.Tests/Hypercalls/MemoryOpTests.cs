using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

/// <summary>
/// XENMEM_* as Xen 4.17 answers a 64-bit PV domU (xen/common/memory.c do_memory_op,
/// xen/arch/x86/mm.c arch_memory_op). Guests here have 4 MiB (1024 pages) and may grow to 5 MiB.
/// </summary>
public sealed class MemoryOpTests : IDisposable
{
    internal const long Pages = 1024;
    internal const long MaxPages = 1280;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    internal static DomainConfig Config(string name, DomainLimits? limits = null) =>
        new() { Name = name, MemoryMiB = 4, MaxMemoryMiB = 5, Limits = limits ?? DomainLimits.Default, AutoTranslated = false };

    internal static long Memop(GuestContext g, int op, ulong arg, ulong startExtent = 0) =>
        g.Hypercall(Xen.__HYPERVISOR_memory_op, (uint)op | (startExtent << 6), arg);

    /// <summary>Writes a xen_memory_reservation at Scratch and issues the sub-op; the extent list is at <see cref="List"/>.</summary>
    internal static long Reserve(GuestContext g, int op, ulong nr, ulong? list = null, uint order = 0, ushort domid = Xen.DOMID_SELF, uint flags = 0, ulong startExtent = 0)
    {
        g.Cpu.Memory.Write(g.Scratch, new xen_memory_reservation
        {
            extent_start = list ?? List(g),
            nr_extents = nr,
            extent_order = order,
            mem_flags = flags,
            domid = domid,
        });
        return Memop(g, op, g.Scratch, startExtent);
    }

    /// <summary>A page of scratch for extent lists.</summary>
    internal static ulong List(GuestContext g) => g.Scratch + 0x1000;

    internal static ulong[] ReadList(GuestContext g, int n)
    {
        var list = new ulong[n];
        for (var i = 0; i < n; i++)
        {
            list[i] = g.Cpu.Memory.Read<ulong>(List(g) + ((ulong)i * 8));
        }

        return list;
    }

    internal static void WriteList(GuestContext g, params ulong[] values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            g.Cpu.Memory.Write(List(g) + ((ulong)i * 8), values[i]);
        }
    }

    /// <summary>The MFN of a pfn, from the P→M list the builder gave the guest (start_info.mfn_list).</summary>
    internal static ulong MfnOf(GuestContext g, ulong pfn) => g.Cpu.Memory.Read<ulong>(g.ReadStartInfo().mfn_list + (pfn * 8));

    internal static long Current(GuestContext g, ushort domid = Xen.DOMID_SELF)
    {
        g.Cpu.Memory.Write(g.Scratch, new xen_memory_domain { domid = domid });
        return Memop(g, XenMem.XENMEM_current_reservation, g.Scratch);
    }

    [Fact]
    public void Current_And_Maximum_Reservation_Report_TotPages_And_MaxPages_Of_The_Caller()
    {
        var other = _hv.CreateDomain(Config("other"));
        long cur = 0, curById = 0, max = 0, otherDomain = 0, host = 0, missing = 0, withStart = 0, fault = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var self = _hv.FindDomain("stat")!;
            cur = Current(g);
            curById = Current(g, self.Id);
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_domain { domid = Xen.DOMID_SELF });
            max = Memop(g, XenMem.XENMEM_maximum_reservation, g.Scratch);
            withStart = Memop(g, XenMem.XENMEM_maximum_reservation, g.Scratch, startExtent: 1);
            otherDomain = Current(g, other.Id);
            host = Current(g, 0);
            missing = Current(g, 0x7000);
            fault = Memop(g, XenMem.XENMEM_current_reservation, 0xdead_0000_0000);
        }, Config("stat"));

        cur.Should().Be(Pages);
        curById.Should().Be(Pages, "the caller's own id is as good as DOMID_SELF");
        max.Should().Be(MaxPages);
        withStart.Should().Be(-(long)Errno.EINVAL, "only the reservation sub-ops take a start extent");
        otherDomain.Should().Be(-(long)Errno.EPERM, "xsm_memory_stat_reservation is XSM_TARGET");
        host.Should().Be(-(long)Errno.EPERM, "domain 0 exists");
        missing.Should().Be(-(long)Errno.ESRCH);
        fault.Should().Be(-(long)Errno.EFAULT);
        other.Destroy();
    }

    [Fact]
    public void Increase_Reservation_Writes_Back_Distinct_Mfns_The_Guest_Owns_And_Charges_TotPages()
    {
        long done = 0, after = 0;
        ulong[] mfns = [];
        ushort id = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            id = _hv.FindDomain("inc")!.Id;
            done = Reserve(g, XenMem.XENMEM_increase_reservation, 3);
            mfns = ReadList(g, 3);
            after = Current(g);
            mfns.Should().OnlyContain(m => _hv.Frames.OwnerOf(m) == id);
            mfns.Should().OnlyContain(m => _hv.Frames.MachineToPhys(m) == FrameTable.InvalidGfn, "a PV guest sets the m2p itself");
        }, Config("inc"));

        done.Should().Be(3);
        mfns.Should().OnlyHaveUniqueItems();
        after.Should().Be(Pages + 3);
    }

    [Fact]
    public void Increase_Reservation_With_A_Null_List_Allocates_Without_Writing_Back()
    {
        long done = 0, after = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            done = Reserve(g, XenMem.XENMEM_increase_reservation, 2, list: 0);
            after = Current(g);
        }, Config("null-list"));

        done.Should().Be(2);
        after.Should().Be(Pages + 2);
    }

    [Fact]
    public void Increase_Beyond_Max_Pages_Returns_The_Partial_Count_And_TotPages_Never_Exceeds_Max()
    {
        long first = 0, second = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            first = Reserve(g, XenMem.XENMEM_increase_reservation, 300);
            second = Reserve(g, XenMem.XENMEM_increase_reservation, 1);
            cur = Current(g);
        }, Config("greedy"));

        first.Should().Be(MaxPages - Pages);
        second.Should().Be(0);
        cur.Should().Be(MaxPages);
    }

    [Fact]
    public void Decrease_Reservation_Takes_Mfns_And_Gives_Them_Back_To_The_Host()
    {
        long inc = 0, dec = 0, cur = 0;
        long freeBefore = 0, freeAfter = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            freeBefore = _hv.FreeFrames;
            inc = Reserve(g, XenMem.XENMEM_increase_reservation, 4);
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 4);
            cur = Current(g);
            freeAfter = _hv.FreeFrames;
        }, Config("dec"));

        inc.Should().Be(4);
        dec.Should().Be(4);
        cur.Should().Be(Pages);
        freeAfter.Should().Be(freeBefore);
    }

    [Fact]
    public void Decrease_Stops_At_The_First_Frame_The_Guest_Does_Not_Own_And_Returns_The_Count_Done()
    {
        var other = _hv.CreateDomain(Config("owner"));
        other.PhysMap.TryLookup(100, out var foreign, out _);
        long partial = 0, beyondHost = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            Reserve(g, XenMem.XENMEM_increase_reservation, 2);
            var mine = ReadList(g, 2);
            WriteList(g, mine[0], foreign, mine[1]);
            partial = Reserve(g, XenMem.XENMEM_decrease_reservation, 3);
            WriteList(g, (ulong)_hv.TotalFrames + 5);
            beyondHost = Reserve(g, XenMem.XENMEM_decrease_reservation, 1);
            cur = Current(g);
        }, Config("thief"));

        partial.Should().Be(1, "guest_remove_page fails with -ENXIO on a page of another domain");
        beyondHost.Should().Be(0, "an MFN the host does not have is -EINVAL in guest_remove_page");
        cur.Should().Be(Pages + 1);
        _hv.Frames.OwnerOf(foreign).Should().Be(other.Id);
        other.TotalPages.Should().Be(Pages);
        other.Destroy();
    }

    [Fact]
    public void Decrease_With_An_Extent_Order_Removes_That_Many_Consecutive_Mfns()
    {
        long dec = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            // The builder's frames come off the free list in order, so pfns 600 and 601 hold consecutive MFNs.
            var mfn = MfnOf(g, 600);
            MfnOf(g, 601).Should().Be(mfn + 1);
            WriteList(g, mfn);
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 1, order: 1);
            cur = Current(g);
        }, Config("order1"));

        dec.Should().Be(1);
        cur.Should().Be(Pages - 2);
    }

    [Fact]
    public void Populate_Physmap_Maps_New_Zeroed_Pages_At_The_Given_Gpfns_And_Returns_Their_Mfns()
    {
        long done = 0, cur = 0;
        ulong[] mfns = [];
        ulong m2p0 = 0, m2p1 = 0;
        ulong firstRead = 1, readBack = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            WriteList(g, 1100, 1101);
            done = Reserve(g, XenMem.XENMEM_populate_physmap, 2);
            mfns = ReadList(g, 2);
            m2p0 = _hv.Frames.MachineToPhys(mfns[0]);
            m2p1 = _hv.Frames.MachineToPhys(mfns[1]);
            firstRead = g.Cpu.Memory.Read<ulong>(1100UL << 12);
            g.Cpu.Memory.Write((1101UL << 12) + 0xff8, 0x1234_5678_9abc_def0UL);
            readBack = g.Cpu.Memory.Read<ulong>((1101UL << 12) + 0xff8);
            cur = Current(g);
        }, Config("pop"));

        done.Should().Be(2);
        m2p0.Should().Be(1100);
        m2p1.Should().Be(1101);
        firstRead.Should().Be(0);
        readBack.Should().Be(0x1234_5678_9abc_def0UL);
        cur.Should().Be(Pages + 2);
    }

    [Fact]
    public void Populate_Beyond_Max_Pages_Returns_The_Partial_Count()
    {
        long done = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var gpfns = Enumerable.Range(0, 300).Select(i => 1024UL + (ulong)i).ToArray();
            WriteList(g, gpfns);
            done = Reserve(g, XenMem.XENMEM_populate_physmap, 300);
        }, Config("pop-max"));

        done.Should().Be(MaxPages - Pages);
    }

    [Fact]
    public void The_Start_Extent_In_Cmd_Resumes_Where_A_Continuation_Would()
    {
        long resumed = 0, past = 0, cur = 0;
        ulong[] list = [];
        GuestRunner.RunPv(_hv, g =>
        {
            WriteList(g, 0, 0, 0, 0);
            resumed = Reserve(g, XenMem.XENMEM_increase_reservation, 4, startExtent: 2);
            list = ReadList(g, 4);
            past = Reserve(g, XenMem.XENMEM_increase_reservation, 4, startExtent: 9);
            cur = Current(g);
        }, Config("resume"));

        resumed.Should().Be(4, "extents 2 and 3 are done, so 4 are done in all");
        list[0].Should().Be(0);
        list[1].Should().Be(0);
        list[2].Should().NotBe(0);
        list[3].Should().NotBe(0);
        past.Should().Be(9, "a start extent at or past nr_extents is returned as is");
        cur.Should().Be(Pages + 2);
    }

    [Fact]
    public void An_Extent_Order_Above_The_DomU_Limit_Does_Nothing_And_Returns_The_Start_Extent()
    {
        long inc = 0, dec = 0, pop = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            inc = Reserve(g, XenMem.XENMEM_increase_reservation, 1, order: 10);
            WriteList(g, MfnOf(g, 600));
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 1, order: 10);
            WriteList(g, 1100);
            pop = Reserve(g, XenMem.XENMEM_populate_physmap, 2, order: 10, startExtent: 1);
            cur = Current(g);
        }, Config("order10"));

        inc.Should().Be(0);
        dec.Should().Be(0);
        pop.Should().Be(1);
        cur.Should().Be(Pages);
    }

    [Fact]
    public void Refused_Flags_Return_The_Start_Extent()
    {
        long exactNode = 0, tinyAddressBits = 0, podOnSelf = 0, vnode = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            exactNode = Reserve(g, XenMem.XENMEM_increase_reservation, 1, flags: XenMem.XENMEMF_exact_node(0));
            tinyAddressBits = Reserve(g, XenMem.XENMEM_increase_reservation, 1, flags: XenMem.XENMEMF_address_bits(12));
            WriteList(g, 1100);
            podOnSelf = Reserve(g, XenMem.XENMEM_populate_physmap, 1, flags: XenMem.XENMEMF_populate_on_demand);
            vnode = Reserve(g, XenMem.XENMEM_increase_reservation, 1, flags: (uint)XenMem.XENMEMF_vnode | XenMem.XENMEMF_exact_node(3));
        }, Config("flags"));

        exactNode.Should().Be(0, "a domU may not insist on a NUMA node");
        tinyAddressBits.Should().Be(0, "address bits at or below PAGE_SHIFT are refused");
        podOnSelf.Should().Be(0, "populate-on-demand on oneself is refused");
        vnode.Should().Be(1, "with no vNUMA topology a virtual node is ignored");
    }

    [Fact]
    public void Maximum_Ram_Page_Is_Xens_Max_Page_One_Past_The_Highest_Mfn()
    {
        long max = 0, withStart = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            max = Memop(g, XenMem.XENMEM_maximum_ram_page, 0);
            withStart = Memop(g, XenMem.XENMEM_maximum_ram_page, 0, startExtent: 1);
        }, Config("maxram"));

        max.Should().Be(_hv.TotalFrames);
        withStart.Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void Memory_Map_Is_One_E820_Ram_Entry_Of_Max_Pages_As_Libxl_Sets_For_PV()
    {
        long rc = 0, zeroRc = 0, big = 0;
        xen_memory_map after = default, zeroAfter = default;
        ulong addr = 1, size = 0;
        uint type = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var buffer = List(g);
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_map { nr_entries = 8, buffer = buffer });
            rc = Memop(g, XenMem.XENMEM_memory_map, g.Scratch);
            after = g.Cpu.Memory.Read<xen_memory_map>(g.Scratch);
            addr = g.Cpu.Memory.Read<ulong>(buffer);
            size = g.Cpu.Memory.Read<ulong>(buffer + 8);
            type = g.Cpu.Memory.Read<uint>(buffer + 16);

            g.Cpu.Memory.Write(g.Scratch, new xen_memory_map { nr_entries = 0, buffer = buffer });
            zeroRc = Memop(g, XenMem.XENMEM_memory_map, g.Scratch);
            zeroAfter = g.Cpu.Memory.Read<xen_memory_map>(g.Scratch);

            big = Memop(g, XenMem.XENMEM_memory_map, g.Scratch, startExtent: 1);
        }, Config("e820"));

        rc.Should().Be(0);
        after.nr_entries.Should().Be(1);
        addr.Should().Be(0);
        size.Should().Be((ulong)MaxPages * 4096);
        type.Should().Be(1, "E820_RAM");
        zeroRc.Should().Be(0);
        zeroAfter.nr_entries.Should().Be(0);
        big.Should().Be(-(long)Errno.ENOSYS, "arch_memory_op matches the whole cmd");
    }

    [Fact]
    public void Set_Memory_Map_Replaces_The_Callers_Map_And_An_Empty_One_Makes_Memory_Map_ENOSYS()
    {
        long set = 0, get = 0, tooMany = 0, other = 0, empty = 0, afterEmpty = 0;
        ulong size = 0;
        var victim = _hv.CreateDomain(Config("victim"));
        GuestRunner.RunPv(_hv, g =>
        {
            var buffer = List(g);
            // Two entries: RAM 0..1 MiB, reserved 1..2 MiB (20 bytes each, packed).
            g.Cpu.Memory.Write(buffer, 0UL);
            g.Cpu.Memory.Write(buffer + 8, 1UL << 20);
            g.Cpu.Memory.Write(buffer + 16, 1u);
            g.Cpu.Memory.Write(buffer + 20, 1UL << 20);
            g.Cpu.Memory.Write(buffer + 28, 1UL << 20);
            g.Cpu.Memory.Write(buffer + 36, 2u);
            g.Cpu.Memory.Write(g.Scratch, new xen_foreign_memory_map { domid = Xen.DOMID_SELF, map = new xen_memory_map { nr_entries = 2, buffer = buffer } });
            set = Memop(g, XenMem.XENMEM_set_memory_map, g.Scratch);

            var outBuf = buffer + 0x400;
            g.Cpu.Memory.Write(g.Scratch + 0x100, new xen_memory_map { nr_entries = 1, buffer = outBuf });
            get = Memop(g, XenMem.XENMEM_memory_map, g.Scratch + 0x100);
            size = g.Cpu.Memory.Read<ulong>(outBuf + 8);

            g.Cpu.Memory.Write(g.Scratch, new xen_foreign_memory_map { domid = Xen.DOMID_SELF, map = new xen_memory_map { nr_entries = 1025, buffer = buffer } });
            tooMany = Memop(g, XenMem.XENMEM_set_memory_map, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new xen_foreign_memory_map { domid = victim.Id, map = new xen_memory_map { nr_entries = 1, buffer = buffer } });
            other = Memop(g, XenMem.XENMEM_set_memory_map, g.Scratch);

            g.Cpu.Memory.Write(g.Scratch, new xen_foreign_memory_map { domid = Xen.DOMID_SELF, map = new xen_memory_map { nr_entries = 0, buffer = buffer } });
            empty = Memop(g, XenMem.XENMEM_set_memory_map, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch + 0x100, new xen_memory_map { nr_entries = 1, buffer = outBuf });
            afterEmpty = Memop(g, XenMem.XENMEM_memory_map, g.Scratch + 0x100);
        }, Config("set-e820"));

        set.Should().Be(0);
        get.Should().Be(0);
        size.Should().Be(1UL << 20);
        tooMany.Should().Be(-(long)Errno.EINVAL, "E820MAX is 1024");
        other.Should().Be(-(long)Errno.EPERM);
        empty.Should().Be(0);
        afterEmpty.Should().Be(-(long)Errno.ENOSYS, "a domain with no map gets -ENOSYS (backwards compatibility)");
        victim.MemoryMap!.Should().ContainSingle();
        victim.Destroy();
    }

    [Fact]
    public void Add_To_Physmap_Is_EACCES_For_A_PV_Guest_And_Leaves_The_Gpfn_As_It_Was()
    {
        long shared = 0, grant = 0, gmfn = 0, foreign = 0, missing = 0, edom = 0, batch = 0, batchRange = 0, remove = 0, removeStart = 0;
        ulong before = 0, after = 0;
        long cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var gpfn = 600UL;
            g.Cpu.Memory.Write(gpfn << 12, 0xfeedfaceUL);
            before = g.Cpu.Memory.Read<ulong>(gpfn << 12);
            long Add(uint space, ushort domid = Xen.DOMID_SELF, ulong start = 0)
            {
                g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = domid, space = space, idx = 0, gpfn = gpfn });
                return Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch, start);
            }

            shared = Add(XenMem.XENMAPSPACE_shared_info);
            grant = Add(XenMem.XENMAPSPACE_grant_table);
            gmfn = Add(XenMem.XENMAPSPACE_gmfn);
            foreign = Add(XenMem.XENMAPSPACE_gmfn_foreign);
            missing = Add(XenMem.XENMAPSPACE_shared_info, 0x7000);
            edom = Add(XenMem.XENMAPSPACE_gmfn_range, start: 0x10000);

            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap_batch { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_gmfn, size = 1 });
            batch = Memop(g, XenMem.XENMEM_add_to_physmap_batch, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap_batch { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_gmfn_range, size = 1 });
            batchRange = Memop(g, XenMem.XENMEM_add_to_physmap_batch, g.Scratch);

            g.Cpu.Memory.Write(g.Scratch, new xen_remove_from_physmap { domid = Xen.DOMID_SELF, gpfn = gpfn });
            remove = Memop(g, XenMem.XENMEM_remove_from_physmap, g.Scratch);
            removeStart = Memop(g, XenMem.XENMEM_remove_from_physmap, g.Scratch, startExtent: 1);

            after = g.Cpu.Memory.Read<ulong>(gpfn << 12);
            cur = Current(g);
        }, Config("xatp"));

        shared.Should().Be(-(long)Errno.EACCES, "xatp_permission_check refuses a domain that is not paging_mode_translate");
        grant.Should().Be(-(long)Errno.EACCES);
        gmfn.Should().Be(-(long)Errno.EACCES);
        foreign.Should().Be(-(long)Errno.ENOSYS, "foreign mapping is only possible via add_to_physmap_batch");
        missing.Should().Be(-(long)Errno.ESRCH);
        edom.Should().Be(-(long)Errno.EDOM, "a start extent that does not fit xatp.size is malicious input");
        batch.Should().Be(-(long)Errno.EACCES);
        batchRange.Should().Be(-(long)Errno.EOPNOTSUPP);
        remove.Should().Be(-(long)Errno.EACCES);
        removeStart.Should().Be(-(long)Errno.EINVAL);
        after.Should().Be(before);
        cur.Should().Be(Pages);
    }

    [Fact]
    public void Machphys_Mapping_Reports_The_M2P_Window_And_Unsupported_Sub_Ops_Are_ENOSYS()
    {
        var mapping = default(xen_machphys_mapping);
        long rc = 0, mfnList = 0, exchange = 0, unknown = 0, vnuma = 0, pod = 0, machineMap = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            rc = Memop(g, XenMem.XENMEM_machphys_mapping, g.Scratch);
            mapping = g.Cpu.Memory.Read<xen_machphys_mapping>(g.Scratch);
            mfnList = Memop(g, XenMem.XENMEM_machphys_mfn_list, g.Scratch);
            exchange = Memop(g, XenMem.XENMEM_exchange, g.Scratch);
            unknown = Memop(g, 63, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new xen_vnuma_topology_info { domid = Xen.DOMID_SELF });
            vnuma = Memop(g, XenMem.XENMEM_get_vnumainfo, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new xen_pod_target { domid = Xen.DOMID_SELF });
            pod = Memop(g, XenMem.XENMEM_get_pod_target, g.Scratch);
            machineMap = Memop(g, XenMem.XENMEM_machine_memory_map, g.Scratch);
        }, Config("m2p"));

        rc.Should().Be(0);
        mapping.v_start.Should().Be(ArchX86.MACH2PHYS_VIRT_START);
        mapping.v_end.Should().Be(ArchX86.MACH2PHYS_VIRT_END);
        mapping.max_mfn.Should().Be(ArchX86.MACH2PHYS_NR_ENTRIES - 1);
        mfnList.Should().Be(-(long)Errno.ENOSYS);
        exchange.Should().Be(-(long)Errno.ENOSYS);
        unknown.Should().Be(-(long)Errno.ENOSYS);
        vnuma.Should().Be(-(long)Errno.EOPNOTSUPP, "the domain has no vNUMA topology");
        pod.Should().Be(-(long)Errno.EINVAL, "populate-on-demand targets are for HVM domains");
        machineMap.Should().Be(-(long)Errno.EPERM);
    }

    [Fact]
    public void Maximum_Gpfn_Is_The_Guests_Max_Pfn_From_Shared_Info_Less_One()
    {
        long unset = 0, set = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var d = _hv.FindDomain("gpfn")!;
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_domain { domid = Xen.DOMID_SELF });
            unset = Memop(g, XenMem.XENMEM_maximum_gpfn, g.Scratch);
            d.SharedInfo!.At<shared_info>(0).arch.max_pfn = 1024; // what a PV kernel writes in its shared_info
            set = Memop(g, XenMem.XENMEM_maximum_gpfn, g.Scratch);
        }, Config("gpfn"));

        unset.Should().Be(0);
        set.Should().Be(1023);
    }

    [Fact]
    public async Task A_Page_Given_Back_With_Decrease_Reservation_Is_No_Longer_Reachable_And_Touching_It_Crashes_The_Domain()
    {
        var d = _hv.CreateDomain(Config("toucher"));
        long dec = -1;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            g.Cpu.Memory.Write(600UL << 12, 0xabUL);
            WriteList(g, MfnOf(g, 600));
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 1);
            g.Cpu.Memory.Read<ulong>(600UL << 12); // faults: nothing is mapped there now
            ShutdownPoweroff(g);
        }));

        var exit = await d.ExitWithinAsync();
        dec.Should().Be(1);
        exit.State.Should().Be(DomainState.Crashed);
        d.PhysMap.TryLookup(600, out _, out _).Should().BeFalse();
        d.Destroy();
    }

    [Fact]
    public void A_Frame_Freed_By_Decrease_Reservation_Is_Zero_When_The_Next_Domain_Gets_It()
    {
        ulong freed = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var page = 600UL << 12;
            for (var off = 0UL; off < 4096; off += 8)
            {
                g.Cpu.Memory.Write(page + off, 0xa5a5_a5a5_a5a5_a5a5UL);
            }

            freed = MfnOf(g, 600);
            WriteList(g, freed);
            Reserve(g, XenMem.XENMEM_decrease_reservation, 1).Should().Be(1);
        }, Config("first"));

        var seen = new byte[4096];
        GuestRunner.RunPv(_hv, g =>
        {
            var next = _hv.FindDomain("second")!;
            _hv.Frames.OwnerOf(freed).Should().Be(next.Id, "the free list hands out the most recently freed frames first");
            var gfn = _hv.Frames.MachineToPhys(freed);
            g.Cpu.Memory.Read(gfn << 12, seen);
        }, new DomainConfig { AutoTranslated = false, Name = "second", MemoryMiB = 8 });

        seen.Should().OnlyContain(b => b == 0);
    }

    internal static void ShutdownPoweroff(GuestContext g)
    {
        g.Cpu.Memory.Write(g.Scratch, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff });
        g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, g.Scratch);
    }
}
