using System.Security.Cryptography;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Guest.Block;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>Guests on the stub's blkfront, the host's blkback and real files, end to end.</summary>
public sealed class BlockEndToEndTests : IDisposable
{
    private static readonly TimeSpan Timeout = GuestRunner.Timeout;
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });
    private readonly string dir = Directory.CreateTempSubdirectory("paravirt-blk-e2e-").FullName;

    public void Dispose()
    {
        hv.Dispose();
        Directory.Delete(dir, recursive: true);
    }

    private string NewFile(long bytes)
    {
        var path = Path.Combine(dir, $"{Guid.NewGuid():N}.img");
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    /// <summary>A guest program whose exceptions escape Run, so the domain crashes.</summary>
    private sealed class CrashingKernel(Action<GuestRuntime> body) : GuestKernel
    {
        protected override void Run(GuestRuntime runtime) => body(runtime);
    }

    [Fact]
    public async Task A_Guest_Writes_64_MiB_Through_Blkfront_To_A_File_Reads_It_Back_And_The_Host_Sees_The_Same_Bytes()
    {
        const int Total = 64 << 20;
        const int Chunk = 1 << 20;
        const ulong Seed = 0x5EED;
        var path = NewFile(Total);
        var d = hv.CreateDomain(BlockKernel.Config("e2e64"));
        var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(path, writable: true));
        var mismatch = -1L;
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            fe.SectorCount.Should().Be(Total / 512);
            var buffer = new byte[Chunk];
            for (long off = 0; off < Total; off += Chunk)
            {
                BlockPattern.Fill(buffer, off, Seed);
                fe.Write(off / 512, buffer);
            }

            fe.Flush();
            var expected = new byte[Chunk];
            for (long off = 0; off < Total && mismatch < 0; off += Chunk)
            {
                fe.Read(off / 512, buffer);
                BlockPattern.Fill(expected, off, Seed);
                var i = buffer.AsSpan().CommonPrefixLength(expected);
                if (i != Chunk)
                {
                    mismatch = off + i;
                }
            }
        });

        mismatch.Should().Be(-1, "the guest reads back what it wrote");
        disk.Stats.BytesWritten.Should().Be(Total);
        disk.Stats.BytesRead.Should().Be(Total);
        d.Destroy();
        await disk.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);

        // The host's own check: the file's bytes against the same generator, both hashed here.
        using var expectedHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var block = new byte[Chunk];
        for (long off = 0; off < Total; off += Chunk)
        {
            BlockPattern.Fill(block, off, Seed);
            expectedHash.AppendData(block);
        }

        await using var file = File.OpenRead(path);
        file.Length.Should().Be(Total);
        var actual = await SHA256.HashDataAsync(file, TestContext.Current.CancellationToken);
        actual.Should().Equal(expectedHash.GetHashAndReset(), "the file holds exactly the pattern the guest wrote");
    }

    [Fact]
    public async Task A_Guest_Crashing_With_32_Requests_In_Flight_Crashes_Alone_And_Another_Guests_IO_Completes()
    {
        var dev = new GatedBlockDevice(BlockDevice.InMemory(4096));
        dev.CloseGate();
        var a = hv.CreateDomain(BlockKernel.Config("e2e-crash"));
        var diskA = a.AttachDisk("xvda", dev);
        a.Start(new CrashingKernel(rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            var go = false;
            XenGuest.Check(rt.XenBus.Watch("data/crash", _ => go |= rt.XenBus.Read("data/crash", out _) >= 0, out _), "watch data/crash");
            var ops = new BlockOperation[BlockFrontend.MaxInFlight];
            for (var i = 0; i < ops.Length; i++)
            {
                ops[i] = fe.SubmitRead(i * 8, new byte[4096]);
            }

            rt.WaitFor(() => go);
            throw new InvalidOperationException($"guest A gives up with {fe.InFlight} requests in flight");
        }));

        await dev.WaitForInFlightAsync(BlockFrontend.MaxInFlight);
        hv.XenStore.Write($"/local/domain/{a.Id}/data/crash", "now");
        var exitA = await a.ExitWithinAsync();
        exitA.State.Should().Be(DomainState.Crashed);
        exitA.Reason.Should().Contain("guest A gives up with 32 requests in flight");
        dev.InFlight.Should().Be(BlockFrontend.MaxInFlight, "A's requests are still held in its disk");

        // Meanwhile another guest uses its own disk, start to finish.
        var bytesB = new byte[2048 * 512];
        var b = hv.CreateDomain(BlockKernel.Config("e2e-other"));
        var diskB = b.AttachDisk("xvda", BlockDevice.InMemory(bytesB));
        byte[] backB = new byte[1 << 20];
        await BlockKernel.RunAsync(b, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            fe.Write(0, BlockPattern.Make(1 << 20, 0, 7));
            fe.Read(0, backB);
        });
        b.State.Should().Be(DomainState.Shutdown);
        backB.Should().Equal(BlockPattern.Make(1 << 20, 0, 7));
        bytesB.AsSpan(0, 1 << 20).ToArray().Should().Equal(backB);
        diskB.Stats.Errors.Should().Be(0);

        dev.OpenGate();
        await diskA.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(Timeout, TestContext.Current.CancellationToken);
        await diskB.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(Timeout, TestContext.Current.CancellationToken);
        dev.Completed.Should().HaveCount(BlockFrontend.MaxInFlight, "in-flight requests finish before A's ring goes");
        hv.HostGrants.MappingCount.Should().Be(0);
        a.Destroy();
        b.Destroy();
        await diskA.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);
        await diskB.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);
        hv.FreeFrames.Should().Be(hv.TotalFrames, "no frame of either domain leaked");
    }

    [Fact]
    public async Task A_Frontend_That_Restarts_Its_Handshake_Reconnects_And_Its_Data_Survives()
    {
        const int Bytes = 4 << 20;
        var path = NewFile(8 << 20);
        var d = hv.CreateDomain(BlockKernel.Config("e2e-reconnect"));
        var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(path, writable: true));
        byte[] back = new byte[Bytes];
        XenbusState beforeReconnect = default;
        await BlockKernel.RunAsync(d, rt =>
        {
            var fe = BlockFrontend.Connect(rt);
            fe.Write(2048, BlockPattern.Make(Bytes, 2048 * 512, 9));
            fe.Close();
            beforeReconnect = fe.Device.BackendState;
            fe.Reconnect();
            fe.Read(2048, back);
            fe.Write(0, BlockPattern.Make(4096, 0, 10)); // and the new ring writes too
            fe.Close();
        });

        beforeReconnect.Should().Be(XenbusState.Closed);
        back.Should().Equal(BlockPattern.Make(Bytes, 2048 * 512, 9));
        disk.Stats.Connects.Should().Be(2);
        d.Destroy();
        await disk.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);
        var file = await File.ReadAllBytesAsync(path, TestContext.Current.CancellationToken);
        file.AsSpan(2048 * 512, Bytes).SequenceEqual(BlockPattern.Make(Bytes, 2048 * 512, 9)).Should().BeTrue();
        file.AsSpan(0, 4096).SequenceEqual(BlockPattern.Make(4096, 0, 10)).Should().BeTrue();
    }
}
