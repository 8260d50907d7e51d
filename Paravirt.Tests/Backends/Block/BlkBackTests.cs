using System.Globalization;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>blkback against a raw frontend in a managed guest: the handshake, data both ways, flush, discard, barrier, metering.</summary>
public sealed class BlkBackTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Attach_Writes_The_Nodes_Libxl_And_Blkback_Write()
    {
        var d = hv.CreateDomain(BlockGuest.Config("nodes"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(2048));
        var xs = hv.XenStore;
        var fe = d.Id.ToString(CultureInfo.InvariantCulture);

        disk.DevId.Should().Be(51712u);
        disk.FrontendPath.Should().Be($"/local/domain/{fe}/device/vbd/51712");
        disk.BackendPath.Should().Be($"/local/domain/0/backend/vbd/{fe}/51712");
        xs.Read(disk.FrontendPath + "/virtual-device").Should().Be("51712");
        xs.Read(disk.FrontendPath + "/device-type").Should().Be("disk");
        xs.GetPerms(disk.FrontendPath + "/virtual-device").Should().Equal("n" + fe, "r0");
        string? B(string key) => xs.Read($"{disk.BackendPath}/{key}");
        B("mode").Should().Be("w");
        B("dev").Should().Be("xvda");
        B("device-type").Should().Be("disk");
        B("sectors").Should().Be("2048");
        B("sector-size").Should().Be("512");
        B("physical-sector-size").Should().Be("512");
        B("info").Should().Be("0");
        B("feature-flush-cache").Should().Be("1");
        B("feature-barrier").Should().Be("1");
        B("feature-discard").Should().Be("1");
        B("discard-granularity").Should().Be("512");
        B("discard-alignment").Should().Be("0");
        B("discard-secure").Should().Be("0");
        B("max-ring-page-order").Should().BeNull("only one-page rings are offered");
        B("feature-persistent").Should().Be("1", "Linux's blkback offers persistent grants by default");
        B("feature-max-indirect-segments").Should().Be("256", "Linux's blkback's MAX_INDIRECT_SEGMENTS");
        B("multi-queue-max-queues").Should().Be(Math.Clamp(Environment.ProcessorCount, 1, BlkBack.DefaultMaxQueuesLimit).ToString(CultureInfo.InvariantCulture), "one queue per host processor, as Linux's blkback");
        disk.MaxQueues.Should().Be(Math.Clamp(Environment.ProcessorCount, 1, BlkBack.DefaultMaxQueuesLimit));
        B("state").Should().Be("2", "InitWait: waiting for the frontend");
        FluentActions.Invoking(() => d.AttachDisk("xvda", BlockDevice.InMemory(8))).Should().Throw<InvalidOperationException>().WithMessage("*already has a vbd 51712*");
        d.Destroy();
    }

    [Fact]
    public async Task Read_And_Write_Round_Trip_Against_The_Backing_Bytes()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 1);
        var original = (byte[])bytes.Clone();
        var written = BlockGuest.Pattern(3 * 4096, 2);
        var d = hv.CreateDomain(BlockGuest.Config("rw"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        byte[]? readBack = null, readAfterWrite = null;
        short readStatus = 1, writeStatus = 1, reread = 1;
        ulong sectors = 0;

        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            sectors = f.Sectors;
            (readStatus, readBack) = f.ReadPages(sector: 40, firstPage: 0, pages: 11);
            writeStatus = f.WritePages(sector: 1000, firstPage: 11, written);
            (reread, readAfterWrite) = f.ReadPages(sector: 1000, firstPage: 20, pages: 3);
        });

        sectors.Should().Be(2048);
        readStatus.Should().Be(Blkif.BLKIF_RSP_OKAY);
        readBack.Should().Equal(original.AsSpan(40 * 512, 11 * 4096).ToArray(), "the guest read what the host's array holds");
        writeStatus.Should().Be(Blkif.BLKIF_RSP_OKAY);
        bytes.AsSpan(1000 * 512, written.Length).ToArray().Should().Equal(written, "the guest's write landed in the host's array");
        bytes.AsSpan(0, 1000 * 512).SequenceEqual(original.AsSpan(0, 1000 * 512)).Should().BeTrue("nothing before it changed");
        bytes.AsSpan((1000 * 512) + written.Length).SequenceEqual(original.AsSpan((1000 * 512) + written.Length)).Should().BeTrue("nothing after it changed");
        reread.Should().Be(Blkif.BLKIF_RSP_OKAY);
        readAfterWrite.Should().Equal(written);
        disk.Stats.Reads.Should().Be(2);
        disk.Stats.Writes.Should().Be(1);
        disk.Stats.BytesRead.Should().Be(14 * 4096);
        disk.Stats.BytesWritten.Should().Be(3 * 4096);
        d.Meter.BlockBytesRead.Should().Be(14 * 4096);
        d.Meter.BlockBytesWritten.Should().Be(3 * 4096);
        d.Destroy();
    }

    [Fact]
    public async Task A_Full_Ring_Of_Requests_Runs_Concurrently()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 3);
        var dev = new GatedBlockDevice(BlockDevice.InMemory(bytes));
        dev.CloseGate();
        var d = hv.CreateDomain(BlockGuest.Config("many"));
        await using var disk = d.AttachDisk("xvda", dev);
        List<blkif_response>? responses = null;
        var pages = new byte[32][];
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var i = 0; i < 32; i++)
            {
                f.GrantPage(i);
                f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_READ, (ulong)(i * 16), i, 1)); // ids 1..32
            }

            f.Push();
            responses = f.WaitResponses(32);
            for (var i = 0; i < 32; i++)
            {
                pages[i] = f.ReadPage(i);
            }
        });

        await dev.WaitForInFlightAsync(32); // every request of the ring is inside the device at once
        dev.InFlight.Should().Be(32);
        dev.OpenGate();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();

        responses!.Select(r => r.id).Should().BeEquivalentTo(Enumerable.Range(1, 32).Select(i => (ulong)i));
        responses.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_OKAY && r.operation == Blkif.BLKIF_OP_READ);
        for (var i = 0; i < 32; i++)
        {
            pages[i].Should().Equal(bytes.AsSpan(i * 16 * 512, 4096).ToArray(), $"page {i} holds sectors {i * 16}..{(i * 16) + 7}");
        }

        dev.MaxInFlight.Should().Be(32, "no more than a ring's worth is ever in flight");
        d.Destroy();
    }

    [Fact]
    public async Task Responses_Come_In_Completion_Order_Not_Request_Order()
    {
        var dev = new GatedBlockDevice(BlockDevice.InMemory(2048)) { Hold = (op, sector) => op == "read" && sector == 0 };
        dev.CloseGate();
        var d = hv.CreateDomain(BlockGuest.Config("order"));
        await using var disk = d.AttachDisk("xvda", dev);
        using var first = new SemaphoreSlim(0);
        ulong[]? before = null;
        ulong last = 0;
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var i = 0; i < 8; i++)
            {
                f.GrantPage(i);
                f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_READ, (ulong)(i * 8), i, 1));
            }

            f.Push();
            before = [.. f.WaitResponses(7).Select(r => r.id)];
            first.Release();
            last = f.WaitResponses(1)[0].id;
        });

        (await first.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue("seven reads do not wait for the held one");
        dev.OpenGate();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();
        before.Should().BeEquivalentTo(new ulong[] { 2, 3, 4, 5, 6, 7, 8 });
        last.Should().Be(1, "the first request, held in the device, is answered last");
        d.Destroy();
    }

    [Fact]
    public async Task Flush_Reaches_The_Device_And_A_Flush_With_Data_Writes_It()
    {
        var bytes = new byte[1 << 20];
        var mem = BlockDevice.InMemory(bytes);
        var d = hv.CreateDomain(BlockGuest.Config("flush"));
        await using var disk = d.AttachDisk("xvda", mem);
        short plain = 1, withData = 1;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.ReadBackend("feature-flush-cache").Should().Be("1");
            plain = f.Flush();
            f.FillPage(0, Enumerable.Repeat((byte)0x5C, 4096).ToArray());
            f.GrantPage(0, readOnly: true);
            var r = f.PageRequest((byte)Blkif.BLKIF_OP_FLUSH_DISKCACHE, 64, 0, 1);
            withData = f.Call(r).status;
        });

        plain.Should().Be(Blkif.BLKIF_RSP_OKAY);
        withData.Should().Be(Blkif.BLKIF_RSP_OKAY);
        mem.Flushes.Should().Be(3, "one plain flush; a flush with data flushes before and after its write");
        bytes.AsSpan(64 * 512, 4096).ToArray().Should().OnlyContain(b => b == 0x5C);
        disk.Stats.Flushes.Should().Be(2);
        disk.Stats.BytesWritten.Should().Be(4096);
        d.Destroy();
    }

    [Fact]
    public async Task Discard_Zeroes_The_Range_And_Nothing_Else()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 4);
        var original = (byte[])bytes.Clone();
        var d = hv.CreateDomain(BlockGuest.Config("discard"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        short ok = 1, past = 0, wrap = 0, empty = 1, secure = 1, large = 1;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.ReadBackend("feature-discard").Should().Be("1");
            ok = f.Discard(8, 16);
            past = f.Discard(2040, 9);
            wrap = f.Discard(8, ulong.MaxValue - 4);
            empty = f.Discard(100, 0);
            secure = f.Discard(2047, 1, Blkif.BLKIF_DISCARD_SECURE); // ignored: discard-secure is 0
            large = f.Discard(1000, 1000); // far more than any request's data (Linux discards whole extents)
        });

        ok.Should().Be(Blkif.BLKIF_RSP_OKAY);
        past.Should().Be(Blkif.BLKIF_RSP_ERROR, "sectors 2040..2048 run past the 2048-sector disk");
        wrap.Should().Be(Blkif.BLKIF_RSP_ERROR, "a count that wraps around is out of range");
        empty.Should().Be(Blkif.BLKIF_RSP_OKAY);
        secure.Should().Be(Blkif.BLKIF_RSP_OKAY);
        large.Should().Be(Blkif.BLKIF_RSP_OKAY);
        bytes.AsSpan(8 * 512, 16 * 512).ToArray().Should().OnlyContain(b => b == 0);
        bytes.AsSpan(1000 * 512, 1000 * 512).ToArray().Should().OnlyContain(b => b == 0);
        bytes.AsSpan(0, 8 * 512).SequenceEqual(original.AsSpan(0, 8 * 512)).Should().BeTrue();
        bytes.AsSpan(24 * 512, (1000 - 24) * 512).SequenceEqual(original.AsSpan(24 * 512, (1000 - 24) * 512)).Should().BeTrue();
        bytes.AsSpan(2000 * 512, 47 * 512).SequenceEqual(original.AsSpan(2000 * 512, 47 * 512)).Should().BeTrue();
        disk.Stats.Discards.Should().Be(4);
        disk.Stats.Errors.Should().Be(2);
        d.Destroy();
    }

    [Fact]
    public async Task A_Barrier_Waits_For_Earlier_Writes_And_Holds_Back_Later_Ones()
    {
        var dev = new GatedBlockDevice(BlockDevice.InMemory(2048)) { Hold = (op, sector) => op == "write" && sector == 0 };
        dev.CloseGate();
        var d = hv.CreateDomain(BlockGuest.Config("barrier"));
        await using var disk = d.AttachDisk("xvda", dev);
        List<blkif_response>? responses = null;
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.ReadBackend("feature-barrier").Should().Be("1");
            for (var i = 0; i < 3; i++)
            {
                f.GrantPage(i, readOnly: true);
            }

            f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE, 0, 0, 1)); // id 1, held in the device
            f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE_BARRIER, 8, 1, 1)); // id 2
            f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE, 16, 2, 1)); // id 3
            f.Push();
            responses = f.WaitResponses(3);
        });

        await dev.WaitForInFlightAsync(1);
        dev.OpenGate();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();
        responses!.Select(r => r.id).Should().Equal([1UL, 2UL, 3UL], "the barrier completes after the write before it, and the write after it waits");
        responses.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_OKAY);
        dev.Completed.Should().Equal("write 0+8", "flush", "write 8+8", "flush", "write 16+8");
        disk.Stats.Barriers.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task A_File_Backed_Disk_Reads_Writes_And_Flushes_The_File()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("pv-blk-").FullName, "disk.img");
        var original = BlockGuest.Pattern(256 * 1024, 5);
        await File.WriteAllBytesAsync(path, original, TestContext.Current.CancellationToken);
        var written = BlockGuest.Pattern(2 * 4096, 6);
        var d = hv.CreateDomain(BlockGuest.Config("file"));
        byte[]? read = null;
        short w = 1, fl = 1;
        await using (var disk = d.AttachDisk("xvdb", BlockDevice.OpenFile(path, writable: true)))
        {
            disk.DevId.Should().Be(51728u);
            hv.XenStore.Read(disk.BackendPath + "/params").Should().Be(path);
            hv.XenStore.Read(disk.BackendPath + "/type").Should().Be("file");
            await BlockGuest.RunAsync(d, f =>
            {
                f.Connect().Should().BeTrue();
                short r;
                (r, read) = f.ReadPages(16, 0, 4);
                r.Should().Be(Blkif.BLKIF_RSP_OKAY);
                w = f.WritePages(100, 4, written);
                fl = f.Flush();
            }, devid: 51728);
        }

        read.Should().Equal(original.AsSpan(16 * 512, 4 * 4096).ToArray());
        w.Should().Be(Blkif.BLKIF_RSP_OKAY);
        fl.Should().Be(Blkif.BLKIF_RSP_OKAY);
        var after = await File.ReadAllBytesAsync(path, TestContext.Current.CancellationToken);
        after.AsSpan(100 * 512, written.Length).ToArray().Should().Equal(written);
        after.Length.Should().Be(original.Length);
        d.Destroy();
        Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
    }

    [Fact]
    public async Task A_Read_Only_Disk_Refuses_Every_Write()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 7);
        var original = (byte[])bytes.Clone();
        var d = hv.CreateDomain(BlockGuest.Config("ro"));
        var device = new GatedBlockDevice(BlockDevice.InMemory(bytes, readOnly: true));
        await using var disk = d.AttachDisk("xvda", device);
        hv.XenStore.Read(disk.BackendPath + "/mode").Should().Be("r");
        hv.XenStore.Read(disk.BackendPath + "/info").Should().Be("4", "VDISK_READONLY");
        hv.XenStore.Read(disk.BackendPath + "/feature-discard").Should().Be("0");
        short write = 0, flushData = 0, barrierData = 0, discard = 0, read = 1, flush = 1;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            var data = new byte[4096];
            Array.Fill(data, (byte)0xEE);
            write = f.WritePages(0, 0, data);
            flushData = f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_FLUSH_DISKCACHE, 0, 0, 1)).status;
            barrierData = f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_WRITE_BARRIER, 0, 0, 1)).status;
            discard = f.Discard(0, 8);
            (read, _) = f.ReadPages(0, 1, 1);
            flush = f.Flush();
        });

        write.Should().Be(Blkif.BLKIF_RSP_ERROR);
        flushData.Should().Be(Blkif.BLKIF_RSP_ERROR, "a flush carrying data is a write");
        barrierData.Should().Be(Blkif.BLKIF_RSP_ERROR);
        discard.Should().Be(Blkif.BLKIF_RSP_EOPNOTSUPP, "discard is not offered on a read-only disk");
        read.Should().Be(Blkif.BLKIF_RSP_OKAY);
        flush.Should().Be(Blkif.BLKIF_RSP_OKAY);
        bytes.Should().Equal(original);
        device.Started.Should().Equal(["read 0", "flush 0"], "writes to a read-only disk are refused before they reach it");
        d.Meter.BlockBytesWritten.Should().Be(0);
        d.Destroy();
    }

    [Fact]
    public async Task A_Foreign_Protocol_Is_Refused_With_An_Error_Node_And_No_Protocol_Node_Means_Native()
    {
        var d = hv.CreateDomain(BlockGuest.Config("proto"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(64));
        bool connected = true;
        string? error = null;
        await BlockGuest.RunAsync(d, f =>
        {
            connected = f.Connect(protocol: Protocols.XEN_IO_PROTO_ABI_X86_32);
            error = f.ReadBackend("error");
        });

        connected.Should().BeFalse();
        error.Should().Contain("x86_32-abi").And.Contain("x86_64-abi");
        disk.Stats.Connects.Should().Be(0);
        hv.HostGrants.MappingCount.Should().Be(0);
        d.Destroy();

        var d2 = hv.CreateDomain(BlockGuest.Config("native"));
        await using var disk2 = d2.AttachDisk("xvda", BlockDevice.InMemory(64));
        short status = 1;
        await BlockGuest.RunAsync(d2, f =>
        {
            f.Connect(protocol: null).Should().BeTrue();
            (status, _) = f.ReadPages(0, 0, 1);
        });

        status.Should().Be(Blkif.BLKIF_RSP_OKAY);
        d2.Destroy();
    }

    [Fact]
    public async Task Large_Sectors_Need_The_Frontends_Feature_And_Then_Count_In_Sector_Size_Units()
    {
        var bytes = BlockGuest.Pattern(64 * 4096, 8);
        var d = hv.CreateDomain(BlockGuest.Config("4k"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes, sectorSize: 4096));
        hv.XenStore.Read(disk.BackendPath + "/sectors").Should().Be("64");
        hv.XenStore.Read(disk.BackendPath + "/sector-size").Should().Be("4096");
        bool withoutFeature = true;
        byte[]? read = null;
        short lastSect1 = 0;
        await BlockGuest.RunAsync(d, f =>
        {
            withoutFeature = f.Connect();
            f.SwitchState(XenbusState.Closed);
            f.WaitBackend(XenbusState.Closed);
            f.SwitchState(XenbusState.Initialising);
            f.Connect(beforeInitialised: x => x.WriteFrontend("feature-large-sector-size", "1")).Should().BeTrue();
            f.SectorSize.Should().Be(4096);
            short r;
            (r, read) = f.ReadPages(10, 0, 2);
            r.Should().Be(Blkif.BLKIF_RSP_OKAY);
            var bad = f.PageRequest((byte)Blkif.BLKIF_OP_READ, 0, 2, 1);
            bad.seg[0].last_sect = 1; // a 4096-byte page holds one 4096-byte sector
            lastSect1 = f.Call(bad).status;
        });

        withoutFeature.Should().BeFalse("io/blkif.h: sector-size must be 512 unless the frontend says feature-large-sector-size");
        read.Should().Equal(bytes.AsSpan(10 * 4096, 2 * 4096).ToArray());
        lastSect1.Should().Be(Blkif.BLKIF_RSP_ERROR);
        d.Destroy();
    }
}
