using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Grants;

/// <summary>GNTTABOP_* from managed guests, against Xen 4.17's grant_table.c.</summary>
public sealed class GrantTableOpTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    private static readonly TimeSpan Timeout = GuestRunner.Timeout;

    private static (long Rc, gnttab_setup_table Op, ulong Frame0) Setup(GuestContext g, uint nr, ushort dom = Xen.DOMID_SELF, uint count = 1)
    {
        var list = g.Scratch + 0x800;
        g.Cpu.Memory.Write(list, ulong.MaxValue - 1);
        var op = new gnttab_setup_table { dom = dom, nr_frames = nr, frame_list = list };
        var rc = GuestGrants.Op(g, GrantTable.GNTTABOP_setup_table, ref op, count);
        return (rc, op, g.Cpu.Memory.Read<ulong>(list));
    }

    [Fact]
    public void Setup_Table_Query_Size_And_Add_To_Physmap_Follow_Xen_For_A_Translated_Guest()
    {
        (long, gnttab_setup_table, ulong) unplaced = default, placed = default, grown = default, tooMany = default, other = default, missing = default, twice = default;
        gnttab_query_size before = default, after = default;
        long placeBeyond = 0;
        ulong gpfn = 0;
        GuestRunner.Run(_hv, g =>
        {
            var q = new gnttab_query_size { dom = Xen.DOMID_SELF };
            GuestGrants.Op(g, GrantTable.GNTTABOP_query_size, ref q).Should().Be(0);
            before = q;
            unplaced = Setup(g, 1);
            gpfn = GuestGrants.MapFrame(g) >> 12;
            placed = Setup(g, 1);
            grown = Setup(g, 4);
            tooMany = Setup(g, 65);
            other = Setup(g, 1, dom: 0);
            missing = Setup(g, 1, dom: 0x7000);
            twice = Setup(g, 1, count: 2);
            q = new gnttab_query_size { dom = Xen.DOMID_SELF };
            GuestGrants.Op(g, GrantTable.GNTTABOP_query_size, ref q).Should().Be(0);
            after = q;
            g.Cpu.Memory.Write(g.Scratch + 0xF00, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_grant_table, idx = 64, gpfn = gpfn + 100 });
            placeBeyond = g.Hypercall(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, g.Scratch + 0xF00);
        });

        before.status.Should().Be(GrantTable.GNTST_okay);
        before.nr_frames.Should().Be(1u, "grant_table_init allocates INITIAL_NR_GRANT_FRAMES");
        before.max_nr_frames.Should().Be(64u);
        unplaced.Item2.status.Should().Be(GrantTable.GNTST_okay);
        unplaced.Item3.Should().Be(ulong.MaxValue, "a translated guest gets the frame's GFN, INVALID_GFN until it is placed");
        placed.Item3.Should().Be(gpfn);
        grown.Item2.status.Should().Be(GrantTable.GNTST_okay);
        after.nr_frames.Should().Be(4u);
        tooMany.Item2.status.Should().Be(GrantTable.GNTST_general_error, "more than max_grant_frames");
        other.Item2.status.Should().Be(GrantTable.GNTST_permission_denied);
        missing.Item2.status.Should().Be(GrantTable.GNTST_bad_domain);
        twice.Item1.Should().Be(-(long)Errno.EINVAL, "setup_table takes exactly one op");
        placeBeyond.Should().Be(-(long)Errno.EINVAL, "frame 64 is beyond max_grant_frames");
    }

    [Fact]
    public void A_Classic_PV_Guest_Gets_Machine_Frames_From_Setup_Table()
    {
        ulong frame = 0;
        ushort owner = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var r = Setup(g, 2);
            r.Item2.status.Should().Be(GrantTable.GNTST_okay);
            frame = r.Item3;
            owner = _hv.Frames.OwnerOf(frame);
        });
        frame.Should().BeLessThan((ulong)_hv.TotalFrames, "an MFN");
        owner.Should().NotBe(Core.Memory.FrameTable.NoOwner, "the frame belonged to the guest while it ran");
    }

    [Fact]
    public async Task Version_2_Adds_Status_Frames_Moves_The_In_Use_Bits_There_And_Cannot_Change_While_Mapped()
    {
        long get1 = -1, set2 = -1, busy = 0, back = -1, bad = 0;
        uint versionAfterSet = 0, version2 = 0;
        gnttab_get_status_frames one = default, two = default;
        ushort statusWhileMapped = 0, headerWhileMapped = 0, statusAfter = 0;
        using var ready = new SemaphoreSlim(0);
        using var mapped = new SemaphoreSlim(0);
        using var looked = new SemaphoreSlim(0);
        using var unmapped = new SemaphoreSlim(0);
        var freeBefore = _hv.FreeFrames;
        var d = _hv.CreateDomain(new DomainConfig { Name = "v2", MemoryMiB = 4 });
        var domainFrames = freeBefore - _hv.FreeFrames;
        long framesWithStatus = 0;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var gv = new gnttab_get_version { dom = Xen.DOMID_SELF };
            get1 = GuestGrants.Op(g, GrantTable.GNTTABOP_get_version, ref gv);
            var sv = new gnttab_set_version { version = 3 };
            bad = GuestGrants.Op(g, GrantTable.GNTTABOP_set_version, ref sv);
            sv = new gnttab_set_version { version = 2 };
            set2 = GuestGrants.Op(g, GrantTable.GNTTABOP_set_version, ref sv);
            versionAfterSet = sv.version;
            gv = new gnttab_get_version { dom = Xen.DOMID_SELF };
            GuestGrants.Op(g, GrantTable.GNTTABOP_get_version, ref gv);
            version2 = gv.version;
            one = new gnttab_get_status_frames { dom = Xen.DOMID_SELF, nr_frames = 1, frame_list = g.Scratch + 0x800 };
            GuestGrants.Op(g, GrantTable.GNTTABOP_get_status_frames, ref one);
            two = new gnttab_get_status_frames { dom = Xen.DOMID_SELF, nr_frames = 2, frame_list = g.Scratch + 0x800 };
            GuestGrants.Op(g, GrantTable.GNTTABOP_get_status_frames, ref two);

            var table = GuestGrants.MapFrame(g);
            var status = GuestGrants.MapFrame(g, 0, status: true);
            GuestGrants.GrantV2(g, table, 40, 0, GuestGrants.DataPage(g, 0, 0x42));
            ready.Release();
            mapped.Wait(Timeout);
            statusWhileMapped = (ushort)g.Cpu.Memory.ReadVolatile(status + (40 * 2), 2);
            headerWhileMapped = (ushort)g.Cpu.Memory.ReadVolatile(table + (40 * 16), 2);
            sv = new gnttab_set_version { version = 1 };
            busy = GuestGrants.Op(g, GrantTable.GNTTABOP_set_version, ref sv);
            looked.Release();
            unmapped.Wait(Timeout);
            statusAfter = (ushort)g.Cpu.Memory.ReadVolatile(status + (40 * 2), 2);
            sv = new gnttab_set_version { version = 1 };
            back = GuestGrants.Op(g, GrantTable.GNTTABOP_set_version, ref sv);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await ready.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        framesWithStatus = freeBefore - _hv.FreeFrames;
        using (var m = _hv.HostGrants.Map(d, 40, readOnly: false))
        {
            m.Bytes[0].Should().Be(0x42);
            mapped.Release();
            (await looked.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        }

        unmapped.Release();
        await d.ExitWithinAsync();
        d.Grants.Version.Should().Be(1);
        d.Grants.StatusFrameCount.Should().Be(0, "v2 -> v1 frees the status frames");
        d.Destroy();

        get1.Should().Be(0);
        bad.Should().Be(-(long)Errno.EINVAL);
        set2.Should().Be(0);
        versionAfterSet.Should().Be(2u);
        version2.Should().Be(2u);
        one.status.Should().Be(GrantTable.GNTST_okay);
        two.status.Should().Be(GrantTable.GNTST_general_error, "one grant frame needs one status frame");
        framesWithStatus.Should().Be(domainFrames + 1, "v2 added one status frame");
        headerWhileMapped.Should().Be((ushort)GrantTable.GTF_permit_access, "v2 keeps the in-use bits out of the header");
        statusWhileMapped.Should().Be((ushort)(GrantTable.GTF_reading | GrantTable.GTF_writing));
        busy.Should().Be(-(long)Errno.EBUSY, "a grant above the reserved 8 is in use");
        statusAfter.Should().Be(0);
        back.Should().Be(0);
        _hv.FreeFrames.Should().Be(freeBefore);
    }

    [Fact]
    public async Task One_Guest_Maps_Anothers_Grant_Into_Its_Physmap_And_Copies_Into_It()
    {
        using var granted = new SemaphoreSlim(0);
        using var used = new SemaphoreSlim(0);
        uint gref = 50;
        ushort granterId = 0;
        var endAfter = false;
        byte afterCopy = 0;
        gnttab_map_grant_ref map = default, badRef = default, badDom = default, device = default;
        gnttab_unmap_grant_ref wrongAddr = default, unmap = default, again = default;
        gnttab_copy copy = default, copyFromFrame = default;
        byte seenThroughMapping = 0, written = 0;
        var a = _hv.CreateDomain(new DomainConfig { Name = "granter", MemoryMiB = 4 });
        var b = _hv.CreateDomain(new DomainConfig { Name = "mapper", MemoryMiB = 4 });
        granterId = a.Id;
        a.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            var page = GuestGrants.DataPage(g, 0, 0x61);
            GuestGrants.GrantV1(g, table, gref, b.Id, page);
            granted.Release();
            used.Wait(Timeout);
            endAfter = GuestGrants.EndForeignAccessV1(g, table, gref);
            afterCopy = g.Cpu.Memory.Read<byte>((page << 12) + 200);
            written = g.Cpu.Memory.Read<byte>((page << 12) + 8);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        b.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            granted.Wait(Timeout);
            var at = (g.ReadStartInfo().nr_pages + 200) << 12;
            map = new gnttab_map_grant_ref { host_addr = at, flags = GrantTable.GNTMAP_host_map, @ref = gref, dom = granterId };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref map);
            seenThroughMapping = g.Cpu.Memory.Read<byte>(at + 5);
            g.Cpu.Memory.Write(at + 8, (byte)0xEE);
            device = new gnttab_map_grant_ref { host_addr = at + 4096, flags = GrantTable.GNTMAP_device_map, @ref = gref, dom = granterId };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref device);
            badRef = new gnttab_map_grant_ref { host_addr = at + 8192, flags = GrantTable.GNTMAP_host_map, @ref = 4096, dom = granterId };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref badRef);
            badDom = new gnttab_map_grant_ref { host_addr = at + 8192, flags = GrantTable.GNTMAP_host_map, @ref = gref, dom = Xen.DOMID_SELF };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref badDom);

            var src = GuestGrants.DataPage(g, 0, 0x99);
            copy = new gnttab_copy
            {
                source = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = src }, domid = Xen.DOMID_SELF, offset = 0 },
                dest = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { @ref = gref }, domid = granterId, offset = 200 },
                len = 16,
                flags = GrantTable.GNTCOPY_dest_gref,
            };
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref copy);
            copyFromFrame = copy;
            copyFromFrame.source.domid = granterId;
            copyFromFrame.status = 0;
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref copyFromFrame);

            wrongAddr = new gnttab_unmap_grant_ref { host_addr = at + 4096, handle = map.handle };
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref wrongAddr);
            unmap = new gnttab_unmap_grant_ref { host_addr = at, handle = map.handle };
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref unmap);
            again = unmap;
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref again);
            used.Release();
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        await a.ExitWithinAsync();
        await b.ExitWithinAsync();
        a.Destroy();
        b.Destroy();

        map.status.Should().Be(GrantTable.GNTST_okay);
        seenThroughMapping.Should().Be(0x61, "the granter's page is in the mapper's physmap at host_addr");
        written.Should().Be(0xEE);
        device.status.Should().Be(GrantTable.GNTST_general_error, "no device mapping in a translated domain");
        badRef.status.Should().Be(GrantTable.GNTST_bad_gntref);
        badDom.status.Should().Be(GrantTable.GNTST_bad_domain, "map_grant_ref looks the domain up by id; DOMID_SELF is none");
        copy.status.Should().Be(GrantTable.GNTST_okay);
        copyFromFrame.status.Should().Be(GrantTable.GNTST_permission_denied, "only DOMID_SELF may be named by frame");
        wrongAddr.status.Should().Be(GrantTable.GNTST_general_error, "replace_grant_p2m_mapping finds no grant mapping there");
        unmap.status.Should().Be(GrantTable.GNTST_okay);
        again.status.Should().Be(GrantTable.GNTST_bad_handle);
        afterCopy.Should().Be(0x99);
        endAfter.Should().BeTrue("the mapper unmapped before the granter ended access");
    }

    [Fact]
    public async Task The_Maptrack_Limit_Bounds_How_Many_Grants_A_Domain_Maps()
    {
        // A classic PV mapper with one maptrack frame (512 handles) pins by device_map, which needs no page tables.
        var statuses = new short[515];
        var mapperConfig = new DomainConfig { Name = "pv-mapper", MemoryMiB = 4, AutoTranslated = false, Limits = DomainLimits.Default with { MaxMaptrackFrames = 1 } };
        var a = _hv.CreateDomain(new DomainConfig { Name = "many", MemoryMiB = 4 });
        var mapper = _hv.CreateDomain(mapperConfig);
        a.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            for (uint r = 1; r <= 3; r++)
            {
                GuestGrants.GrantV1(g, table, r, mapper.Id, GuestGrants.DataPage(g, (int)r, (byte)r), readOnly: true);
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await a.ExitWithinAsync();
        long rc = -1;
        mapper.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var ops = g.Scratch + 0x10000;
            for (var i = 0; i < statuses.Length; i++)
            {
                // 256 on ref 1 (the 256th overflows its 8-bit pin count), then 255 on ref 2, then ref 3.
                var gref = i < 256 ? 1u : i < 511 ? 2u : 3u;
                g.Cpu.Memory.Write(ops + ((ulong)i * 32), new gnttab_map_grant_ref { flags = GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_readonly, @ref = gref, dom = a.Id });
            }

            rc = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_map_grant_ref, ops, (ulong)statuses.Length);
            for (var i = 0; i < statuses.Length; i++)
            {
                statuses[i] = g.Cpu.Memory.Read<gnttab_map_grant_ref>(ops + ((ulong)i * 32)).status;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await mapper.ExitWithinAsync();
        mapper.Grants.MappingCount.Should().Be(512);
        mapper.Destroy();
        a.Destroy();

        rc.Should().Be(0);
        statuses[..255].Should().OnlyContain(s => s == GrantTable.GNTST_okay);
        statuses[255].Should().Be((short)GrantTable.GNTST_general_error, "a pin counter is 8 bits wide");
        statuses[256..511].Should().OnlyContain(s => s == GrantTable.GNTST_okay);
        statuses[511..513].Should().OnlyContain(s => s == GrantTable.GNTST_okay);
        statuses[513..].Should().OnlyContain(s => s == GrantTable.GNTST_no_space, "max_maptrack_frames 1 is 512 handles");
    }
}
