using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// One test per grant-table and event-channel attack a guest (or a careless backend) can make:
/// each asserts Xen 4.17's errno or GNTST_* status, and that the host and other domains go on.
/// </summary>
public sealed class GrantAndEventAttackTests : IDisposable
{
    private static readonly TimeSpan Timeout = GuestRunner.Timeout;
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    /// <summary>A guest that sets up grants with <paramref name="grant"/>, then waits for the test's go before shutting down.</summary>
    private async Task<(Domain Domain, SemaphoreSlim Done)> GuestWithGrants(string name, Action<GuestContext, ulong> grant, DomainConfig? config = null)
    {
        var ready = new SemaphoreSlim(0);
        var done = new SemaphoreSlim(0);
        var d = _hv.CreateDomain(config ?? new DomainConfig { Name = name, MemoryMiB = 4 });
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
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown, "the attacked guest itself still runs and shuts down cleanly");
        d.Destroy();
        done.Dispose();
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

    /// <summary>The host and a bystander domain still work: a fresh guest grants a page and the host maps and copies it.</summary>
    private async Task HostAndOthersGoOn()
    {
        var (d, done) = await GuestWithGrants("bystander", (g, table) => GuestGrants.GrantV1(g, table, 3, 0, GuestGrants.DataPage(g, 0, 0x42)));
        using (var m = _hv.HostGrants.Map(d, 3, readOnly: false))
        {
            m.Bytes[7].Should().Be(0x42);
        }

        var buffer = new byte[16];
        _hv.HostGrants.CopyFrom(d, 3, 100, buffer).Should().Be(GrantStatus.Okay);
        buffer.Should().OnlyContain(b => b == 0x42);
        await Finish(d, done);
        _hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task GrantReferenceOutOfRange_Is_GNTST_bad_gntref_For_Host_And_Guest_Mappers_And_Copies()
    {
        var (a, doneA) = await GuestWithGrants("granter", (g, table) => GuestGrants.GrantV1(g, table, 5, 0, GuestGrants.DataPage(g, 0, 0x11)));
        foreach (var gref in new uint[] { 512u * 64, 1u << 20, int.MaxValue, uint.MaxValue })
        {
            Status(() => _hv.HostGrants.Map(a, gref, readOnly: true)).Should().Be(GrantStatus.BadGntref, "ref {0} is beyond the granter's table", gref);
            _hv.HostGrants.CopyFrom(a, gref, 0, new byte[8]).Should().Be(GrantStatus.BadGntref);
            _hv.HostGrants.CopyTo(a, gref, 0, new byte[8]).Should().Be(GrantStatus.BadGntref);
        }

        gnttab_map_grant_ref map = default;
        gnttab_copy copy = default;
        GuestRunner.Run(_hv, g =>
        {
            map = new gnttab_map_grant_ref { host_addr = (g.ReadStartInfo().nr_pages + 100) << 12, flags = GrantTable.GNTMAP_host_map, @ref = 1u << 20, dom = a.Id };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref map);
            copy = new gnttab_copy
            {
                source = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { @ref = 0x7FFF_FFFF }, domid = a.Id },
                dest = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = GuestGrants.DataPage(g, 0, 0) }, domid = Xen.DOMID_SELF },
                len = 8,
                flags = GrantTable.GNTCOPY_source_gref,
            };
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref copy);
        });
        map.status.Should().Be(GrantTable.GNTST_bad_gntref);
        copy.status.Should().Be(GrantTable.GNTST_bad_gntref);

        using (var m = _hv.HostGrants.Map(a, 5, readOnly: true))
        {
            m.Bytes[0].Should().Be(0x11, "the granter's valid grant still works");
        }

        await Finish(a, doneA);
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task RevokingWhileMapped_Fails_Until_The_Last_Unmap_And_Then_Refuses_New_Maps()
    {
        using var step = new SemaphoreSlim(0);
        using var guestDid = new SemaphoreSlim(0);
        var results = new List<bool>();
        ushort flagsAfterRevoke = 0xFFFF;
        var d = _hv.CreateDomain(new DomainConfig { Name = "revoker", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            GuestGrants.GrantV1(g, table, 8, 0, GuestGrants.DataPage(g, 0, 0x21));
            guestDid.Release();
            for (var i = 0; i < 3; i++)
            {
                step.Wait(Timeout);
                results.Add(GuestGrants.EndForeignAccessV1(g, table, 8));
                guestDid.Release();
            }

            flagsAfterRevoke = GuestGrants.FlagsV1(g, table, 8);
            step.Wait(Timeout);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        var ct = TestContext.Current.CancellationToken;
        (await guestDid.WaitAsync(Timeout, ct)).Should().BeTrue();
        var rw = _hv.HostGrants.Map(d, 8, readOnly: false);
        var ro = _hv.HostGrants.Map(d, 8, readOnly: true);
        step.Release();
        (await guestDid.WaitAsync(Timeout, ct)).Should().BeTrue(); // both mapped: revoke fails
        rw.Dispose();
        step.Release();
        (await guestDid.WaitAsync(Timeout, ct)).Should().BeTrue(); // still read-mapped: revoke fails
        ro.Dispose();
        step.Release();
        (await guestDid.WaitAsync(Timeout, ct)).Should().BeTrue(); // nothing mapped: revoke succeeds
        results.Should().Equal(false, false, true);
        flagsAfterRevoke.Should().Be(0, "gnttab_end_foreign_access_ref cleared the flags");
        Status(() => _hv.HostGrants.Map(d, 8, readOnly: true)).Should().Be(GrantStatus.GeneralError, "a revoked entry no longer permits access");
        _hv.HostGrants.CopyFrom(d, 8, 0, new byte[4]).Should().Be(GrantStatus.GeneralError);
        await Finish(d, step);
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task CopyCrossingAPage_Is_GNTST_bad_copy_arg_And_Copies_Nothing()
    {
        var (d, done) = await GuestWithGrants("crossing", (g, table) =>
        {
            GuestGrants.GrantV1(g, table, 4, 0, GuestGrants.DataPage(g, 0, 0x33));
            GuestGrants.GrantV1(g, table, 6, 0, GuestGrants.DataPage(g, 1, 0x44));
        });
        var buffer = new byte[200];
        _hv.HostGrants.CopyFrom(d, 4, 4000, buffer).Should().Be(GrantStatus.BadCopyArg, "4000 + 200 > PAGE_SIZE");
        buffer.Should().OnlyContain(b => b == 0, "a refused copy writes nothing");
        _hv.HostGrants.CopyTo(d, 4, 4095, new byte[2]).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(d, 4, 3000), new GrantReference(d, 6, 0), 1097).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(d, 4, 0), new GrantReference(d, 6, 4000), 97).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.CopyFrom(d, 4, 3896, buffer).Should().Be(GrantStatus.Okay, "exactly up to the page end is fine");
        buffer.Should().OnlyContain(b => b == 0x33);
        using (var m = _hv.HostGrants.Map(d, 6, readOnly: true))
        {
            m.Bytes.ToArray().Should().OnlyContain(b => b == 0x44, "the refused copies did not touch the destination page");
        }

        await Finish(d, done);
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task CopyWithAWildLength_Is_GNTST_bad_copy_arg_From_Host_And_Guest()
    {
        var (d, done) = await GuestWithGrants("wild-length", (g, table) => GuestGrants.GrantV1(g, table, 4, 0, GuestGrants.DataPage(g, 0, 0x55)));
        _hv.HostGrants.CopyFrom(d, 4, 0, new byte[4097]).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.CopyFrom(d, 4, 0, new byte[70000]).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(d, 4), new GrantReference(d, 4), int.MaxValue).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(d, 4), new GrantReference(d, 4), -1).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.Copy(new GrantReference(d, 4, -5), new GrantReference(d, 4), 8).Should().Be(GrantStatus.BadCopyArg);
        _hv.HostGrants.CopyFrom(d, 4, -1, new byte[8]).Should().Be(GrantStatus.BadCopyArg);
        await Finish(d, done);

        gnttab_copy wild = default;
        GuestRunner.Run(_hv, g =>
        {
            var src = GuestGrants.DataPage(g, 0, 1);
            var dst = GuestGrants.DataPage(g, 1, 2);
            wild = new gnttab_copy
            {
                source = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = src }, domid = Xen.DOMID_SELF },
                dest = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = dst }, domid = Xen.DOMID_SELF },
                len = 0x8000,
            };
            GuestGrants.Op(g, GrantTable.GNTTABOP_copy, ref wild);
        });
        wild.status.Should().Be(GrantTable.GNTST_bad_copy_arg, "len > PAGE_SIZE");
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task ReadOnlyGrantMappedForWrite_Is_GNTST_general_error_And_Leaves_The_Page_Untouched()
    {
        var (d, done) = await GuestWithGrants("ro", (g, table) => GuestGrants.GrantV1(g, table, 9, 0, GuestGrants.DataPage(g, 0, 0x66), readOnly: true));
        Status(() => _hv.HostGrants.Map(d, 9, readOnly: false)).Should().Be(GrantStatus.GeneralError, "_set_status refuses to write-pin a GTF_readonly entry");
        _hv.HostGrants.CopyTo(d, 9, 0, new byte[] { 1, 2, 3 }).Should().Be(GrantStatus.GeneralError, "copying into a read-only grant is refused the same way");
        _hv.HostGrants.MappingCount.Should().Be(0, "the refused map left no handle behind");
        using (var m = _hv.HostGrants.Map(d, 9, readOnly: true))
        {
            m.Bytes.ToArray().Should().OnlyContain(b => b == 0x66);
            FluentActions.Invoking(() => m.WritableBytes.Length).Should().Throw<InvalidOperationException>();
            Status(() => _hv.HostGrants.Map(d, 9, readOnly: false)).Should().Be(GrantStatus.GeneralError, "nor can a write pin join a read pin");
        }

        await Finish(d, done);
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task DomainMappingItsOwnGrant_Succeeds_As_In_Xen_And_DOMID_SELF_Is_GNTST_bad_domain()
    {
        // Xen 4.17's map_grant_ref has no ld == rd check: it looks rd up by id (DOMID_SELF names no
        // domain: GNTST_bad_domain), and _set_status only asks that the entry names the mapper.
        gnttab_map_grant_ref own = default, self = default;
        gnttab_unmap_grant_ref unmap = default;
        ushort flagsMapped = 0, flagsAfter = 0;
        byte seen = 0, written = 0;
        bool endWhileMapped = true, endAfter = false;
        var d = _hv.CreateDomain(new DomainConfig { Name = "self-mapper", MemoryMiB = 4 });
        var myId = d.Id;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            var page = GuestGrants.DataPage(g, 0, 0x77);
            GuestGrants.GrantV1(g, table, 7, myId, page);
            var at = (g.ReadStartInfo().nr_pages + 300) << 12;
            self = new gnttab_map_grant_ref { host_addr = at, flags = GrantTable.GNTMAP_host_map, @ref = 7, dom = Xen.DOMID_SELF };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref self);
            own = new gnttab_map_grant_ref { host_addr = at, flags = GrantTable.GNTMAP_host_map, @ref = 7, dom = myId };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref own);
            flagsMapped = GuestGrants.FlagsV1(g, table, 7);
            seen = g.Cpu.Memory.Read<byte>(at + 1);
            g.Cpu.Memory.Write(at + 2, (byte)0x78);
            written = g.Cpu.Memory.Read<byte>((page << 12) + 2);
            endWhileMapped = GuestGrants.EndForeignAccessV1(g, table, 7);
            unmap = new gnttab_unmap_grant_ref { host_addr = at, handle = own.handle };
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref unmap);
            flagsAfter = GuestGrants.FlagsV1(g, table, 7);
            endAfter = GuestGrants.EndForeignAccessV1(g, table, 7);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        var exit = await d.ExitWithinAsync();
        d.Destroy();
        exit.State.Should().Be(DomainState.Shutdown);
        self.status.Should().Be(GrantTable.GNTST_bad_domain);
        own.status.Should().Be(GrantTable.GNTST_okay);
        flagsMapped.Should().Be((ushort)(GrantTable.GTF_permit_access | GrantTable.GTF_reading | GrantTable.GTF_writing));
        seen.Should().Be(0x77, "the mapping shows the domain's own page");
        written.Should().Be(0x78, "and writes through it land in that page");
        endWhileMapped.Should().BeFalse();
        unmap.status.Should().Be(GrantTable.GNTST_okay);
        flagsAfter.Should().Be((ushort)GrantTable.GTF_permit_access);
        endAfter.Should().BeTrue();
        _hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task MaptrackExhaustion_Is_GNTST_no_space_Per_Op_And_A_Freed_Handle_Is_Reusable()
    {
        // A classic PV mapper with one maptrack frame (512 handles) pins by device_map (no page tables needed).
        const int Ops = 600;
        var statuses = new short[Ops];
        gnttab_unmap_grant_ref unmap = default;
        gnttab_map_grant_ref again = default;
        var mapper = _hv.CreateDomain(new DomainConfig { Name = "exhauster", MemoryMiB = 4, AutoTranslated = false, Limits = DomainLimits.Default with { MaxMaptrackFrames = 1 } });
        var (a, doneA) = await GuestWithGrants("many", (g, table) =>
        {
            for (uint r = 1; r <= 3; r++)
            {
                GuestGrants.GrantV1(g, table, r, mapper.Id, GuestGrants.DataPage(g, (int)r, (byte)r), readOnly: true);
                GuestGrants.GrantV1(g, table, r + 10, 0, GuestGrants.DataPage(g, (int)r, (byte)r), readOnly: true);
            }
        });
        long rc = -1;
        mapper.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var ops = g.Scratch + 0x10000;
            for (var i = 0; i < Ops; i++)
            {
                g.Cpu.Memory.Write(ops + ((ulong)i * 32), new gnttab_map_grant_ref { flags = GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_readonly, @ref = 1 + ((uint)i % 3), dom = a.Id });
            }

            rc = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_map_grant_ref, ops, Ops);
            for (var i = 0; i < Ops; i++)
            {
                statuses[i] = g.Cpu.Memory.Read<gnttab_map_grant_ref>(ops + ((ulong)i * 32)).status;
            }

            var first = g.Cpu.Memory.Read<gnttab_map_grant_ref>(ops);
            unmap = new gnttab_unmap_grant_ref { dev_bus_addr = first.dev_bus_addr, handle = first.handle };
            GuestGrants.Op(g, GrantTable.GNTTABOP_unmap_grant_ref, ref unmap);
            again = new gnttab_map_grant_ref { flags = GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_readonly, @ref = 1, dom = a.Id };
            GuestGrants.Op(g, GrantTable.GNTTABOP_map_grant_ref, ref again);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await mapper.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        mapper.Grants.MappingCount.Should().Be(512);
        mapper.Destroy();

        rc.Should().Be(0, "running out of handles is a per-op status, not an errno");
        statuses[..512].Should().OnlyContain(s => s == GrantTable.GNTST_okay);
        statuses[512..].Should().OnlyContain(s => s == GrantTable.GNTST_no_space, "max_maptrack_frames 1 is 512 handles");
        unmap.status.Should().Be(GrantTable.GNTST_okay);
        again.status.Should().Be(GrantTable.GNTST_okay, "a freed handle is reused");
        using (var m = _hv.HostGrants.Map(a, 12, readOnly: true))
        {
            m.Bytes[0].Should().Be(2, "the granter's other grants still work for the host");
        }

        await Finish(a, doneA);
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task DestroyingADomainWithOutstandingMappings_KeepsFramesUntilLastUnmap()
    {
        var before = _hv.FreeFrames;
        var (d, done) = await GuestWithGrants("dying", (g, table) =>
        {
            GuestGrants.GrantV1(g, table, 12, 0, GuestGrants.DataPage(g, 0, 0xC3));
            GuestGrants.GrantV1(g, table, 13, 0, GuestGrants.DataPage(g, 1, 0xC4));
        });
        var rw = _hv.HostGrants.Map(d, 12, readOnly: false);
        var ro = _hv.HostGrants.Map(d, 12, readOnly: true);
        var other = _hv.HostGrants.Map(d, 13, readOnly: true);
        await Finish(d, done);

        _hv.FreeFrames.Should().Be(before - 2, "every frame came back except the two pages the host still maps");
        rw.WritableBytes[0] = 0x01;
        ro.Bytes[0].Should().Be(0x01, "both mappings still reach the same, not reused, page");
        other.Bytes[..64].ToArray().Should().OnlyContain(b => b == 0xC4);
        Status(() => _hv.HostGrants.Map(d, 12, readOnly: true)).Should().Be(GrantStatus.BadDomain);

        rw.Dispose();
        _hv.FreeFrames.Should().Be(before - 2, "ref 12's page is still mapped read-only");
        ro.Bytes[1].Should().Be(0xC3);
        ro.Dispose();
        _hv.FreeFrames.Should().Be(before - 1, "the last mapping of ref 12's page went: it is free");
        other.Dispose();
        _hv.FreeFrames.Should().Be(before, "and the last of all");
        _hv.HostGrants.MappingCount.Should().Be(0);
        await HostAndOthersGoOn();
        _hv.FreeFrames.Should().Be(before);
    }

    private static long EvtOp<T>(GuestContext g, int cmd, ref T arg)
        where T : unmanaged
    {
        var at = g.Scratch + 0x700;
        g.Cpu.Memory.Write(at, arg);
        var rc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, (ulong)cmd, at);
        arg = g.Cpu.Memory.Read<T>(at);
        return rc;
    }

    private static long Send(GuestContext g, uint port)
    {
        var s = new evtchn_send { port = port };
        return EvtOp(g, EventChannel.EVTCHNOP_send, ref s);
    }

    [Fact]
    public async Task EventsToClosedForeignOrOutOfRangePorts_Are_EINVAL_Or_ESRCH_And_Live_Channels_Go_On()
    {
        var ct = TestContext.Current.CancellationToken;

        // Domain b offers a port to the host; domain a tries to steal it.
        using var offered = new SemaphoreSlim(0);
        using var bDone = new SemaphoreSlim(0);
        uint bPort = 0;
        var b = _hv.CreateDomain(new DomainConfig { Name = "offerer", MemoryMiB = 4 });
        b.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var a = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 };
            EvtOp(g, EventChannel.EVTCHNOP_alloc_unbound, ref a).Should().Be(0);
            Volatile.Write(ref bPort, a.port);
            offered.Release();
            bDone.Wait(Timeout);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await offered.WaitAsync(Timeout, ct)).Should().BeTrue();

        var attacker = _hv.CreateDomain(new DomainConfig { Name = "attacker", MemoryMiB = 4 });
        using var host = _hv.Host.AllocUnbound(attacker);
        var r = new Dictionary<string, long>();
        attacker.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var bind = new evtchn_bind_interdomain { remote_dom = 0, remote_port = host.LocalPort };
            EvtOp(g, EventChannel.EVTCHNOP_bind_interdomain, ref bind).Should().Be(0);
            var toHost = bind.local_port;

            r["send-reserved-0"] = Send(g, 0);
            r["send-never-allocated"] = Send(g, toHost + 20);
            r["send-out-of-range"] = Send(g, 1u << 20);
            r["send-max"] = Send(g, uint.MaxValue);

            var loop = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = Xen.DOMID_SELF };
            EvtOp(g, EventChannel.EVTCHNOP_alloc_unbound, ref loop).Should().Be(0);
            var close = new evtchn_close { port = loop.port };
            r["close"] = EvtOp(g, EventChannel.EVTCHNOP_close, ref close);
            r["send-closed"] = Send(g, loop.port);
            r["close-again"] = EvtOp(g, EventChannel.EVTCHNOP_close, ref close);

            var unbound = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 };
            EvtOp(g, EventChannel.EVTCHNOP_alloc_unbound, ref unbound).Should().Be(0);
            r["send-unbound"] = Send(g, unbound.port);

            var steal = new evtchn_bind_interdomain { remote_dom = b.Id, remote_port = Volatile.Read(ref bPort) };
            r["bind-foreign-offered-to-another"] = EvtOp(g, EventChannel.EVTCHNOP_bind_interdomain, ref steal);
            steal = new evtchn_bind_interdomain { remote_dom = b.Id, remote_port = 1u << 20 };
            r["bind-foreign-out-of-range"] = EvtOp(g, EventChannel.EVTCHNOP_bind_interdomain, ref steal);
            steal = new evtchn_bind_interdomain { remote_dom = 0x7000, remote_port = 1 };
            r["bind-missing-domain"] = EvtOp(g, EventChannel.EVTCHNOP_bind_interdomain, ref steal);

            var unmask = new evtchn_unmask { port = 1u << 20 };
            r["unmask-out-of-range"] = EvtOp(g, EventChannel.EVTCHNOP_unmask, ref unmask);
            close = new evtchn_close { port = 1u << 20 };
            r["close-out-of-range"] = EvtOp(g, EventChannel.EVTCHNOP_close, ref close);

            r["send-live"] = Send(g, toHost);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));

        (await host.WaitAsync(ct).AsTask().WaitAsync(Timeout, ct)).Should().BeTrue("the live channel still delivers to the host");
        (await attacker.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        var einval = -(long)Errno.EINVAL;
        r.Should().BeEquivalentTo(new Dictionary<string, long>
        {
            ["send-reserved-0"] = einval,
            ["send-never-allocated"] = einval,
            ["send-out-of-range"] = einval,
            ["send-max"] = einval,
            ["close"] = 0,
            ["send-closed"] = einval,
            ["close-again"] = einval,
            ["send-unbound"] = 0, // evtchn_send silently drops a notification on an unbound port
            ["bind-foreign-offered-to-another"] = einval,
            ["bind-foreign-out-of-range"] = einval,
            ["bind-missing-domain"] = -(long)Errno.ESRCH,
            ["unmask-out-of-range"] = einval,
            ["close-out-of-range"] = einval,
            ["send-live"] = 0,
        });

        // The host: a port not offered to it, and a send on its own end after the guest went away.
        FluentActions.Invoking(() => _hv.Host.BindInterdomain(attacker, 1u << 20)).Should().Throw<XenException>().Which.Errno.Should().Be(Errno.EINVAL);
        attacker.Destroy();
        host.Notify(); // the guest's end is gone: the host's end is unbound, and the send is dropped
        host.Dispose();
        FluentActions.Invoking(host.Notify).Should().Throw<XenException>().Which.Errno.Should().Be(Errno.EINVAL);

        // b's offer is intact: the host binds it and b's port is connected.
        using (var toB = _hv.Host.BindInterdomain(b, Volatile.Read(ref bPort)))
        {
            toB.RemotePort.Should().Be(Volatile.Read(ref bPort));
            toB.Notify();
        }

        bDone.Release();
        (await b.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        b.Destroy();
        await HostAndOthersGoOn();
    }

    [Fact]
    public async Task ExpandArrayWithHostileFrameNumbers_Is_EINVAL_Before_Init_EOPNOTSUPP_And_Past_128_Pages_ENOSPC()
    {
        var r = new Dictionary<string, long>();
        var pages = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "expander", MemoryMiB = 4, AutoTranslated = false });
        var other = _hv.CreateDomain(new DomainConfig { Name = "victim", MemoryMiB = 4, AutoTranslated = false });
        var before = _hv.FreeFrames;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var fifo = new GuestFifo(g, g.Scratch + 0x1000, classicPv: true);
            r["before-init"] = fifo.ExpandArrayRaw(g.Scratch / 4096 + 8);
            r["init"] = fifo.InitControl();
            r["wild"] = fifo.ExpandArrayRaw(ulong.MaxValue);
            r["huge"] = fifo.ExpandArrayRaw(1UL << 40);
            r["victims-mfn"] = fifo.ExpandArrayRaw(other.PhysMap.Entries().First().Mfn);
            while (pages < 200 && (r["last"] = fifo.ExpandArray()) == 0)
            {
                pages++;
            }

            r["wild-when-full"] = fifo.ExpandArrayRaw(ulong.MaxValue);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        _hv.FreeFrames.Should().BeGreaterThanOrEqualTo(before, "every array page reference was dropped with the domain");
        other.Destroy();

        var einval = -(long)Errno.EINVAL;
        r["before-init"].Should().Be(-(long)Errno.EOPNOTSUPP, "no FIFO control block yet");
        r["init"].Should().Be(0);
        r["wild"].Should().Be(einval, "map_guest_page: get_page_from_gfn fails");
        r["huge"].Should().Be(einval);
        r["victims-mfn"].Should().Be(einval, "a classic PV guest naming another domain's frame: get_page_from_gfn refuses a foreign page");
        pages.Should().Be(128, "EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES for 2^17 ports");
        r["last"].Should().Be(-(long)Errno.ENOSPC);
        r["wild-when-full"].Should().Be(-(long)Errno.ENOSPC, "the slot check comes before the frame is looked at");
        await HostAndOthersGoOn();
    }
}
