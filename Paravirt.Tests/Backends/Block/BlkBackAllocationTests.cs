using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Guest.Block;

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
/// background work.
/// </summary>
[Collection(nameof(ProcessAllocationCollection))]
public sealed class BlkBackAllocationTests : IDisposable
{
    private const int Warm = 500;
    private const int Measured = 4_000;
    private const long BoundPerRead = 8;

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
}
