using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Guest.Block;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>Tests that count every allocation in the process, so they run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(ProcessAllocationCollection), DisableParallelization = true)]
public sealed class ProcessAllocationCollection;

/// <summary>
/// blkback's steady state: a served 4 KiB read allocates nothing, per request, on any thread.
/// blkback works on its dispatcher, its event pump and thread-pool workers, so the measure is the
/// whole process's allocated bytes (<see cref="GC.GetTotalAllocatedBytes"/>, precise) around a warm
/// loop of reads by a guest's blkfront, in a collection that runs alone. That figure also holds the
/// frontend, both event channel directions and whatever the runtime does meanwhile; it measured
/// 0 B per read (435 B before requests ran synchronously and the host's port wait was reused), and
/// the bound of 8 B per read (32 KB over the loop) leaves room only for the runtime's own
/// background work. 256-segment indirect requests, by grant copy and through persistent grants,
/// measured 0 B per request too (2026-12-08).
/// </summary>
[Collection(nameof(ProcessAllocationCollection))]
public sealed class BlkBackAllocationTests : IDisposable
{
    private const int Warm = 500;
    private const int Measured = 4_000;
    private const long BoundPerRead = 8;

    /// <summary>Fewer requests are measured (each moves 1 MiB), so more room per request for the runtime; any object allocated per request is 24 B or more.</summary>
    private const long BoundPerIndirectRequest = 16;

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Theory]
    [InlineData("memory")]
    [InlineData("file")]
    public async Task A_Served_4KiB_Read_Allocates_Nothing_In_The_Steady_State(string kind)
    {
        var path = Path.Combine(Path.GetTempPath(), $"paravirt-blkalloc-{Guid.NewGuid():N}.img");
        IBlockDevice device;
        if (kind == "file")
        {
            File.WriteAllBytes(path, BlockPattern.Make(4 << 20, 0, 7));
            device = BlockDevice.OpenFile(path, writable: false);
        }
        else
        {
            device = BlockDevice.InMemory(BlockPattern.Make(4 << 20, 0, 7));
        }

        try
        {
            var d = hv.CreateDomain(BlockKernel.Config("alloc"));
            await using var disk = d.AttachDisk("xvda", device);
            long perRead = -1;
            var readsBefore = 0L;
            await BlockKernel.RunAsync(d, rt =>
            {
                var fe = BlockFrontend.Connect(rt);
                var page = new byte[4096];
                var pages = (int)(fe.SectorCount * fe.SectorSize / 4096);
                for (var i = 0; i < Warm; i++)
                {
                    fe.Read((long)(i * 7 % pages) * 8, page);
                }

                page.Should().Equal(BlockPattern.Make(4096, (long)((Warm - 1) * 7 % pages) * 4096, 7), "the last warm-up read returns the disk's bytes");
                readsBefore = disk.Stats.Reads;
                var before = GC.GetTotalAllocatedBytes(precise: true);
                for (var i = 0; i < Measured; i++)
                {
                    fe.Read((long)(i * 13 % pages) * 8, page);
                }

                perRead = (GC.GetTotalAllocatedBytes(precise: true) - before) / Measured;
            });

            (disk.Stats.Reads - readsBefore).Should().Be(Measured, "every measured read reached blkback");
            perRead.Should().BeLessThanOrEqualTo(BoundPerRead,
                $"a served read ({kind} disk) allocates nothing: not in blkback, the event channels or the frontend");
            d.Destroy();
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// 256-segment indirect reads and writes (1 MiB each) allocate nothing once every slot's
    /// buffer has grown: by grant copy, and through persistent grants (kept mapped after the
    /// first request). The frontend is the test's raw one, driven through its non-allocating calls.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Indirect_256_Segment_Requests_Allocate_Nothing_In_The_Steady_State(bool persistent)
    {
        const int Requests = 200;
        var d = hv.CreateDomain(BlockGuest.Config("allocindirect"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(BlockPattern.Make(4 << 20, 0, 9)));
        long perRequest = -1;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect(persistent: persistent).Should().BeTrue();
            for (var i = 0; i < BlkBack.MaxIndirectSegments; i++)
            {
                f.GrantPage(i);
            }

            var read = f.IndirectRequest((byte)Blkif.BLKIF_OP_READ, 0, 0, BlkBack.MaxIndirectSegments);
            var write = f.IndirectRequest((byte)Blkif.BLKIF_OP_WRITE, 2048, 0, BlkBack.MaxIndirectSegments);
            for (var i = 0; i < 2 * Warm / 10; i++)
            {
                f.Call(i % 2 == 0 ? read : write).status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            }

            var before = GC.GetTotalAllocatedBytes(precise: true);
            var failed = 0;
            for (var i = 0; i < Requests; i++)
            {
                failed += f.Call(i % 2 == 0 ? read : write).status == Blkif.BLKIF_RSP_OKAY ? 0 : 1;
            }

            perRequest = (GC.GetTotalAllocatedBytes(precise: true) - before) / Requests;
            failed.Should().Be(0);
        });

        disk.Stats.IndirectRequests.Should().Be(2 * Warm / 10 + Requests);
        disk.Stats.PersistentGrantsReused.Should().Be(persistent ? (2 * Warm / 10 + Requests - 1) * (BlkBack.MaxIndirectSegments + 1) : 0,
            "with persistent grants every request after the first reuses the 256 grants and the indirect page (read and write share them)");
        perRequest.Should().BeLessThanOrEqualTo(BoundPerIndirectRequest,
            $"a 1 MiB indirect request ({(persistent ? "persistent grants" : "grant copy")}) allocates nothing: not in blkback, the event channels or the frontend");
        d.Destroy();
    }
}
