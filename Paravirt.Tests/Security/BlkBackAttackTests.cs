using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// Hostile block frontends: every malformed request is answered (BLKIF_RSP_ERROR or
/// EOPNOTSUPP) without touching the disk, the host or another domain; a ring overrun crashes
/// only the domain that did it.
/// </summary>
public sealed class BlkBackAttackTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    /// <summary>Runs hostile requests against a writable in-memory disk of 2048 sectors; checks the disk is untouched and a good read still works after.</summary>
    /// Unless <paramref name="mayReachDisk"/>, no hostile request may even reach the device (validation refuses it first).
    private async Task<(List<blkif_response> Responses, BlkBack Disk)> Attack(Func<TestBlkFront, IEnumerable<blkif_request>> requests, bool mayReachDisk = false)
    {
        var bytes = BlockGuest.Pattern(1 << 20, 11);
        var original = (byte[])bytes.Clone();
        var d = hv.CreateDomain(BlockGuest.Config("hostile"));
        var device = new GatedBlockDevice(BlockDevice.InMemory(bytes));
        var disk = d.AttachDisk("xvda", device);
        var responses = new List<blkif_response>();
        byte[]? after = null;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect().Should().BeTrue();
            for (var i = 0; i < 11; i++)
            {
                f.FillPage(i, BlockGuest.Pattern(4096, 100 + i));
                f.GrantPage(i);
            }

            foreach (var r in requests(f))
            {
                responses.Add(f.Call(r));
            }

            short status;
            (status, after) = f.ReadPages(8, 20, 1);
            status.Should().Be(Blkif.BLKIF_RSP_OKAY, "the ring still serves good requests");
        });

        bytes.Should().Equal(original, "no hostile request changed the disk");
        if (!mayReachDisk)
        {
            device.Started.Should().Equal(["read 8"], "validation refused every hostile request before the disk; only the final good read reached it");
        }

        device.Started.Should().NotContain(op => op.StartsWith("write", StringComparison.Ordinal));
        after.Should().Equal(original.AsSpan(8 * 512, 4096).ToArray());
        d.Meter.BlockBytesWritten.Should().Be(0);
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
        return (responses, disk);
    }

    private static blkif_request Write(TestBlkFront f, ulong sector, int pages) => f.PageRequest((byte)Blkif.BLKIF_OP_WRITE, sector, 0, pages);

    private static blkif_request ReadReq(TestBlkFront f, ulong sector, int pages) => f.PageRequest((byte)Blkif.BLKIF_OP_READ, sector, 0, pages);

    [Fact]
    public async Task SectorRangePastTheEnd_IsAnError()
    {
        var (rsp, disk) = await Attack(f =>
        [
            Write(f, 2041, 1), // 2041..2048: one sector past the 2048-sector disk
            ReadReq(f, 2048, 1),
            Write(f, ulong.MaxValue - 3, 1), // wraps around
            Write(f, 1UL << 63, 11),
            ReadReq(f, ulong.MaxValue, 1),
        ]);

        rsp.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_ERROR);
        disk.Stats.Errors.Should().Be(5);
    }

    [Fact]
    public async Task SegmentCountAboveTheLimitOrZero_IsAnError()
    {
        var (rsp, _) = await Attack(f =>
        {
            var twelve = Write(f, 0, 11);
            twelve.nr_segments = 12;
            var max = ReadReq(f, 0, 11);
            max.nr_segments = 255;
            var none = Write(f, 0, 1);
            none.nr_segments = 0;
            var noneRead = ReadReq(f, 0, 1);
            noneRead.nr_segments = 0;
            return [twelve, max, none, noneRead];
        });

        rsp.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_ERROR);
    }

    [Fact]
    public async Task FirstSectorAfterLastSector_IsAnError()
    {
        var (rsp, _) = await Attack(f =>
        {
            var w = Write(f, 0, 2);
            w.seg[1].first_sect = 5;
            w.seg[1].last_sect = 4;
            var r = ReadReq(f, 0, 1);
            r.seg[0].first_sect = 7;
            r.seg[0].last_sect = 0;
            return [w, r];
        });

        rsp.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_ERROR);
    }

    [Fact]
    public async Task LastSectorPastThePage_IsAnError()
    {
        var (rsp, _) = await Attack(f =>
        {
            var w = Write(f, 0, 1);
            w.seg[0].last_sect = 8; // a 4096-byte page holds sectors 0..7
            var r = ReadReq(f, 0, 3);
            r.seg[2].last_sect = 8;
            var far = ReadReq(f, 0, 3);
            far.seg[2].first_sect = 255;
            far.seg[2].last_sect = 255;
            return [w, r, far];
        });

        rsp.Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_ERROR);
    }

    [Fact]
    public async Task GrantRefsTheFrontendDidNotGrant_AreAnError()
    {
        // Another domain grants ref 300 to domain 0; the attacker names ref 300 in its own table.
        using var ready = new SemaphoreSlim(0);
        using var done = new SemaphoreSlim(0);
        var victimPage = 0UL;
        var victim = hv.CreateDomain(new DomainConfig { Name = "victim", MemoryMiB = 4 });
        victim.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            victimPage = GuestGrants.DataPage(g, 0, 0xEE);
            GuestGrants.GrantV1(g, table, 300, 0, victimPage);
            ready.Release();
            done.Wait(GuestRunner.Timeout);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Paravirt.Core.Abi.Sched.SHUTDOWN_poweroff);
        }));
        (await ready.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();

        var (rsp, disk) = await Attack(f =>
        {
            GuestGrants.GrantV1(f.G, f.GrantTable, 301, 7, f.DataAddress(0) >> 12); // granted, but to domain 7
            GuestGrants.GrantV1(f.G, f.GrantTable, 302, 0, f.DataAddress(1) >> 12, readOnly: true);
            var requests = new List<blkif_request>();
            foreach (var gref in new uint[] { 300, 301, 299, 5000, uint.MaxValue })
            {
                var w = Write(f, 0, 1);
                w.seg[0].gref = gref;
                requests.Add(w);
                var r = ReadReq(f, 0, 1);
                r.seg[0].gref = gref;
                requests.Add(r);
            }

            var intoReadOnly = ReadReq(f, 0, 1);
            intoReadOnly.seg[0].gref = 302; // the disk may not write a read-only grant
            requests.Add(intoReadOnly);
            var lastBad = Write(f, 0, 3);
            lastBad.seg[2].gref = 300; // two good segments, then a bad one: nothing is written
            requests.Add(lastBad);
            return requests;
        }, mayReachDisk: true); // a read fetches from the disk before it copies out to the (bad) grant

        rsp.Should().HaveCount(12).And.OnlyContain(r => r.status == Blkif.BLKIF_RSP_ERROR);
        disk.Stats.Errors.Should().Be(12);
        victim.Memory.TryRead(victimPage << 12, out ulong word).Should().BeTrue();
        word.Should().Be(0xEEEEEEEEEEEEEEEEUL, "the other domain's granted page was never written");
        done.Release();
        await victim.ExitWithinAsync();
        victim.Destroy();
    }

    [Fact]
    public async Task UnknownOrReservedOperations_AreAnsweredNotSupported()
    {
        var (rsp, disk) = await Attack(f =>
        [
            .. new byte[] { Blkif.BLKIF_OP_RESERVED_1, 7, 42, 255 }
                .Select(op => new blkif_request { operation = op, nr_segments = 1, id = 0xABCD0000UL + op }),
        ]);

        rsp.Select(r => r.status).Should().OnlyContain(s => s == Blkif.BLKIF_RSP_EOPNOTSUPP);
        rsp.Select(r => r.operation).Should().Equal(4, 7, 42, 255);
        rsp.Select(r => r.id).Should().Equal(0xABCD0004UL, 0xABCD0007UL, 0xABCD002AUL, 0xABCD00FFUL);
        disk.Stats.Unsupported.Should().Be(4);
    }

    [Fact]
    public async Task ProducerIndexFarAhead_CrashesOnlyThatDomain()
    {
        var before = hv.FreeFrames;
        var attacker = hv.CreateDomain(BlockGuest.Config("overrun"));
        var attackerDisk = attacker.AttachDisk("xvda", BlockDevice.InMemory(2048));
        var bystanderBytes = BlockGuest.Pattern(1 << 20, 12);
        var bystanderOriginal = (byte[])bystanderBytes.Clone();
        var bystander = hv.CreateDomain(BlockGuest.Config("bystander"));
        await using var bystanderDisk = bystander.AttachDisk("xvda", BlockDevice.InMemory(bystanderBytes));
        using var bystanderConnected = new SemaphoreSlim(0);
        using var attackDone = new SemaphoreSlim(0);
        byte[]? bystanderRead = null;
        var bystanderFailure = BlockGuest.Start(bystander, f =>
        {
            f.Connect().Should().BeTrue();
            bystanderConnected.Release();
            attackDone.Wait(GuestRunner.Timeout).Should().BeTrue();
            short s;
            (s, bystanderRead) = f.ReadPages(0, 0, 4);
            s.Should().Be(Blkif.BLKIF_RSP_OKAY);
            f.WritePages(16, 4, new byte[4096]).Should().Be(Blkif.BLKIF_RSP_OKAY);
        });
        (await bystanderConnected.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken)).Should().BeTrue();

        _ = BlockGuest.Start(attacker, f =>
        {
            f.Connect().Should().BeTrue();
            f.SetRequestProducer((uint)f.RingSize + 1); // 33 requests published on a 32-entry ring with none answered
            f.Notify();
            f.WaitResponses(1); // the domain is crashed under it
        });

        var exit = await attacker.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("blkback xvda").And.Contain("more than a ring");
        await attackerDisk.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        attackerDisk.Stats.ProtocolErrors.Should().Be(1);
        attackerDisk.Stats.Requests.Should().Be(0, "nothing of an overrun ring is taken");
        attackerDisk.IsConnected.Should().BeFalse();
        hv.HostGrants.MappingCount.Should().Be(1, "only the bystander's ring is still mapped");

        attackDone.Release();
        await bystander.ExitWithinAsync();
        (await bystanderFailure).Should().BeNull();
        bystanderRead.Should().Equal(bystanderOriginal.AsSpan(0, 4 * 4096).ToArray(), "the other domain's disk works on");
        bystanderBytes.AsSpan(16 * 512, 4096).ToArray().Should().OnlyContain(b => b == 0, "and takes its writes");
        bystanderDisk.Stats.ProtocolErrors.Should().Be(0);

        attacker.Destroy();
        bystander.Destroy();
        await attackerDisk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        await bystanderDisk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0);
        hv.FreeFrames.Should().Be(before);
    }

    [Fact]
    public async Task RingRefOrPortNotGiven_RefusesTheConnection()
    {
        var d = hv.CreateDomain(BlockGuest.Config("badring"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(64));
        bool badRef = true, badPort = true, garbage = true;
        string? refError = null, portError = null;
        await BlockGuest.RunAsync(d, f =>
        {
            // A ring-ref the guest never granted.
            badRef = f.Connect(beforeInitialised: x => x.WriteFrontend("ring-ref", "400"));
            refError = f.ReadBackend("error");
            f.SwitchState(XenbusState.Closed);
            f.WaitBackend(XenbusState.Closed);
            f.SwitchState(XenbusState.Initialising);

            // A port that is not an unbound port for domain 0.
            badPort = f.Connect(beforeInitialised: x => x.WriteFrontend("event-channel", "1000"));
            portError = f.ReadBackend("error");
            f.SwitchState(XenbusState.Closed);
            f.WaitBackend(XenbusState.Closed);
            f.SwitchState(XenbusState.Initialising);

            garbage = f.Connect(beforeInitialised: x => x.WriteFrontend("ring-ref", "-1"));
        });

        badRef.Should().BeFalse();
        refError.Should().Contain("grant 400");
        badPort.Should().BeFalse();
        portError.Should().Contain("event channel 1000");
        garbage.Should().BeFalse();
        disk.Stats.Connects.Should().Be(0);
        hv.HostGrants.MappingCount.Should().Be(0, "a refused connection leaves no mapping behind");
        d.Destroy();
    }
}
