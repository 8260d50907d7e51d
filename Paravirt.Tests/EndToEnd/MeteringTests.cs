using Paravirt.Cli.Guests;
using Paravirt.Cli.Host;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Metering adds up: what each domain's <c>Meter</c> counts equals what its guest counted it did —
/// every hypercall by number, every successful <c>EVTCHNOP_send</c>, every block byte — exactly, and
/// the domain table shows those same counts.
/// </summary>
public sealed class MeteringTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 160 });

    public void Dispose() => hv.Dispose();

    private static void ShouldMatch(Domain d, GuestLedger l)
    {
        var m = d.Meter;
        for (var nr = 0; nr <= DomainMeter.HypercallSlots; nr++)
        {
            m.Hypercalls(nr).Should().Be(l.Hypercalls(nr), $"{d.Name}: hypercall {nr} as often as the guest made it");
        }

        m.TotalHypercalls.Should().Be(l.TotalHypercalls, d.Name);
        m.EventsSent.Should().Be(l.EventsSent, $"{d.Name}: one event sent per EVTCHNOP_send that succeeded");
        m.BlockBytesRead.Should().Be(l.BlockBytesRead, d.Name);
        m.BlockBytesWritten.Should().Be(l.BlockBytesWritten, d.Name);
    }

    [Fact]
    public async Task Each_Domains_Meter_Equals_What_Its_Guest_Counted_Exactly_And_The_Table_Shows_It()
    {
        var specs = new[]
        {
            (Name: "small", Cmd: "bytes=262144 keys=20 events=30 seed=1", Disk: 1 << 20),
            (Name: "large", Cmd: "bytes=2097152 keys=120 events=500 seed=2", Disk: 4 << 20),
        };
        var runs = new List<(Domain Dom, GuestLedger Ledger, BlkBack? Disk, int Bytes, int Events)>();
        foreach (var s in specs)
        {
            var d = hv.CreateDomain(new DomainConfig { Name = s.Name, MemoryMiB = 16, CommandLine = s.Cmd });
            var disk = d.AttachDisk("xvda", BlockDevice.InMemory(s.Disk / 512));
            var args = new GuestArgs(s.Cmd);
            runs.Add((d, new GuestLedger(), disk, (int)args.Get("bytes", 0), (int)args.Get("events", 0)));
        }

        var bomb = hv.CreateDomain(new DomainConfig { Name = "bomb", MemoryMiB = 8, MaxMemoryMiB = 9 });
        runs.Add((bomb, new GuestLedger(), null, 0, 0));
        runs[0].Dom.Start(new MeteredKernel(new WorkerGuest(runs[0].Ledger), runs[0].Ledger));
        runs[1].Dom.Start(new MeteredKernel(new WorkerGuest(runs[1].Ledger), runs[1].Ledger));
        bomb.Start(new MeteredKernel(new BombGuest(), runs[2].Ledger));

        foreach (var r in runs)
        {
            var exit = await r.Dom.ExitWithinAsync();
            exit.State.Should().Be(r.Dom == bomb ? DomainState.Crashed : DomainState.Shutdown, exit.Reason);
        }

        var table = DomainTable.Snapshot(hv, host: 7);
        foreach (var (dom, ledger, disk, bytes, events) in runs)
        {
            ShouldMatch(dom, ledger);
            if (disk is not null)
            {
                ledger.BlockBytesWritten.Should().Be(bytes, "the worker wrote its bytes once");
                ledger.BlockBytesRead.Should().Be(bytes, "and read them back once");
                disk.Stats.BytesWritten.Should().Be(dom.Meter.BlockBytesWritten, "blkback's own count agrees");
                disk.Stats.BytesRead.Should().Be(dom.Meter.BlockBytesRead);
                dom.Meter.EventsReceived.Should().BeGreaterThanOrEqualTo(events, "every looped event arrived, besides the backends' notifications");
                ledger.EventsSent.Should().BeGreaterThanOrEqualTo(events);
            }

            ledger.Hypercalls(Xen.__HYPERVISOR_sched_op).Should().BeGreaterThanOrEqualTo(1, "at least the SCHEDOP_shutdown");
            dom.CpuTimeNs.Should().BePositive();
            var row = table.Single(r => r.Name == dom.Name);
            (row.Host, row.Id, row.Hypercalls, row.EventsSent, row.EventsReceived, row.BlockBytesRead, row.BlockBytesWritten, row.Vcpus).Should().Be(
                (7, dom.Id, dom.Meter.TotalHypercalls, dom.Meter.EventsSent, dom.Meter.EventsReceived, dom.Meter.BlockBytesRead, dom.Meter.BlockBytesWritten, 1));
            row.MemoryMiB.Should().Be(dom.TotalPages / 256);
            (row.NetworkBytesReceived, row.NetworkBytesSent).Should().Be((0, 0), "no network backend yet");
            DomainTable.FromJson(DomainTable.ToJson(row)).Should().Be(row, "the control socket's JSON carries the row intact");
        }

        runs[1].Ledger.TotalHypercalls.Should().BeGreaterThan(runs[0].Ledger.TotalHypercalls, "more work, more hypercalls: the counts are per domain");
        table.Single(r => r.Name == "bomb").State.Should().Be("crashed");
        table.Single(r => r.Name == "small").State.Should().Be("shutdown:poweroff");
    }

    [Fact]
    public async Task A_Raw_Guest_Is_Metered_Exactly_By_The_ABI_Sends_Count_Each_Time_Receives_Count_Pending_Edges()
    {
        const int Versions = 37;
        const int Sends = 23;
        var d = hv.CreateDomain(new DomainConfig { Name = "raw", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, startInfo) =>
        {
            var scratch = cpu.Memory.Read<start_info>(startInfo).pt_base;
            for (var i = 0; i < Versions; i++)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
            }

            // A loopback channel: a port unbound for ourselves, and a second port bound to it.
            cpu.Memory.Write(scratch, new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = Xen.DOMID_SELF });
            cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_alloc_unbound, scratch).Should().Be(0);
            var a = cpu.Memory.Read<evtchn_alloc_unbound>(scratch).port;
            cpu.Memory.Write(scratch, new evtchn_bind_interdomain { remote_dom = Xen.DOMID_SELF, remote_port = a });
            cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_bind_interdomain, scratch).Should().Be(0);
            var b = cpu.Memory.Read<evtchn_bind_interdomain>(scratch).local_port;
            for (var i = 0; i < Sends; i++)
            {
                cpu.Memory.Write(scratch, new evtchn_send { port = b });
                cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, scratch).Should().Be(0);
            }

            // Xen's bind_interdomain raises the new port b once; nobody clears port a's pending bit, so only the first send is news to it.
            cpu.Memory.Write(scratch, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff });
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, scratch);
        }));

        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        var m = d.Meter;
        m.Hypercalls(Xen.__HYPERVISOR_xen_version).Should().Be(Versions);
        m.Hypercalls(Xen.__HYPERVISOR_event_channel_op).Should().Be(2 + Sends);
        m.Hypercalls(Xen.__HYPERVISOR_sched_op).Should().Be(1);
        m.TotalHypercalls.Should().Be(Versions + 2 + Sends + 1);
        m.EventsSent.Should().Be(Sends);
        m.EventsReceived.Should().Be(2, "b raised once by its bind, and a once by the first send: an event already pending is not news (2-level: the 0→1 edge of the pending bit)");
        m.BlockBytesRead.Should().Be(0);
    }
}
