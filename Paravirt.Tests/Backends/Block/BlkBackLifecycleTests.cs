using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>blkback's connections come and go: a frontend reconnecting, a domain crashing with requests in flight, dying, a disk detached under it.</summary>
public sealed class BlkBackLifecycleTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    private static readonly TimeSpan Timeout = GuestRunner.Timeout;

    [Fact]
    public async Task A_Frontend_That_Closes_And_Handshakes_Again_Finds_Its_Data()
    {
        var bytes = new byte[1 << 20];
        var d = hv.CreateDomain(BlockGuest.Config("again"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        using var closed = new SemaphoreSlim(0);
        using var checkedHost = new SemaphoreSlim(0);
        var data = new byte[4096];
        new Random(9).NextBytes(data);
        byte[]? readBack = null;
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            f.WritePages(200, 0, data).Should().Be(Blkif.BLKIF_RSP_OKAY);
            f.Close();
            closed.Release();
            checkedHost.Wait(Timeout).Should().BeTrue();
            f.Reconnect().Should().BeTrue();
            short r;
            (r, readBack) = f.ReadPages(200, 1, 1);
            r.Should().Be(Blkif.BLKIF_RSP_OKAY);
        });

        (await closed.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        await disk.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(Timeout, TestContext.Current.CancellationToken);
        disk.IsConnected.Should().BeFalse();
        disk.State.Should().Be(XenbusState.Closed);
        hv.HostGrants.MappingCount.Should().Be(0, "the closed ring is unmapped");
        checkedHost.Release();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();

        readBack.Should().Equal(data);
        disk.Stats.Connects.Should().Be(2);
        bytes.AsSpan(200 * 512, 4096).ToArray().Should().Equal(data);
        d.Destroy();
    }

    [Fact]
    public async Task A_Domain_Crashing_With_Requests_In_Flight_Gets_Them_Finished_Then_Everything_Released()
    {
        var before = hv.FreeFrames;
        var dev = new GatedBlockDevice(BlockDevice.InMemory(2048));
        dev.CloseGate();
        var d = hv.CreateDomain(BlockGuest.Config("crash"));
        var disk = d.AttachDisk("xvda", dev);
        _ = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var i = 0; i < 5; i++)
            {
                f.GrantPage(i);
                f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_READ, (ulong)(i * 8), i, 1));
            }

            f.Push();
            f.WaitResponses(5); // never returns: the domain crashes first
        });

        await dev.WaitForInFlightAsync(5);
        d.Crash("the test crashes it with five reads in the disk");
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Crashed);
        hv.HostGrants.MappingCount.Should().Be(1, "the ring stays mapped while its requests are in the disk");
        dev.OpenGate();
        await disk.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(Timeout, TestContext.Current.CancellationToken);

        dev.Completed.Should().HaveCount(5, "in-flight requests finish before the ring goes");
        hv.HostGrants.MappingCount.Should().Be(0);
        disk.IsConnected.Should().BeFalse();
        disk.Stats.Disconnects.Should().Be(1);
        d.Destroy();
        await disk.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);
        dev.Disposed.Should().BeTrue("the disk owned its device");
        hv.XenStore.Read(disk.BackendPath + "/state").Should().BeNull("the backend directory went with the domain");
        hv.FreeFrames.Should().Be(before, "every frame of the domain came back");
    }

    [Fact]
    public async Task Destroying_A_Connected_Domain_Detaches_The_Disk()
    {
        var before = hv.FreeFrames;
        var dev = new GatedBlockDevice(BlockDevice.InMemory(64));
        var d = hv.CreateDomain(BlockGuest.Config("destroy"));
        var disk = d.AttachDisk("xvda", dev, new BlkBackOptions { LeaveOpen = true });
        using var connected = new SemaphoreSlim(0);
        _ = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            connected.Release();
            f.WaitResponses(1); // blocks in SCHEDOP_poll until the domain goes
        });

        (await connected.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        disk.IsConnected.Should().BeTrue();
        hv.HostGrants.MappingCount.Should().Be(1);
        d.Destroy();
        await disk.Detached.WaitAsync(Timeout, TestContext.Current.CancellationToken);

        disk.IsConnected.Should().BeFalse();
        hv.HostGrants.MappingCount.Should().Be(0);
        dev.Disposed.Should().BeFalse("LeaveOpen");
        hv.XenStore.Read(disk.BackendPath + "/state").Should().BeNull();
        hv.FreeFrames.Should().Be(before);
    }

    [Fact]
    public async Task Detaching_A_Connected_Disk_Unmaps_Its_Ring_And_Removes_Both_Directories()
    {
        var d = hv.CreateDomain(BlockGuest.Config("detach"));
        var disk = d.AttachDisk("xvdc", BlockDevice.InMemory(64));
        using var connected = new SemaphoreSlim(0);
        using var detached = new SemaphoreSlim(0);
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect().Should().BeTrue();
            connected.Release();
            detached.Wait(Timeout).Should().BeTrue();
            f.Read(f.FrontendPath + "/state").Should().BeNull("the toolstack removed the device");
        }, devid: 51744);

        (await connected.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        await disk.DisposeAsync();
        hv.HostGrants.MappingCount.Should().Be(0);
        hv.XenStore.Read(disk.FrontendPath + "/state").Should().BeNull();
        hv.XenStore.Read(disk.BackendPath + "/state").Should().BeNull();
        disk.Stats.Disconnects.Should().Be(1);
        detached.Release();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();
        d.Destroy();
    }
}
