using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest.Block;

/// <summary>blkfront on the guest stub against the host's blkback over in-memory disks.</summary>
public sealed class BlockFrontendTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Connect_Runs_The_Handshake_And_Reads_The_Disk_Geometry_And_Features()
    {
        var d = hv.CreateDomain(BlockKernel.Config("hs"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(4096));
        long sectors = 0;
        int sectorSize = 0;
        bool readOnly = true, flush = false, discard = false, connected = false;
        XenbusState own = default, back = default;
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt, new BlockFrontendOptions { HandshakeTimeout = TimeSpan.FromSeconds(20) });
            (sectors, sectorSize, readOnly, flush, discard, connected) = (fe.SectorCount, fe.SectorSize, fe.ReadOnly, fe.SupportsFlush, fe.SupportsDiscard, fe.IsConnected);
            own = fe.Device.OwnState;
            back = fe.Device.BackendState;
        });

        sectors.Should().Be(4096);
        sectorSize.Should().Be(512);
        readOnly.Should().BeFalse();
        flush.Should().BeTrue();
        discard.Should().BeTrue();
        connected.Should().BeTrue();
        own.Should().Be(XenbusState.Connected);
        back.Should().Be(XenbusState.Connected);
        hv.XenStore.Read(disk.FrontendPath + "/protocol").Should().Be("x86_64-abi");
        hv.XenStore.Read(disk.FrontendPath + "/ring-ref").Should().NotBeNull();
        hv.XenStore.Read(disk.FrontendPath + "/event-channel").Should().NotBeNull();
        disk.Stats.Connects.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task Data_Written_Reads_Back_And_Is_On_The_Hosts_Disk()
    {
        var bytes = new byte[8192 * 512];
        var d = hv.CreateDomain(BlockKernel.Config("rt"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        // One sector, exactly one 11-page request, and 100 sectors that split into a partial last page.
        (long Sector, int Length)[] cases = [(3, 512), (100, 11 * 4096), (1000, 100 * 512), (5000, 300 * 1024)];
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            foreach (var (sector, length) in cases)
            {
                fe.Write(sector, BlockPattern.Make(length, sector * 512, 1));
            }

            foreach (var (sector, length) in cases)
            {
                var back = new byte[length];
                fe.Read(sector, back);
                back.Should().Equal(BlockPattern.Make(length, sector * 512, 1), $"the {length} bytes at sector {sector} read back");
            }
        });

        foreach (var (sector, length) in cases)
        {
            bytes.AsSpan((int)sector * 512, length).ToArray().Should().Equal(BlockPattern.Make(length, sector * 512, 1));
        }

        disk.Stats.Errors.Should().Be(0);
        d.Destroy();
    }

    [Fact]
    public async Task A_Full_Ring_Is_In_Flight_At_Once_And_Callers_Wait_For_Free_Slots()
    {
        var dev = new GatedBlockDevice(BlockDevice.InMemory(4096));
        dev.CloseGate();
        var d = hv.CreateDomain(BlockKernel.Config("many"));
        await using var disk = d.AttachDisk("xvda", dev);
        const int Ops = 80; // more than a ring: submission waits for slots
        var run = BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            var ops = new BlockOperation[Ops];
            for (var i = 0; i < Ops; i++)
            {
                ops[i] = fe.SubmitWrite(i * 8, BlockPattern.Make(4096, i * 4096L, 2));
            }

            fe.WaitAll(ops);
            var buffers = new byte[Ops][];
            for (var i = 0; i < Ops; i++)
            {
                buffers[i] = new byte[4096];
                ops[i] = fe.SubmitRead(i * 8, buffers[i], ops[i]);
            }

            fe.WaitAll(ops);
            for (var i = 0; i < Ops; i++)
            {
                buffers[i].Should().Equal(BlockPattern.Make(4096, i * 4096L, 2), $"request {i}");
            }

            fe.InFlight.Should().Be(0);
        });

        try
        {
            await dev.WaitForInFlightAsync(BlockFrontend.MaxInFlight);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"in flight {dev.InFlight}, started {dev.Started.Count}, completed {dev.Completed.Count}, domain {d.State}, stats {disk.Stats}");
        }
        dev.InFlight.Should().Be(BlockFrontend.MaxInFlight, "a ring's worth, no more, is in the disk while it holds them");
        dev.OpenGate();
        await run;
        dev.MaxInFlight.Should().Be(BlockFrontend.MaxInFlight);
        dev.Completed.Should().HaveCount(2 * Ops);
        d.Destroy();
    }

    [Fact]
    public async Task Flush_Sends_A_Flush_To_The_Disk()
    {
        var dev = new GatedBlockDevice(BlockDevice.InMemory(64));
        var d = hv.CreateDomain(BlockKernel.Config("flush"));
        await using var disk = d.AttachDisk("xvda", dev);
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            fe.SupportsFlush.Should().BeTrue();
            fe.Write(0, new byte[512]);
            fe.Flush();
        });

        dev.Completed.Should().Equal("write 0+1", "flush");
        d.Destroy();
    }

    [Fact]
    public async Task Discard_Zeroes_Exactly_The_Range_Asked()
    {
        var bytes = new byte[256 * 512];
        var dev = new GatedBlockDevice(BlockDevice.InMemory(bytes));
        var d = hv.CreateDomain(BlockKernel.Config("discard"));
        await using var disk = d.AttachDisk("xvda", dev);
        byte[] back = [];
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            fe.SupportsDiscard.Should().BeTrue();
            fe.Write(0, BlockPattern.Make(64 * 512, 0, 3));
            fe.Discard(8, 16);
            back = new byte[64 * 512];
            fe.Read(0, back);
        });

        dev.Completed.Should().Contain("discard 8+16");
        var expected = BlockPattern.Make(64 * 512, 0, 3);
        expected.AsSpan(8 * 512, 16 * 512).Clear();
        back.Should().Equal(expected);
        bytes.AsSpan(0, 64 * 512).ToArray().Should().Equal(expected);
        d.Destroy();
    }

    [Fact]
    public async Task A_Read_Only_Disk_Reads_But_Refuses_Writes_With_BLKIF_RSP_ERROR()
    {
        var bytes = BlockPattern.Make(128 * 512, 0, 4);
        var d = hv.CreateDomain(BlockKernel.Config("ro"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes, readOnly: true));
        BlockIOException? refused = null;
        Exception? discard = null;
        byte[] back = new byte[8192];
        bool readOnly = false;
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            readOnly = fe.ReadOnly;
            fe.Read(16, back);
            try
            {
                fe.Write(16, new byte[4096]);
            }
            catch (BlockIOException e)
            {
                refused = e;
            }

            discard = Record.Exception(() => fe.Discard(0, 8));
            fe.Read(0, new byte[512]); // the ring still works after the refusal
        });

        readOnly.Should().BeTrue();
        back.Should().Equal(bytes.AsSpan(16 * 512, 8192).ToArray());
        refused.Should().NotBeNull();
        refused!.Status.Should().Be((short)Blkif.BLKIF_RSP_ERROR);
        refused.Operation.Should().Be(Blkif.BLKIF_OP_WRITE);
        refused.Message.Should().Contain("BLKIF_RSP_ERROR").And.Contain("sector 16");
        discard.Should().BeOfType<NotSupportedException>("a read-only disk does not offer feature-discard");
        bytes.Should().Equal(BlockPattern.Make(128 * 512, 0, 4), "the disk is untouched");
        d.Destroy();
    }

    [Fact]
    public async Task After_Closing_The_Frontend_Reconnects_With_A_New_Ring_And_The_Data_Is_Intact()
    {
        var d = hv.CreateDomain(BlockKernel.Config("reconnect"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(1024));
        uint firstPort = 0, secondPort = 0;
        XenbusState afterClose = default, backendAfterClose = default;
        bool connectedAfterClose = true;
        int freeGrantsBefore = 0, freeGrantsAfterClose = 0;
        byte[] back = new byte[64 * 1024];
        await BlockKernel.RunAsync(d, rt =>
        {
            freeGrantsBefore = rt.Grants!.FreeCount;
            var fe = BlockFrontend.Connect(rt);
            firstPort = fe.Port;
            fe.Write(40, BlockPattern.Make(64 * 1024, 40 * 512, 5));
            fe.Close();
            afterClose = fe.Device.OwnState;
            backendAfterClose = fe.Device.BackendState;
            connectedAfterClose = fe.IsConnected;
            freeGrantsAfterClose = rt.Grants.FreeCount;
            fe.Reconnect();
            secondPort = fe.Port;
            fe.Read(40, back);
        });

        afterClose.Should().Be(XenbusState.Closed);
        backendAfterClose.Should().Be(XenbusState.Closed);
        connectedAfterClose.Should().BeFalse();
        freeGrantsAfterClose.Should().Be(freeGrantsBefore, "closing ended every grant (ring and data pages)");
        secondPort.Should().NotBe(0);
        firstPort.Should().NotBe(0);
        back.Should().Equal(BlockPattern.Make(64 * 1024, 40 * 512, 5));
        disk.Stats.Connects.Should().Be(2);
        d.Destroy();
    }
}
