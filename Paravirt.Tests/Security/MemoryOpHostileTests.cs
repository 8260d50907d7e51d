using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Paravirt.Tests.Hypercalls.MemoryOpTests;

namespace Paravirt.Tests.Security;

/// <summary>A guest throwing bad memory_op arguments: it gets Xen's answers, its neighbours lose nothing, the host never throws.</summary>
public sealed class MemoryOpHostileTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Huge_Nr_Extents_Is_Refused_Before_Any_Work_As_Too_Large_For_A_Continuation()
    {
        var results = new List<long>();
        long cur = 0;
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            foreach (var nr in new[] { ulong.MaxValue, 1UL << 63, (uint.MaxValue >> 6) + 1UL })
            {
                results.Add(Reserve(g, XenMem.XENMEM_increase_reservation, nr));
                results.Add(Reserve(g, XenMem.XENMEM_populate_physmap, nr));
                results.Add(Reserve(g, XenMem.XENMEM_decrease_reservation, nr));
            }

            cur = Current(g);
        }, Config("huge"));

        results.Should().OnlyContain(r => r == 0);
        cur.Should().Be(Pages);
        exit.State.Should().Be(DomainState.Shutdown);
    }

    [Fact]
    public void The_Largest_Encodable_Nr_Extents_Ends_At_The_First_Extent_That_Fails()
    {
        long inc = 0, dec = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            // A null list: increase allocates without writing back, so only max_pages stops it.
            inc = Reserve(g, XenMem.XENMEM_increase_reservation, uint.MaxValue >> 6, list: 0);
            WriteList(g, ulong.MaxValue);
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, uint.MaxValue >> 6);
            cur = Current(g);
        }, Config("big"));

        inc.Should().Be(MaxPages - Pages, "allocation stops at max_pages");
        dec.Should().Be(0);
        cur.Should().Be(MaxPages);
    }

    [Fact]
    public void A_Wild_Extent_List_Gives_The_Count_Done_And_Never_Faults_The_Host()
    {
        var results = new List<long>();
        long cur = 0;
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            foreach (var wild in new[] { ulong.MaxValue - 7, 0xffff_8000_0000_0000UL, 1UL << 60 })
            {
                results.Add(Reserve(g, XenMem.XENMEM_increase_reservation, 4, list: wild));
                results.Add(Reserve(g, XenMem.XENMEM_populate_physmap, 4, list: wild));
                results.Add(Reserve(g, XenMem.XENMEM_decrease_reservation, 4, list: wild));
            }

            cur = Current(g);
        }, Config("wild"));

        results.Should().OnlyContain(r => r == 0);
        cur.Should().Be(Pages, "a list outside the address space is refused before anything is allocated");
        exit.State.Should().Be(DomainState.Shutdown);
    }

    [Fact]
    public void An_Unmapped_Extent_List_Keeps_The_Page_Increase_Allocated_Before_The_Write_Faulted_As_Xen_Does()
    {
        long done = -1, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            done = Reserve(g, XenMem.XENMEM_increase_reservation, 4, list: 0x40_0000_0000UL);
            cur = Current(g);
        }, Config("unmapped"));

        done.Should().Be(0);
        cur.Should().Be(Pages + 1);
    }

    [Fact]
    public void Reservation_Ops_On_Another_Domain_Do_Nothing_And_Return_The_Start_Extent()
    {
        var victim = _hv.CreateDomain(Config("victim"));
        victim.PhysMap.TryLookup(600, out var victimMfn, out _);
        long inc = -1, pop = -1, dec = -1, decSelf = -1, decMissing = -1;
        GuestRunner.RunPv(_hv, g =>
        {
            inc = Reserve(g, XenMem.XENMEM_increase_reservation, 4, domid: victim.Id);
            WriteList(g, 1100);
            pop = Reserve(g, XenMem.XENMEM_populate_physmap, 1, domid: victim.Id);
            WriteList(g, victimMfn);
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 1, domid: victim.Id, startExtent: 0);
            decSelf = Reserve(g, XenMem.XENMEM_decrease_reservation, 1);
            decMissing = Reserve(g, XenMem.XENMEM_decrease_reservation, 1, domid: 0x7000);
        }, Config("attacker"));

        inc.Should().Be(0);
        pop.Should().Be(0);
        dec.Should().Be(0);
        decSelf.Should().Be(0, "the victim's MFN is not the caller's to give back");
        decMissing.Should().Be(0);
        victim.TotalPages.Should().Be(Pages);
        victim.PhysMap.TryLookup(600, out var still, out _).Should().BeTrue();
        still.Should().Be(victimMfn);
        victim.Destroy();
    }

    [Fact]
    public void Giving_Back_The_Same_Mfn_Twice_In_One_List_Frees_It_Once()
    {
        long dec = 0, cur = 0, free = 0, freeBefore = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            var mfn = MfnOf(g, 600);
            WriteList(g, mfn, mfn);
            freeBefore = _hv.FreeFrames;
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 2);
            free = _hv.FreeFrames;
            cur = Current(g);
        }, Config("twice"));

        dec.Should().Be(1);
        cur.Should().Be(Pages - 1);
        free.Should().Be(freeBefore + 1);
    }

    [Fact]
    public void Giving_Back_The_Shared_Info_Frame_Does_Not_Free_It()
    {
        long dec = 0, cur = 0;
        ulong sharedInfoMfn = 0;
        int refs = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            sharedInfoMfn = g.ReadStartInfo().shared_info >> 12;
            WriteList(g, sharedInfoMfn);
            dec = Reserve(g, XenMem.XENMEM_decrease_reservation, 1);
            cur = Current(g);
            refs = _hv.Frames.ReferenceCount(sharedInfoMfn);
        }, Config("si"));

        dec.Should().Be(1, "the frame is the guest's, so get_page succeeds");
        cur.Should().Be(Pages);
        refs.Should().BeGreaterThan(0, "the hypervisor still holds shared_info");
    }

    [Fact]
    public void Populate_Above_The_Ram_Range_Is_Bounded_By_The_Extra_Physmap_Limit_And_The_Highest_Gfn()
    {
        long done = 0, tooHigh = 0, cur = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            WriteList(g, 5000, 5001, 5002);
            done = Reserve(g, XenMem.XENMEM_populate_physmap, 3);
            WriteList(g, 1UL << 40);
            tooHigh = Reserve(g, XenMem.XENMEM_populate_physmap, 1);
            cur = Current(g);
            g.Cpu.Memory.Write(5001UL << 12, 7UL);
        }, Config("extra", DomainLimits.Default with { MaxExtraPhysmapEntries = 2 }));

        done.Should().Be(2);
        tooHigh.Should().Be(0);
        cur.Should().Be(Pages + 2);
    }

    [Fact]
    public void Every_Sub_Op_With_Garbage_Or_Wild_Arguments_Returns_A_Value_And_Leaves_The_Domain_Running()
    {
        var results = new List<long>();
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            var garbage = new byte[256];
            new Random(1234).NextBytes(garbage);
            foreach (var arg in new[] { g.Scratch, 0UL, ulong.MaxValue, 0xffff_8000_0000_0000UL })
            {
                for (var op = 0UL; op < 64; op++)
                {
                    if (arg == g.Scratch)
                    {
                        g.Cpu.Memory.Write(g.Scratch, garbage);
                    }

                    results.Add(g.Hypercall(Xen.__HYPERVISOR_memory_op, op, arg));
                    results.Add(g.Hypercall(Xen.__HYPERVISOR_memory_op, op | (0x3ffUL << 6), arg));
                    results.Add(g.Hypercall(Xen.__HYPERVISOR_memory_op, op | ulong.MaxValue << 6, arg));
                }
            }
        }, Config("fuzz"));

        exit.State.Should().Be(DomainState.Shutdown, "no sub-op may crash the caller or throw in the host");
        results.Should().HaveCount(4 * 64 * 3);
    }
}
