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

    private static byte[] Pattern(int bytes, int seed)
    {
        var b = new byte[bytes];
        new Random(seed).NextBytes(b);
        return b;
    }

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
        B("feature-persistent").Should().BeNull();
        B("feature-max-indirect-segments").Should().BeNull();
        B("multi-queue-max-queues").Should().BeNull();
        B("state").Should().Be("2", "InitWait: waiting for the frontend");
        FluentActions.Invoking(() => d.AttachDisk("xvda", BlockDevice.InMemory(8))).Should().Throw<InvalidOperationException>().WithMessage("*already has a vbd 51712*");
        d.Destroy();
    }

    [Fact]
    public async Task Read_And_Write_Round_Trip_Against_The_Backing_Bytes()
    {
        var bytes = Pattern(1 << 20, 1);
        var original = (byte[])bytes.Clone();
        var written = Pattern(3 * 4096, 2);
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
}
