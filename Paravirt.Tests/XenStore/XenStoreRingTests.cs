using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.XenStore;

/// <summary>Guests talking to the store through their xenstore page and store event channel, as a PV kernel's xenbus does.</summary>
public sealed class XenStoreRingTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => hv.Dispose();

    private static string Text(XsMessage m) => Encoding.Latin1.GetString(m.Payload).TrimEnd('\0');

    [Fact]
    public void A_Guest_Reads_Its_Own_Name_And_Its_Writes_Reach_The_Host()
    {
        XsMessage name = default, write = default, absolute = default;
        string? hostSees = null;
        GuestRunner.Run(hv, g =>
        {
            var xs = new GuestXenStore(g);
            name = xs.Call(xsd_sockmsg_type.XS_READ, "name");
            write = xs.Call(xsd_sockmsg_type.XS_WRITE, "data/greeting", "hi");
            var id = hv.FindDomain("ringer")!.Id;
            absolute = xs.Call(xsd_sockmsg_type.XS_READ, $"/local/domain/{id}/data/greeting");
            hostSees = hv.XenStore.Read($"/local/domain/{id}/data/greeting");
        }, new DomainConfig { Name = "ringer", MemoryMiB = 4 });

        name.Kind.Should().Be(xsd_sockmsg_type.XS_READ);
        Text(name).Should().Be("ringer");
        write.Kind.Should().Be(xsd_sockmsg_type.XS_WRITE);
        Text(write).Should().Be("OK");
        Text(absolute).Should().Be("hi");
        hostSees.Should().Be("hi", "the host sees the guest's write");
    }

    [Fact]
    public void A_Guest_Gets_Its_Watch_Events_On_The_Ring_With_Relative_Paths()
    {
        XsMessage reply = default, first = default, change = default;
        GuestRunner.Run(hv, g =>
        {
            var xs = new GuestXenStore(g);
            var id = hv.Domains.Single(d => d.Name == "watcher").Id;
            reply = xs.Call(xsd_sockmsg_type.XS_WATCH, "data/w", "tok");
            first = xs.NextEvent();
            hv.XenStore.Write($"/local/domain/{id}/data/w/x", "1"); // the host changes it while the guest waits
            change = xs.NextEvent();
        }, new DomainConfig { Name = "watcher", MemoryMiB = 4 });

        Text(reply).Should().Be("OK");
        XsWireCodec.SplitStrings(first.Payload).Should().Equal("data/w", "tok");
        XsWireCodec.SplitStrings(change.Payload).Should().Equal("data/w/x", "tok");
    }

    [Fact]
    public void Another_Domains_Home_Is_Refused_With_EACCES()
    {
        var other = hv.CreateDomain(new DomainConfig { Name = "other", MemoryMiB = 4 });
        XsMessage read = default, write = default, ownRoot = default;
        GuestRunner.Run(hv, g =>
        {
            var xs = new GuestXenStore(g);
            read = xs.Call(xsd_sockmsg_type.XS_READ, $"/local/domain/{other.Id}/name");
            write = xs.Call(xsd_sockmsg_type.XS_WRITE, $"/local/domain/{other.Id}/data/x", "evil");
            ownRoot = xs.Call(xsd_sockmsg_type.XS_WRITE, "newkey", "v");
        });

        read.Kind.Should().Be(xsd_sockmsg_type.XS_ERROR);
        Text(read).Should().Be("EACCES");
        Text(write).Should().Be("EACCES");
        Text(ownRoot).Should().Be("EACCES", "the home directory is dom0's, readable by the domain only (libxl's roperm)");
        hv.XenStore.Read($"/local/domain/{other.Id}/data/x").Should().BeNull();
        other.Destroy();
    }

    [Fact]
    public async Task A_Guest_That_Does_Not_Consume_Replies_Stops_Being_Read_At_The_Outstanding_Quota()
    {
        var d = hv.CreateDomain(new DomainConfig { Name = "greedy", MemoryMiB = 4 });
        hv.XenStore.Write($"/local/domain/{d.Id}/data/big", new string('x', 1000));
        uint consumedWhileBlocked = 0;
        var replies = new List<string>();
        const int Requests = 40;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var xs = new GuestXenStore(g);
            // 25 bytes each: all 40 fit in the 1024-byte ring, published with one req_prod update.
            var batch = Enumerable.Range(1, Requests)
                .SelectMany(i => XsWireCodec.Encode(XsMessage.Strings(xsd_sockmsg_type.XS_READ, (uint)i, 0, "data/big")))
                .ToArray();
            xs.ClearPending();
            xs.Put(batch);

            xs.Notify();

            // The store notifies once it has moved the rings, after the pass that read the batch;
            // nothing moved before the batch was published, so this is that pass's notification.
            xs.Poll();
            consumedWhileBlocked = xs.RequestsConsumed;
            for (var i = 0; i < Requests; i++)
            {
                replies.Add(Text(xs.Receive()));
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        d.Destroy();

        // One 1016-byte reply fits the response ring; 20 more wait (quota_req_outstanding), and then
        // the store reads no further request until the guest makes room.
        consumedWhileBlocked.Should().Be(21u * 25);
        replies.Should().HaveCount(Requests).And.OnlyContain(r => r == new string('x', 1000));
    }

    [Fact]
    public async Task An_Over_Long_Header_Makes_The_Store_Ignore_That_Ring_Only()
    {
        var bad = hv.CreateDomain(new DomainConfig { Name = "bad", MemoryMiB = 4 });
        uint error = 0;
        using var noted = new SemaphoreSlim(0);
        bad.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var xs = new GuestXenStore(g);
            var header = new byte[16];
            BitConverter.TryWriteBytes(header.AsSpan(0), (uint)xsd_sockmsg_type.XS_READ);
            BitConverter.TryWriteBytes(header.AsSpan(12), 5000u);
            xs.ClearPending();
            xs.Put(header);
            xs.Notify();
            while (xs.Error == 0)
            {
                xs.Poll();
                xs.ClearPending();
            }

            error = xs.Error;
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await bad.ExitWithinAsync();
        var ring = hv.XenStore.RingOf(bad.Id)!;
        await ring.Pump.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        ring.Error.Should().Be((uint)XsWire.XENSTORE_ERROR_PROTO);
        error.Should().Be((uint)XsWire.XENSTORE_ERROR_PROTO, "xenstored's ignore_connection reports why in the page's error field");
        bad.State.Should().NotBe(DomainState.Crashed, "xenstored ignores the connection; it does not crash the domain");

        XsMessage name = default;
        GuestRunner.Run(hv, g => name = new GuestXenStore(g).Call(xsd_sockmsg_type.XS_READ, "name"), new DomainConfig { Name = "good", MemoryMiB = 4 });
        Text(name).Should().Be("good", "other domains' rings are unaffected");
        bad.Destroy();
    }

    [Fact]
    public async Task Ring_Indices_Far_Apart_Are_A_Ring_Index_Error()
    {
        var bad = hv.CreateDomain(new DomainConfig { Name = "wild", MemoryMiB = 4 });
        bad.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var xs = new GuestXenStore(g);
            var reqProd = (ulong)System.Runtime.InteropServices.Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_prod));
            g.Cpu.Memory.WriteVolatile(xs.Page + reqProd, 4, 0x10000);
            xs.Notify();
            while (xs.Error == 0)
            {
                xs.Poll();
                xs.ClearPending();
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await bad.ExitWithinAsync();
        var ring = hv.XenStore.RingOf(bad.Id)!;
        await ring.Pump.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        ring.Error.Should().Be((uint)XsWire.XENSTORE_ERROR_RINGIDX);
        bad.Destroy();
    }
}
