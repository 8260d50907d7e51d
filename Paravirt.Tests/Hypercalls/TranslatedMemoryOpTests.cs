using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

/// <summary>memory_op for a translated domain (the default for managed guests), as Xen treats paging_mode_translate guests.</summary>
public sealed class TranslatedMemoryOpTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32, Wallclock = new FixedClock(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero)) });

    public void Dispose() => _hv.Dispose();

    private static long Memop(GuestContext g, int op, ulong arg) => g.Hypercall(Xen.__HYPERVISOR_memory_op, (ulong)op, arg);

    [Fact]
    public void Shared_Info_Mapped_With_Add_To_Physmap_Shows_The_Wallclock()
    {
        shared_info si = default;
        GuestRunner.Run(_hv, g =>
        {
            var at = GuestEvents.MapSharedInfo(g);
            si = g.Cpu.Memory.Read<shared_info>(at);
        });
        (si.wc_version & 1).Should().Be(0);
        var wall = DateTimeOffset.FromUnixTimeSeconds(((long)si.wc_sec_hi << 32) | si.wc_sec);
        wall.Should().Be(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));
    }

    [Fact]
    public async Task Mapping_Shared_Info_Over_Ram_Frees_That_Ram_And_Moving_It_Unhooks_The_Old_Slot()
    {
        long before = 0, afterFirst = 0, afterMove = 0;
        byte oldSlot = 1;
        var faulted = false;
        var d = _hv.CreateDomain(new DomainConfig { Name = "over-ram", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            before = d.TotalPages;
            var gpfn = 100UL;
            cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = gpfn });
            Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch).Should().Be(0);
            afterFirst = d.TotalPages;
            cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = 2000 });
            Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch).Should().Be(0);
            afterMove = d.TotalPages;
            try
            {
                oldSlot = cpu.Memory.Read<byte>(gpfn * 4096);
            }
            catch (GuestFaultException)
            {
                faulted = true;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        afterFirst.Should().Be(before - 1, "the RAM page that was at the slot is freed, as guest_remove_page does");
        afterMove.Should().Be(afterFirst, "moving shared_info frees nothing");
        faulted.Should().BeTrue("the old slot is a hole after the move");
        _ = oldSlot;
        d.Destroy();
    }

    [Fact]
    public void Shared_Info_Index_Other_Than_Zero_And_Foreign_Domains_Are_Refused()
    {
        var other = _hv.CreateDomain(new DomainConfig { Name = "other", MemoryMiB = 4 });
        var r = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 1, gpfn = 2000 });
            r.Add(Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch));
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = other.Id, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = 2000 });
            r.Add(Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch));
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = 99, idx = 0, gpfn = 2000 });
            r.Add(Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch));
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = 1UL << 41 });
            r.Add(Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch));
        });
        r.Should().Equal(-(long)Errno.EINVAL, -(long)Errno.EPERM, -(long)Errno.EINVAL, -(long)Errno.EINVAL);
        other.Destroy();
    }

    [Fact]
    public void Gmfn_Space_Moves_A_Ram_Page_With_Its_Contents()
    {
        ulong moved = 0;
        long rc = -1, stale = 0;
        GuestRunner.Run(_hv, g =>
        {
            var src = g.Scratch + 0x3000;
            g.Cpu.Memory.Write(src, 0xfeedface_cafebeefUL);
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_gmfn, idx = src / 4096, gpfn = 3000 });
            rc = Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch);
            moved = g.Cpu.Memory.Read<ulong>(3000UL * 4096);
            // The page no longer sits at its old GFN: moving it again from there is -EINVAL.
            g.Cpu.Memory.Write(g.Scratch, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_gmfn, idx = src / 4096, gpfn = 3001 });
            stale = Memop(g, XenMem.XENMEM_add_to_physmap, g.Scratch);
        });
        rc.Should().Be(0);
        moved.Should().Be(0xfeedface_cafebeefUL);
        stale.Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public async Task Remove_From_Physmap_Leaves_A_Hole_But_Keeps_The_Page_Charged()
    {
        long rc = -1, missing = 0, before = 0, after = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "remover", MemoryMiB = 4 });
        var faulted = false;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            before = d.TotalPages;
            cpu.Memory.Write(g.Scratch, new xen_remove_from_physmap { domid = Xen.DOMID_SELF, gpfn = 200 });
            rc = Memop(g, XenMem.XENMEM_remove_from_physmap, g.Scratch);
            cpu.Memory.Write(g.Scratch, new xen_remove_from_physmap { domid = Xen.DOMID_SELF, gpfn = 200 });
            missing = Memop(g, XenMem.XENMEM_remove_from_physmap, g.Scratch);
            after = d.TotalPages;
            try
            {
                cpu.Memory.Read<byte>(200 * 4096);
            }
            catch (GuestFaultException)
            {
                faulted = true;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        rc.Should().Be(0);
        missing.Should().Be(-(long)Errno.ENOENT);
        after.Should().Be(before);
        faulted.Should().BeTrue();
        var free = _hv.FreeFrames;
        d.Destroy();
        _hv.FreeFrames.Should().BeGreaterThan(free, "the unmapped page goes back with the domain");
    }

    [Fact]
    public void Decrease_Reservation_Takes_Gfns_And_Populate_Refills_The_Hole_Without_Telling_Mfns()
    {
        long dec = -1, pop = -1;
        ulong written = 0;
        ulong readBack = 1;
        GuestRunner.Run(_hv, g =>
        {
            var list = g.Scratch + 0x100;
            g.Cpu.Memory.Write(list, 300UL);
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_reservation { extent_start = list, nr_extents = 1, domid = Xen.DOMID_SELF });
            dec = Memop(g, XenMem.XENMEM_decrease_reservation, g.Scratch);
            g.Cpu.Memory.Write(list, 300UL);
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_reservation { extent_start = list, nr_extents = 1, domid = Xen.DOMID_SELF });
            pop = Memop(g, XenMem.XENMEM_populate_physmap, g.Scratch);
            written = g.Cpu.Memory.Read<ulong>(list);
            readBack = g.Cpu.Memory.Read<ulong>(300UL * 4096);
        });
        dec.Should().Be(1);
        pop.Should().Be(1);
        written.Should().Be(300UL, "a translated guest is not told machine frames");
        readBack.Should().Be(0UL, "a fresh page is zero");
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }
}
