using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 5: the grant-table client against the host's grant mapping.</summary>
public sealed class GuestGrantTests : IDisposable
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(20);
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_Granted_Page_Is_Mapped_By_The_Host_And_Access_Cannot_End_While_Mapped(int version)
    {
        using var granted = new SemaphoreSlim(0);
        using var mapped = new SemaphoreSlim(0);
        using var triedWhileMapped = new SemaphoreSlim(0);
        using var unmapped = new SemaphoreSlim(0);
        uint gref = 0;
        long endWhileMapped = 0, endAfter = -1;
        bool inUseWhileMapped = false, inUseAfter = true;
        byte hostWrote = 0;
        var d = StubRunner.Create(hv);
        var run = StubRunner.StartAsync(d, g =>
        {
            var gt = GrantTableClient.Setup(g, version);
            gt.Version.Should().Be(version);
            var page = g.Pages.Allocate();
            g.Memory.Write(page.Address, "granted bytes"u8);
            gt.GrantAccess(0, page, readOnly: false, out gref).Should().Be(0);
            granted.Release();
            mapped.Wait(Step).Should().BeTrue();
            inUseWhileMapped = gt.IsInUse(gref);
            endWhileMapped = gt.EndAccess(gref);
            hostWrote = g.Memory.Read<byte>(page.Address + 100);
            triedWhileMapped.Release();
            unmapped.Wait(Step).Should().BeTrue();
            endAfter = gt.EndAccess(gref);
            inUseAfter = gt.IsInUse(gref);
        });

        (await granted.WaitAsync(Step, TestContext.Current.CancellationToken)).Should().BeTrue();
        using (var mapping = hv.HostGrants.Map(d, gref, readOnly: false))
        {
            mapping.Bytes[..13].ToArray().Should().Equal("granted bytes"u8.ToArray());
            mapping.WritableBytes[100] = 0x5A;
            mapped.Release();
            (await triedWhileMapped.WaitAsync(Step, TestContext.Current.CancellationToken)).Should().BeTrue();
        }

        unmapped.Release();
        await run;
        inUseWhileMapped.Should().BeTrue();
        endWhileMapped.Should().Be(-(long)Errno.EBUSY);
        hostWrote.Should().Be(0x5A, "the host wrote through its mapping of the guest's page");
        endAfter.Should().Be(0);
        inUseAfter.Should().BeFalse();
    }

    [Fact]
    public async Task A_Read_Only_Grant_Cannot_Be_Mapped_Writable_And_Ended_Access_Cannot_Be_Mapped_At_All()
    {
        using var granted = new SemaphoreSlim(0);
        using var checkedHost = new SemaphoreSlim(0);
        using var ended = new SemaphoreSlim(0);
        using var done = new SemaphoreSlim(0);
        uint roRef = 0, endedRef = 0;
        var d = StubRunner.Create(hv);
        var run = StubRunner.StartAsync(d, g =>
        {
            var gt = GrantTableClient.Setup(g);
            var free = gt.FreeCount;
            gt.GrantAccess(0, g.Pages.Allocate(), readOnly: true, out roRef).Should().Be(0);
            gt.GrantAccess(0, g.Pages.Allocate(), readOnly: false, out endedRef).Should().Be(0);
            gt.EndAccess(endedRef).Should().Be(0);
            gt.EndAccess(endedRef).Should().Be(-(long)Errno.EINVAL, "a reference already ended is not ours to end again");
            gt.FreeCount.Should().Be(free - 1);
            granted.Release();
            done.Wait(Step).Should().BeTrue();
        });

        (await granted.WaitAsync(Step, TestContext.Current.CancellationToken)).Should().BeTrue();
        var writable = Record.Exception(() => hv.HostGrants.Map(d, roRef, readOnly: false).Dispose());
        using (var ro = hv.HostGrants.Map(d, roRef, readOnly: true))
        {
            ro.IsMapped.Should().BeTrue();
        }

        var afterEnd = Record.Exception(() => hv.HostGrants.Map(d, endedRef, readOnly: true).Dispose());
        done.Release();
        await run;
        writable.Should().BeOfType<GrantException>();
        afterEnd.Should().BeOfType<GrantException>();
    }

    [Fact]
    public async Task Running_Out_Of_References_Is_ENOSPC_And_Query_Reports_The_Frames()
    {
        long lastRc = 0;
        var granted = 0;
        uint frames = 0, max = 0;
        await StubRunner.RunAsync(hv, g =>
        {
            var gt = GrantTableClient.Setup(g);
            var page = g.Pages.Allocate();
            while ((lastRc = gt.GrantAccess(0, page, true, out _)) == 0)
            {
                granted++;
            }

            gt.Query(out frames, out max).Should().Be(0);
        });

        granted.Should().Be(512 - 8, "one v1 frame holds 512 entries, the first 8 reserved");
        lastRc.Should().Be(-(long)Errno.ENOSPC);
        frames.Should().Be(1);
        max.Should().Be(64);
    }

    [Fact]
    public async Task A_Classic_Pv_Guest_Gets_Machine_Frames_It_Cannot_Map_And_Is_Told_So()
    {
        Exception? error = null;
        ulong frame = 0;
        bool frameIsOurs = true;
        short status = -1;
        await StubRunner.RunAsync(hv, g =>
        {
            Span<ulong> frames = stackalloc ulong[1];
            g.Hypercalls.GnttabSetupTable(frames, out status).Should().Be(0);
            frame = frames[0];
            frameIsOurs = g.Pages.PfnOf(frame) is not null;
            error = Record.Exception(() => GrantTableClient.Setup(g));
        }, classicPv: true);

        status.Should().Be(GrantTable.GNTST_okay);
        frame.Should().BeLessThan((ulong)hv.TotalFrames, "an MFN");
        frameIsOurs.Should().BeFalse("grant frames are the hypervisor's, not in the guest's P→M list");
        error.Should().BeOfType<InvalidOperationException>().Which.Message.Should().Contain("unpaged");
    }
}
