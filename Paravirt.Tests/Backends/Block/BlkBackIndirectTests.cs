using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>
/// Indirect requests (io/blkif.h BLKIF_OP_INDIRECT, feature-max-indirect-segments = 256): data
/// both ways checked against the device, and every malformed one answered as Linux's blkback
/// answers it (BLKIF_RSP_ERROR, with <c>indirect_op</c> as the response's operation) while the
/// ring goes on serving.
/// </summary>
public sealed class BlkBackIndirectTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    /// <summary>"memory": read and written on the worker thread (ISynchronousBlockDevice); "async": the device's async API with the slot's bounce buffer.</summary>
    [Theory]
    [InlineData("memory")]
    [InlineData("async")]
    public async Task Indirect_Reads_And_Writes_Of_1_To_256_Segments_Match_The_Device(string kind)
    {
        var bytes = BlockGuest.Pattern(8 << 20, 21);
        var original = (byte[])bytes.Clone();
        IBlockDevice device = kind == "memory" ? BlockDevice.InMemory(bytes) : new GatedBlockDevice(BlockDevice.InMemory(bytes));
        var d = hv.CreateDomain(BlockGuest.Config("indirect"));
        await using var disk = d.AttachDisk("xvda", device);
        int[] sizes = [1, 11, 12, 100, 255, 256];
        var reads = new List<(int Pages, short Status, byte Op, byte[] Data)>();
        var writes = new List<(int Pages, short Status, byte Op)>();
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.ReadBackend("feature-max-indirect-segments").Should().Be("256");
            var sector = 0UL;
            foreach (var n in sizes)
            {
                var (status, op, data) = f.ReadPagesIndirect(sector, 0, n);
                reads.Add((n, status, op, data));
                sector += (ulong)n * 8;
            }

            foreach (var n in sizes)
            {
                var (status, op) = f.WritePagesIndirect(sector, 0, BlockGuest.Pattern(n * 4096, 1000 + n));
                writes.Add((n, status, op));
                sector += (ulong)n * 8;
            }
        });

        var at = 0;
        foreach (var (n, status, op, data) in reads)
        {
            status.Should().Be(Blkif.BLKIF_RSP_OKAY, $"a {n}-segment indirect read");
            op.Should().Be(Blkif.BLKIF_OP_READ, "blkback answers an indirect request with its indirect_op");
            data.Should().Equal(original.AsSpan(at, n * 4096).ToArray(), $"the {n}-segment read returns the disk's bytes");
            at += n * 4096;
        }

        var readBytes = at;
        foreach (var (n, status, op) in writes)
        {
            status.Should().Be(Blkif.BLKIF_RSP_OKAY, $"a {n}-segment indirect write");
            op.Should().Be(Blkif.BLKIF_OP_WRITE);
            bytes.AsSpan(at, n * 4096).ToArray().Should().Equal(BlockGuest.Pattern(n * 4096, 1000 + n), $"the {n}-segment write landed");
            at += n * 4096;
        }

        bytes.AsSpan(at).SequenceEqual(original.AsSpan(at)).Should().BeTrue("nothing past the writes changed");
        var stats = disk.Stats;
        stats.IndirectRequests.Should().Be(2 * sizes.Length);
        stats.Reads.Should().Be(sizes.Length);
        stats.Writes.Should().Be(sizes.Length);
        stats.BytesRead.Should().Be(readBytes);
        stats.BytesWritten.Should().Be(at - readBytes);
        stats.Errors.Should().Be(0);
        d.Meter.BlockBytesRead.Should().Be(readBytes);
        d.Destroy();
    }

    [Fact]
    public async Task Invalid_Indirect_Requests_Get_Blkbacks_Status_And_Harm_Nothing()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 22); // 2048 sectors
        var original = (byte[])bytes.Clone();
        var device = new GatedBlockDevice(BlockDevice.InMemory(bytes));
        var d = hv.CreateDomain(BlockGuest.Config("badindirect"));
        await using var disk = d.AttachDisk("xvda", device);
        var outcomes = new List<(string What, blkif_response Response)>();
        byte[]? goodIndirect = null, goodDirect = null;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var i = 0; i < 300; i++)
            {
                f.GrantPage(i);
                f.FillPage(i, BlockGuest.Pattern(4096, 500 + i));
            }

            void Try(string what, blkif_request_indirect r) => outcomes.Add((what, f.Call(r)));

            blkif_request_indirect Write(int pages, ulong sector = 0) => f.IndirectRequest((byte)Blkif.BLKIF_OP_WRITE, sector, 0, pages);

            var op = Write(4);
            op.indirect_op = Blkif.BLKIF_OP_FLUSH_DISKCACHE;
            Try("indirect_op flush", op);
            op = Write(4);
            op.indirect_op = Blkif.BLKIF_OP_INDIRECT;
            Try("indirect_op indirect", op);
            op = Write(4);
            op.indirect_op = 42;
            Try("indirect_op 42", op);

            var none = Write(4);
            none.nr_segments = 0;
            Try("no segments", none);

            // 257 segments: two indirect pages' worth written and granted, one more than offered.
            var tooMany = f.IndirectRequest((byte)Blkif.BLKIF_OP_WRITE, 0, 0, 257);
            Try("257 segments", tooMany);
            var huge = Write(4);
            huge.nr_segments = ushort.MaxValue;
            Try("65535 segments", huge);

            var lastPastPage = Write(256);
            f.WriteIndirectSegments([new blkif_request_segment { gref = TestBlkFront.DataRef(0), first_sect = 0, last_sect = 8 }]);
            Try("last_sect 8 in segment 0", lastPastPage);
            var firstAfterLast = Write(256);
            WriteSegmentAt(f, 200, new blkif_request_segment { gref = TestBlkFront.DataRef(200), first_sect = 5, last_sect = 4 });
            Try("first_sect > last_sect in segment 200", firstAfterLast);

            Try("past the end of the disk", Write(8, 2048 - 63));
            Try("sector far past the end", Write(1, ulong.MaxValue - 3));

            var ungranted = Write(4);
            TestBlkFront.SetIndirectGref(ref ungranted, 0, 499); // an indirect page the frontend never granted
            Try("indirect page not granted", ungranted);

            var badData = Write(12);
            WriteSegmentAt(f, 11, new blkif_request_segment { gref = 498, first_sect = 0, last_sect = 7 });
            Try("data page not granted", badData);

            short status;
            (status, _, goodIndirect) = f.ReadPagesIndirect(64, 310, 20);
            status.Should().Be(Blkif.BLKIF_RSP_OKAY, "the ring still serves good indirect requests");
            (status, goodDirect) = f.ReadPages(8, 340, 2);
            status.Should().Be(Blkif.BLKIF_RSP_OKAY, "and plain ones");
        });

        foreach (var (what, r) in outcomes)
        {
            r.status.Should().Be(Blkif.BLKIF_RSP_ERROR, what);
        }

        outcomes.Select(o => o.Response.operation).Should().Equal(
            [Blkif.BLKIF_OP_FLUSH_DISKCACHE, Blkif.BLKIF_OP_INDIRECT, 42, .. Enumerable.Repeat((byte)Blkif.BLKIF_OP_WRITE, outcomes.Count - 3)],
            "blkback answers with the request's indirect_op, whatever it was");
        bytes.Should().Equal(original, "no invalid request reached the disk");
        device.Started.Should().Equal(["read 64", "read 8"], "only the good reads reached the device");
        goodIndirect.Should().Equal(original.AsSpan(64 * 512, 20 * 4096).ToArray());
        goodDirect.Should().Equal(original.AsSpan(8 * 512, 2 * 4096).ToArray());
        disk.Stats.Errors.Should().Be(outcomes.Count);
        disk.Stats.IndirectRequests.Should().Be(outcomes.Count + 1);
        disk.Stats.Writes.Should().Be(0);
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task A_Read_Only_Disk_Refuses_Indirect_Writes_And_Serves_Indirect_Reads()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 23);
        var original = (byte[])bytes.Clone();
        var d = hv.CreateDomain(BlockGuest.Config("roindirect"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes, readOnly: true));
        (short Status, byte Op) write = default;
        (short Status, byte Op, byte[] Data) read = default;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            write = f.WritePagesIndirect(0, 0, BlockGuest.Pattern(16 * 4096, 3));
            read = f.ReadPagesIndirect(0, 20, 16);
        });

        write.Status.Should().Be(Blkif.BLKIF_RSP_ERROR);
        write.Op.Should().Be(Blkif.BLKIF_OP_WRITE);
        read.Status.Should().Be(Blkif.BLKIF_RSP_OKAY);
        read.Data.Should().Equal(original.AsSpan(0, 16 * 4096).ToArray());
        bytes.Should().Equal(original);
        d.Destroy();
    }

    private static void WriteSegmentAt(TestBlkFront f, int index, blkif_request_segment segment)
    {
        var page = index / TestBlkFront.SegmentsPerIndirectPage;
        f.G.Cpu.Memory.Write(f.IndirectAddress(page) + ((ulong)(index % TestBlkFront.SegmentsPerIndirectPage) * 8), segment);
    }
}
