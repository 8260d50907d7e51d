using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>Hostile grant-table use: the hypervisor and host stay sound whatever the guest writes or passes.</summary>
public sealed class GrantTableHostileTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task A_Guest_Flipping_Its_Flags_While_The_Host_Maps_Gives_Only_Clean_Outcomes()
    {
        using var granted = new SemaphoreSlim(0);
        var stop = 0;
        long flips = 0;
        var before = _hv.FreeFrames;
        var d = _hv.CreateDomain(new DomainConfig { Name = "flipper", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            var page = GuestGrants.DataPage(g, 0, 0x3C);
            GuestGrants.GrantV1(g, table, 5, 0, page);
            granted.Release();
            var live = GrantTable.GTF_permit_access;
            while (Volatile.Read(ref stop) == 0)
            {
                // Whole-word writes: live, dead, read-only, wrong domid — clobbering any in-use bits.
                g.Cpu.Memory.WriteVolatile(table + 40, 4, (flips % 4) switch
                {
                    0 => live,
                    1 => 0,
                    2 => live | GrantTable.GTF_readonly,
                    _ => live | (9u << 16),
                });
                flips++;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await granted.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        int ok = 0, refused = 0;
        for (var i = 0; i < 2000; i++)
        {
            try
            {
                using var m = _hv.HostGrants.Map(d, 5, readOnly: (i & 1) == 0);
                m.Bytes[0].Should().Be(0x3C);
                ok++;
            }
            catch (GrantException e)
            {
                e.Status.Should().Be(GrantStatus.GeneralError);
                refused++;
            }
        }

        Volatile.Write(ref stop, 1);
        await d.ExitWithinAsync();
        _hv.HostGrants.MappingCount.Should().Be(0);
        (ok + refused).Should().Be(2000);
        d.Destroy();
        _hv.FreeFrames.Should().Be(before, "no pin or frame reference leaked");
    }

    [Fact]
    public void Huge_Counts_Wild_Pointers_And_Continuation_Bits_Get_Errnos_Not_Crashes()
    {
        long hugeMap = 0, negative = 0, wildCopy = 0, wildUnmap = 0, contBits = 0, dump = 0, transfer = 0, setupTwo = 0;
        gnttab_setup_table wildList = default;
        var exit = GuestRunner.Run(_hv, g =>
        {
            // Zeroed ops from the scratch page to the end of RAM: each one is "no map flags", then the array runs off memory.
            hugeMap = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_map_grant_ref, g.Scratch + 0x10000, 0x7FFFFFFF);
            negative = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_copy, g.Scratch, 0x80000000);
            wildCopy = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_copy, 0xFFFF_FFFF_FFFF_F000, 3);
            wildUnmap = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_unmap_grant_ref, 1UL << 50, 1);
            contBits = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_copy | (1UL << 12), g.Scratch, 1);
            dump = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_dump_table, g.Scratch, 1);
            transfer = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_transfer, g.Scratch, 1);
            setupTwo = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_setup_table, g.Scratch, 2);
            wildList = new gnttab_setup_table { dom = Xen.DOMID_SELF, nr_frames = 2, frame_list = 0xDEAD_0000_0000 };
            GuestGrants.Op(g, GrantTable.GNTTABOP_setup_table, ref wildList).Should().Be(0);
        });

        exit.State.Should().Be(DomainState.Shutdown);
        hugeMap.Should().Be(-(long)Errno.EFAULT, "the array ends where the guest's memory does");
        negative.Should().Be(-(long)Errno.EINVAL, "(int)count < 0");
        wildCopy.Should().Be(-(long)Errno.EFAULT);
        wildUnmap.Should().Be(-(long)Errno.EFAULT);
        contBits.Should().Be(-(long)Errno.EINVAL, "only cache_flush carries continuation bits");
        dump.Should().Be(-(long)Errno.ENOSYS, "Xen 4.17's do_grant_table_op has no dump_table case");
        transfer.Should().Be(-(long)Errno.EOPNOTSUPP);
        setupTwo.Should().Be(-(long)Errno.EINVAL);
        wildList.status.Should().Be(GrantTable.GNTST_bad_virt_addr);
    }

    [Fact]
    public void Refs_At_The_Top_Of_The_Range_And_Offsets_Outside_The_Page_Are_Refused_Per_Op()
    {
        gnttab_map_grant_ref map = default;
        gnttab_copy topRef = default, pastPage = default, maxed = default, selfFrameOk = default;
        gnttab_swap_grant_ref swap = default;
        gnttab_unmap_grant_ref unmap = default;
        long mapRc = -1;
        GuestRunner.Run(_hv, g =>
        {
            map = new gnttab_map_grant_ref { host_addr = 0x10_0000_0000, flags = GrantTable.GNTMAP_host_map, @ref = uint.MaxValue, dom = 0 };
            mapRc = GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref map);
            var src = GuestGrants.DataPage(g, 0, 1);
            var dst = GuestGrants.DataPage(g, 1, 2);
            gnttab_copy Copy(uint flags, uint sref, ushort soff, ushort doff, ushort len) => new()
            {
                source = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = flags == 0 ? src : sref }, domid = Xen.DOMID_SELF, offset = soff },
                dest = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = dst }, domid = Xen.DOMID_SELF, offset = doff },
                len = len,
                flags = (ushort)flags,
            };
            topRef = Copy(GrantTable.GNTCOPY_source_gref, uint.MaxValue, 0, 0, 8);
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref topRef);
            pastPage = Copy(0, 0, 4095, 0, 2);
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref pastPage);
            maxed = Copy(0, 0, 0, 0xFFFF, 0xFFFF);
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref maxed);
            selfFrameOk = Copy(0, 0, 0, 4088, 8);
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref selfFrameOk);
            swap = new gnttab_swap_grant_ref { ref_a = uint.MaxValue, ref_b = 0 };
            GuestGrants.Op(g, GrantTable.GNTTABOP_swap_grant_ref, ref swap);
            unmap = new gnttab_unmap_grant_ref { host_addr = 0x1000, handle = uint.MaxValue };
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref unmap);
        });

        mapRc.Should().Be(0, "per-op failures are statuses, not errnos");
        map.status.Should().Be(GrantTable.GNTST_bad_gntref, "domain 0 has no grant frames; any ref is beyond its table");
        topRef.status.Should().Be(GrantTable.GNTST_bad_gntref);
        pastPage.status.Should().Be(GrantTable.GNTST_bad_copy_arg);
        maxed.status.Should().Be(GrantTable.GNTST_bad_copy_arg);
        selfFrameOk.status.Should().Be(GrantTable.GNTST_okay, "copying between the guest's own frames with DOMID_SELF is allowed");
        swap.status.Should().Be(GrantTable.GNTST_bad_gntref);
        unmap.status.Should().Be(GrantTable.GNTST_bad_handle);
    }
}
