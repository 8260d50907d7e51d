using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Grants;

/// <summary>The host (domain 0) as a backend: it reaches guest data only through grants, mapped or copied.</summary>
public sealed class HostGrantTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    private static readonly TimeSpan Timeout = GuestRunner.Timeout;

    [Fact]
    public async Task Host_Maps_A_Guest_Grant_Reads_Its_Bytes_And_Its_Writes_Reach_The_Guest()
    {
        using var granted = new SemaphoreSlim(0);
        using var mapped = new SemaphoreSlim(0);
        using var checkedWhileMapped = new SemaphoreSlim(0);
        using var unmapped = new SemaphoreSlim(0);
        ushort flagsWhileMapped = 0, flagsAfter = 0;
        bool endWhileMapped = true, endAfter = false;
        byte seenByGuest = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "front", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            var gfn = GuestGrants.DataPage(g, 0, 0xAB);
            GuestGrants.GrantV1(g, table, 10, 0, gfn);
            granted.Release();
            mapped.Wait(Timeout);
            flagsWhileMapped = GuestGrants.FlagsV1(g, table, 10);
            endWhileMapped = GuestGrants.EndForeignAccessV1(g, table, 10);
            checkedWhileMapped.Release();
            unmapped.Wait(Timeout);
            flagsAfter = GuestGrants.FlagsV1(g, table, 10);
            seenByGuest = g.Cpu.Memory.Read<byte>((gfn << 12) + 100);
            endAfter = GuestGrants.EndForeignAccessV1(g, table, 10);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await granted.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        var mapping = _hv.HostGrants.Map(d, 10, readOnly: false);
        mapping.Bytes[..16].ToArray().Should().OnlyContain(b => b == 0xAB, "the host sees the guest's page");
        mapping.WritableBytes[100] = 0x5A;
        _hv.HostGrants.MappingCount.Should().Be(1);
        mapped.Release();
        (await checkedWhileMapped.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        mapping.Dispose();
        mapping.IsMapped.Should().BeFalse();
        FluentActions.Invoking(() => mapping.Bytes.Length).Should().Throw<ObjectDisposedException>();
        unmapped.Release();
        await d.ExitWithinAsync();
        d.Destroy();

        flagsWhileMapped.Should().Be((ushort)(GrantTable.GTF_permit_access | GrantTable.GTF_reading | GrantTable.GTF_writing));
        endWhileMapped.Should().BeFalse("gnttab_end_foreign_access fails while the grant is in use");
        flagsAfter.Should().Be((ushort)GrantTable.GTF_permit_access, "unmapping clears GTF_reading and GTF_writing");
        seenByGuest.Should().Be(0x5A, "the host's write lands in the guest's page");
        endAfter.Should().BeTrue();
        _hv.HostGrants.MappingCount.Should().Be(0);
    }

    /// <summary>Runs a guest that sets up grants with <paramref name="grant"/>, then waits for the host's go before shutting down.</summary>
    private async Task<(Domain Domain, SemaphoreSlim Done)> GuestWithGrants(string name, Action<GuestContext, ulong> grant)
    {
        var ready = new SemaphoreSlim(0);
        var done = new SemaphoreSlim(0);
        var d = _hv.CreateDomain(new DomainConfig { Name = name, MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            grant(g, GuestGrants.MapFrame(g));
            ready.Release();
            done.Wait(Timeout);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await ready.WaitAsync(Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();
        return (d, done);
    }

    private static async Task Finish(Domain d, SemaphoreSlim done)
    {
        done.Release();
        await d.ExitWithinAsync();
        d.Destroy();
        done.Dispose();
    }

    [Fact]
    public async Task A_Read_Only_Grant_Maps_Read_Only_And_Refuses_A_Writable_Map()
    {
        ushort flags = 0;
        var (d, done) = await GuestWithGrants("ro", (g, table) => GuestGrants.GrantV1(g, table, 9, 0, GuestGrants.DataPage(g, 0, 0x11), readOnly: true));
        FluentActions.Invoking(() => _hv.HostGrants.Map(d, 9, readOnly: false)).Should().Throw<GrantException>()
            .Which.Status.Should().Be(GrantStatus.GeneralError, "_set_status refuses to write-pin a GTF_readonly entry");
        using (var m = _hv.HostGrants.Map(d, 9, readOnly: true))
        {
            m.Bytes[0].Should().Be(0x11);
            FluentActions.Invoking(() => m.WritableBytes.Length).Should().Throw<InvalidOperationException>();
            flags = d.Grants.Version == 1 ? ReadFlags(d, 9) : (ushort)0;
        }

        flags.Should().Be((ushort)(GrantTable.GTF_permit_access | GrantTable.GTF_readonly | GrantTable.GTF_reading), "a read-only pin sets GTF_reading only");
        ReadFlags(d, 9).Should().Be((ushort)(GrantTable.GTF_permit_access | GrantTable.GTF_readonly));
        await Finish(d, done);
    }

    /// <summary>The v1 flags of a grant, read from the guest's grant frame 0 as the guest sees it.</summary>
    private static ushort ReadFlags(Domain d, uint gref)
    {
        var table = d.PhysMap.Entries().Single(e => e.Type == Core.Memory.P2mType.Shared && e.Gfn >= (ulong)d.PhysMap.DenseFrames + 16);
        d.Memory.TryReadVolatile((table.Gfn << 12) + (gref * 8UL), 2, out var v).Should().BeTrue();
        return (ushort)v;
    }

    [Fact]
    public async Task Wrong_Domid_Missing_Permit_And_Bad_Refs_Fail_With_Xens_Status()
    {
        var (d, done) = await GuestWithGrants("bad", (g, table) =>
        {
            var gfn = GuestGrants.DataPage(g, 0, 1);
            GuestGrants.GrantV1(g, table, 8, 7, gfn); // granted to domain 7, not 0
            g.Cpu.Memory.Write(table + (9 * 8) + 2, (ushort)0);
            g.Cpu.Memory.Write(table + (9 * 8) + 4, (uint)gfn); // never made live: flags 0
            GuestGrants.GrantV1(g, table, 11, 0, 0x7FFFFF); // a frame the guest does not have
        });

        Status(() => _hv.HostGrants.Map(d, 8, false)).Should().Be(GrantStatus.GeneralError, "_set_status: wrong domid is GNTST_general_error in Xen 4.17");
        Status(() => _hv.HostGrants.Map(d, 9, false)).Should().Be(GrantStatus.GeneralError, "no GTF_permit_access");
        Status(() => _hv.HostGrants.Map(d, 512, false)).Should().Be(GrantStatus.BadGntref, "one v1 frame holds refs 0..511");
        Status(() => _hv.HostGrants.Map(d, uint.MaxValue, false)).Should().Be(GrantStatus.BadGntref);
        Status(() => _hv.HostGrants.Map(d, 11, false)).Should().Be(GrantStatus.BadPage, "get_paged_frame finds no page there");
        ReadFlags(d, 11).Should().Be((ushort)GrantTable.GTF_permit_access, "a failed map leaves no status bits behind");
        _hv.HostGrants.CopyFrom(d, 8, 0, new byte[8]).Should().Be(GrantStatus.GeneralError);
        _hv.HostGrants.MappingCount.Should().Be(0);
        await Finish(d, done);
    }

    private static GrantStatus Status(Func<HostGrantMapping> map)
    {
        try
        {
            map().Dispose();
            return GrantStatus.Okay;
        }
        catch (GrantException e)
        {
            return e.Status;
        }
    }

    [Fact]
    public async Task Host_Copies_From_And_To_Grants_Within_The_Page_And_The_Grants_Permissions()
    {
        ulong rwPage = 0;
        var (d, done) = await GuestWithGrants("copy", (g, table) =>
        {
            GuestGrants.GrantV1(g, table, 20, 0, GuestGrants.DataPage(g, 0, 0x20), readOnly: true);
            rwPage = GuestGrants.DataPage(g, 1, 0x21);
            GuestGrants.GrantV1(g, table, 21, 0, rwPage);
        });

        var buffer = new byte[64];
        _hv.HostGrants.CopyFrom(d, 20, 4050, buffer).Should().Be(GrantStatus.BadCopyArg, "offset + length beyond the page");
        _hv.HostGrants.CopyFrom(d, 20, 100, buffer).Should().Be(GrantStatus.Okay);
        buffer.Should().OnlyContain(b => b == 0x20);
        _hv.HostGrants.CopyTo(d, 20, 0, buffer).Should().Be(GrantStatus.GeneralError, "a read-only grant is not a copy destination");
        _hv.HostGrants.CopyTo(d, 21, 8, new byte[] { 1, 2, 3 }).Should().Be(GrantStatus.Okay);
        d.Memory.TryRead((rwPage << 12) + 8, out uint written).Should().BeTrue();
        (written & 0xFFFFFF).Should().Be(0x030201u);
        ReadFlags(d, 21).Should().Be((ushort)GrantTable.GTF_permit_access, "a copy's pin is gone when it returns");

        // Backends copy per request: after the first call (JIT, tiering), a copy allocates nothing.
        Span<byte> page = stackalloc byte[64];
        _hv.HostGrants.CopyFrom(d, 21, 0, page).Should().Be(GrantStatus.Okay);
        _hv.HostGrants.CopyTo(d, 21, 0, page).Should().Be(GrantStatus.Okay);
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            _hv.HostGrants.CopyFrom(d, 21, 0, page);
            _hv.HostGrants.CopyTo(d, 21, 0, page);
        }

        (GC.GetAllocatedBytesForCurrentThread() - before).Should().Be(0, "CopyFrom and CopyTo allocate nothing per call");
        await Finish(d, done);
    }

    [Fact]
    public async Task Host_Copies_Between_Two_Guests_Grants()
    {
        ulong destPage = 0;
        var (a, doneA) = await GuestWithGrants("src", (g, table) => GuestGrants.GrantV1(g, table, 30, 0, GuestGrants.DataPage(g, 0, 0x77), readOnly: true));
        var (b, doneB) = await GuestWithGrants("dst", (g, table) =>
        {
            destPage = GuestGrants.DataPage(g, 0, 0);
            GuestGrants.GrantV1(g, table, 31, 0, destPage);
        });

        _hv.HostGrants.Copy(new GrantReference(a, 30, 10), new GrantReference(b, 31, 20), 100).Should().Be(GrantStatus.Okay);
        _hv.HostGrants.Copy(new GrantReference(a, 30, 0), new GrantReference(b, 31, 4090), 100).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(b, 31, 0), new GrantReference(a, 30, 0), 1).Should().Be(GrantStatus.GeneralError, "a's grant is read-only");
        var copied = new byte[102];
        b.Memory.TryRead((destPage << 12) + 19, copied).Should().BeTrue();
        copied[0].Should().Be(0);
        copied[1..101].Should().OnlyContain(x => x == 0x77);
        copied[101].Should().Be(0);
        await Finish(a, doneA);
        await Finish(b, doneB);
    }

    [Fact]
    public async Task A_Guest_Destroyed_While_Mapped_Keeps_Its_Page_Until_The_Host_Unmaps()
    {
        var before = _hv.FreeFrames;
        var (d, done) = await GuestWithGrants("dies", (g, table) => GuestGrants.GrantV1(g, table, 12, 0, GuestGrants.DataPage(g, 0, 0xC3)));
        var mapping = _hv.HostGrants.Map(d, 12, readOnly: false);
        await Finish(d, done);

        _hv.FreeFrames.Should().Be(before - 1, "every frame of the guest came back except the one the host still maps");
        mapping.Bytes[..32].ToArray().Should().OnlyContain(b => b == 0xC3, "the page was not reused");
        Status(() => _hv.HostGrants.Map(d, 12, false)).Should().Be(GrantStatus.BadDomain);
        _hv.HostGrants.CopyFrom(d, 12, 0, new byte[4]).Should().Be(GrantStatus.BadDomain);
        mapping.Dispose();
        _hv.FreeFrames.Should().Be(before);
        _hv.HostGrants.MappingCount.Should().Be(0);
    }
}
