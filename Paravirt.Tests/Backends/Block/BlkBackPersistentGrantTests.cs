using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>
/// Persistent grants (io/blkif.h feature-persistent): a frontend that writes it has its grants
/// mapped by domain 0 the first time a request names them and kept mapped (its grant entries
/// show GTF_reading|GTF_writing, gnttab_end_foreign_access fails) until the ring disconnects;
/// data moves through the mapped frames. Beyond the bound, grants are mapped per request; a full
/// table and grants unused for long are purged as Linux's blkback purges them.
/// </summary>
public sealed class BlkBackPersistentGrantTests : IDisposable
{
    private const ushort Busy = (ushort)(GrantTable.GTF_reading | GrantTable.GTF_writing);

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    private static ushort Flags(TestBlkFront f, int page) => GuestGrants.FlagsV1(f.G, f.GrantTable, TestBlkFront.DataRef(page));

    /// <summary>Grants data pages writable once, as blkfront grants its persistent pages once (granting again would rewrite the entries' flags).</summary>
    private static void GrantOnce(TestBlkFront f, int pages)
    {
        for (var i = 0; i < pages; i++)
        {
            f.GrantPage(i);
        }
    }

    private static byte[] ReadBack(TestBlkFront f, int firstPage, int pages)
    {
        var data = new byte[pages * 4096];
        for (var i = 0; i < pages; i++)
        {
            f.ReadPage(firstPage + i).CopyTo(data, i * 4096);
        }

        return data;
    }

    private static short Read(TestBlkFront f, ulong sector, int firstPage, int pages) =>
        f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_READ, sector, firstPage, pages)).status;

    [Theory]
    [InlineData("memory")]
    [InlineData("async")]
    public async Task Grants_Stay_Mapped_Across_Requests_And_Are_All_Unmapped_When_The_Ring_Disconnects(string kind)
    {
        var bytes = BlockGuest.Pattern(2 << 20, 31);
        var original = (byte[])bytes.Clone();
        var written = BlockGuest.Pattern(11 * 4096, 32);
        IBlockDevice device = kind == "memory" ? BlockDevice.InMemory(bytes) : new GatedBlockDevice(BlockDevice.InMemory(bytes));
        var d = hv.CreateDomain(BlockGuest.Config("persistent"));
        await using var disk = d.AttachDisk("xvda", device);
        byte[]? first = null, indirect = null, afterWrite = null;
        bool endedWhileMapped = true, endedAfterClose = false;
        ushort flagsWhileMapped = 0, flagsOfPage19 = 0, flagsAfterClose = Busy;
        await BlockGuest.RunAsync(d, f =>
        {
            f.ReadBackend("feature-persistent").Should().Be("1");
            f.Connect(persistent: true).Should().BeTrue();
            disk.UsesPersistentGrants.Should().BeTrue();
            GrantOnce(f, 20);
            Read(f, 40, 0, 11).Should().Be(Blkif.BLKIF_RSP_OKAY);
            first = ReadBack(f, 0, 11);
            hv.HostGrants.MappingCount.Should().Be(1 + 11, "the ring and the eleven data grants stay mapped after the read");
            disk.PersistentGrantCount.Should().Be(11);
            endedWhileMapped = GuestGrants.EndForeignAccessV1(f.G, f.GrantTable, TestBlkFront.DataRef(0));

            // The same grants carry a write, then a read of what was written: nothing new is mapped.
            for (var i = 0; i < 11; i++)
            {
                f.FillPage(i, written.AsSpan(i * 4096, 4096));
            }

            f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE, 500, 0, 11)).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            for (var i = 0; i < 11; i++)
            {
                f.FillPage(i, new byte[4096]);
            }

            Read(f, 500, 0, 11).Should().Be(Blkif.BLKIF_RSP_OKAY);
            afterWrite = ReadBack(f, 0, 11);
            hv.HostGrants.MappingCount.Should().Be(1 + 11, "reused, not mapped again");

            // An indirect read over pages 0..19: nine new data grants and the indirect page join.
            f.Call(f.IndirectRequest((byte)Blkif.BLKIF_OP_READ, 100, 0, 20)).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            indirect = ReadBack(f, 0, 20);
            disk.PersistentGrantCount.Should().Be(21);
            hv.HostGrants.MappingCount.Should().Be(1 + 21);
            flagsWhileMapped = Flags(f, 0);
            flagsOfPage19 = Flags(f, 19);

            f.Close();
            flagsAfterClose = Flags(f, 0);
            endedAfterClose = GuestGrants.EndForeignAccessV1(f.G, f.GrantTable, TestBlkFront.DataRef(0));
        });

        first.Should().Equal(original.AsSpan(40 * 512, 11 * 4096).ToArray());
        bytes.AsSpan(500 * 512, written.Length).ToArray().Should().Equal(written);
        afterWrite.Should().Equal(written);
        indirect.Should().Equal(bytes.AsSpan(100 * 512, 20 * 4096).ToArray());
        (flagsWhileMapped & Busy).Should().Be(Busy, "domain 0 holds the grant mapped writable (GTF_reading|GTF_writing) across requests");
        (flagsOfPage19 & Busy).Should().Be(Busy);
        endedWhileMapped.Should().BeFalse("gnttab_end_foreign_access fails while the backend has the grant mapped");
        (flagsAfterClose & Busy).Should().Be(0, "the disconnect unmapped it");
        endedAfterClose.Should().BeTrue();
        hv.HostGrants.MappingCount.Should().Be(0);
        disk.PersistentGrantCount.Should().Be(0);
        var stats = disk.Stats;
        stats.PersistentGrantsMapped.Should().Be(21);
        stats.PersistentGrantsReused.Should().Be(11 + 11 + 11, "the write and the second read reused all eleven, the indirect read eleven of its twenty");
        stats.TransientGrantMaps.Should().Be(0);
        stats.PersistentGrantsPurged.Should().Be(0, "the disconnect's unmapping is not a purge");
        stats.Reads.Should().Be(3);
        stats.Writes.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task Without_Both_Ends_Agreeing_The_Ring_Copies_And_Keeps_Nothing_Mapped()
    {
        var d = hv.CreateDomain(BlockGuest.Config("copy"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(2048));
        var d2 = hv.CreateDomain(BlockGuest.Config("off"));
        await using var disk2 = d2.AttachDisk("xvda", BlockDevice.InMemory(2048), new BlkBackOptions { PersistentGrants = false });
        hv.XenStore.Read(disk2.BackendPath + "/feature-persistent").Should().Be("0");
        foreach (var (dom, persistentFrontend) in new[] { (d, false), (d2, true) })
        {
            await BlockGuest.RunAsync(dom, f =>
            {
                f.Connect(persistent: persistentFrontend).Should().BeTrue();
                f.ReadPages(0, 0, 11).Status.Should().Be(Blkif.BLKIF_RSP_OKAY);
                f.WritePages(64, 11, new byte[4096]).Should().Be(Blkif.BLKIF_RSP_OKAY, "a read-only grant is fine for a write by grant copy");
                hv.HostGrants.MappingCount.Should().Be(1, "only the ring is mapped");
                (Flags(f, 0) & Busy).Should().Be(0);
            });
        }

        disk.Stats.PersistentGrantsMapped.Should().Be(0);
        disk2.Stats.PersistentGrantsMapped.Should().Be(0);
        d.Destroy();
        d2.Destroy();
    }

    [Fact]
    public async Task Persistent_Grants_Are_Mapped_Writable_So_A_Read_Only_Grant_Fails_The_Request_As_In_Linux()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 33);
        var original = (byte[])bytes.Clone();
        var d = hv.CreateDomain(BlockGuest.Config("rogrant"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        short write = 0;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect(persistent: true).Should().BeTrue();
            f.GrantPage(0);
            f.GrantPage(1);
            write = f.WritePages(0, 2, BlockGuest.Pattern(3 * 4096, 4), readOnlyGrants: true);

            // Pages 0 and 1 (writable) in one request with read-only 2: the request fails; 0 and 1
            // were mapped and kept before 2 failed, as blkback adds them to its tree, and are free.
            f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE, 0, 0, 3)).status.Should().Be(Blkif.BLKIF_RSP_ERROR);
            hv.HostGrants.MappingCount.Should().Be(1 + 2);
            f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_READ, 0, 0, 2)).status.Should().Be(Blkif.BLKIF_RSP_OKAY, "the kept grants serve the next request");
        });

        write.Should().Be(Blkif.BLKIF_RSP_ERROR, "blkback maps a persistent frontend's grants writable, and a read-only grant cannot be");
        bytes.Should().Equal(original);
        disk.Stats.Writes.Should().Be(0);
        disk.Stats.PersistentGrantsMapped.Should().Be(2);
        disk.Stats.PersistentGrantsReused.Should().Be(2);
        d.Destroy();
    }

    [Fact]
    public async Task Beyond_The_Bound_Grants_Are_Mapped_Per_Request_And_The_Table_Is_Purged_As_Blkback_Purges_It()
    {
        var time = new ManualTime();
        var bytes = BlockGuest.Pattern(2 << 20, 34);
        var d = hv.CreateDomain(BlockGuest.Config("bound"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes), new BlkBackOptions { MaxPersistentGrants = 100, Time = time });
        var steps = new List<(string Step, int Mappings, BlkBackStats Stats)>();
        bool page0Busy = true, page4Busy = true, page5Busy = false, indirectBusy = false;
        await BlockGuest.RunAsync(d, f =>
        {
            void Step(string name) => steps.Add((name, hv.HostGrants.MappingCount, disk.Stats));

            f.Connect(persistent: true).Should().BeTrue();
            GrantOnce(f, 201);
            var indirect = f.IndirectRequest((byte)Blkif.BLKIF_OP_READ, 0, 0, 120);

            // 120 segments and their indirect page: the indirect page and pages 0..98 fill the
            // table of 100; pages 99..119 are mapped for the request only.
            f.Call(indirect).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            Step("first");
            f.Call(indirect).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            Step("again");

            // 150 ms later the full table that turned grants away gives up 5 % of its limit,
            // lowest grant references first (pages 0..4), before the next request is taken;
            // that request's pages 99..103 then fit and 104..109 are mapped for it only.
            time.Advance(TimeSpan.FromMilliseconds(150));
            Read(f, 0, 99, 11).Should().Be(Blkif.BLKIF_RSP_OKAY);
            Step("lru");
            page0Busy = (Flags(f, 0) & Busy) != 0;
            page4Busy = (Flags(f, 4) & Busy) != 0;
            page5Busy = (Flags(f, 5) & Busy) != 0;
            indirectBusy = (GuestGrants.FlagsV1(f.G, f.GrantTable, TestBlkFront.IndirectRef(0)) & Busy) != 0;

            // A minute unused: every free grant goes.
            time.Advance(TimeSpan.FromSeconds(61));
            Read(f, 0, 200, 1).Should().Be(Blkif.BLKIF_RSP_OKAY);
            Step("unused");
        });

        steps[0].Mappings.Should().Be(1 + 100, "the ring and the 100 kept grants; the 21 others were unmapped when the read completed");
        steps[0].Stats.PersistentGrantsMapped.Should().Be(100);
        steps[0].Stats.TransientGrantMaps.Should().Be(21);
        steps[1].Mappings.Should().Be(1 + 100);
        steps[1].Stats.PersistentGrantsReused.Should().Be(100);
        steps[1].Stats.TransientGrantMaps.Should().Be(42);
        steps[1].Stats.PersistentGrantsPurged.Should().Be(0, "under 100 ms: no purge yet");
        steps[2].Stats.PersistentGrantsPurged.Should().Be(5);
        steps[2].Stats.PersistentGrantsMapped.Should().Be(105);
        steps[2].Stats.TransientGrantMaps.Should().Be(42 + 6);
        steps[2].Mappings.Should().Be(1 + 100);
        page0Busy.Should().BeFalse("page 0's grant was purged: the frontend may end access to it again");
        page4Busy.Should().BeFalse();
        page5Busy.Should().BeTrue();
        indirectBusy.Should().BeTrue("the indirect page (ref 400) was mapped first but has a higher reference: it stays");
        steps[3].Stats.PersistentGrantsPurged.Should().Be(105, "all 100 had been unused for 61 s");
        steps[3].Mappings.Should().Be(1 + 1, "the ring and the one grant the last read mapped afresh");
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task A_Frontend_Rewriting_A_Kept_Grant_Only_Fools_Itself_And_Every_Frame_Comes_Back()
    {
        var before = hv.FreeFrames;
        var bytes = BlockGuest.Pattern(1 << 20, 35);
        var d = hv.CreateDomain(BlockGuest.Config("rewrite"));
        var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        byte[]? oldPage = null, newPage = null;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect(persistent: true).Should().BeTrue();
            GrantOnce(f, 1);
            Read(f, 0, 0, 1).Should().Be(Blkif.BLKIF_RSP_OKAY);
            f.FillPage(0, new byte[4096]);
            f.FillPage(50, new byte[4096]);

            // Hostile: the entry of the mapped grant is overwritten to point at page 50. Xen keeps
            // the frame the backend mapped; so does blkback, which goes on using the mapping.
            GuestGrants.GrantV1(f.G, f.GrantTable, TestBlkFront.DataRef(0), 0, f.DataAddress(50) >> 12);
            f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_READ, 8, 0, 1)).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            oldPage = f.ReadPage(0);
            newPage = f.ReadPage(50);
        });

        oldPage.Should().Equal(bytes.AsSpan(8 * 512, 4096).ToArray(), "the read went to the frame that stayed mapped");
        newPage.Should().OnlyContain(b => b == 0);
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
        hv.FreeFrames.Should().Be(before, "the mapping's frame reference went with the disconnect");
    }
}
