using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Block;

/// <summary>
/// Multi-queue (io/blkif.h: multi-queue-max-queues, multi-queue-num-queues, queue-N/ring-ref and
/// queue-N/event-channel): one ring per queue, each served on its own, and the frontend's bad
/// queue keys refused at connect with the reason in the backend's error node.
/// </summary>
public sealed class BlkBackMultiQueueTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public async Task Each_Queue_Is_A_Ring_Served_In_Parallel_With_The_Others(int queues)
    {
        const int PerQueue = 8;
        var bytes = BlockGuest.Pattern(2 << 20, 41);
        var original = (byte[])bytes.Clone();
        var dev = new GatedBlockDevice(BlockDevice.InMemory(bytes));
        dev.CloseGate();
        var d = hv.CreateDomain(BlockGuest.Config("mq"));
        await using var disk = d.AttachDisk("xvda", dev, new BlkBackOptions { MaxQueues = 4 });
        hv.XenStore.Read(disk.BackendPath + "/multi-queue-max-queues").Should().Be("4");
        var responses = new List<blkif_response>[queues];
        var pages = new byte[queues * PerQueue][];
        var writes = new short[queues];
        var failure = BlockGuest.Start(d, f =>
        {
            f.Connect(queues: queues).Should().BeTrue();
            f.Read(f.FrontendPath + "/multi-queue-num-queues").Should().Be(queues.ToString(System.Globalization.CultureInfo.InvariantCulture));
            for (var q = 0; q < queues; q++)
            {
                for (var i = 0; i < PerQueue; i++)
                {
                    var page = (q * PerQueue) + i;
                    f.GrantPage(page);
                    f.Queue(f.PageRequest((byte)Blkif.BLKIF_OP_READ, (ulong)page * 16, page, 1), q);
                }

                f.Push(q);
            }

            for (var q = 0; q < queues; q++)
            {
                responses[q] = f.WaitResponses(PerQueue, q);
            }

            for (var p = 0; p < queues * PerQueue; p++)
            {
                pages[p] = f.ReadPage(p);
            }

            // Each queue writes its own data, one after another, on its own ring.
            for (var q = 0; q < queues; q++)
            {
                writes[q] = f.WritePages(1024 + ((ulong)q * 8), 100 + q, BlockGuest.Pattern(4096, 60 + q), q);
            }
        });

        // Every queue's eight reads are in the device at once: the rings are served in parallel.
        await dev.WaitForInFlightAsync(queues * PerQueue);
        disk.Queues.Should().Be(queues);
        disk.QueueRequests.Should().Equal(Enumerable.Repeat((long)PerQueue, queues), "each ring took its own queue's eight reads");
        dev.OpenGate();
        await d.ExitWithinAsync();
        (await failure).Should().BeNull();

        for (var q = 0; q < queues; q++)
        {
            responses[q].Should().OnlyContain(r => r.status == Blkif.BLKIF_RSP_OKAY && r.operation == Blkif.BLKIF_OP_READ);
            responses[q].Select(r => r.id).Should().BeEquivalentTo(
                Enumerable.Range((q * PerQueue) + 1, PerQueue).Select(i => (ulong)i), $"queue {q}'s ring answers queue {q}'s requests");
            writes[q].Should().Be(Blkif.BLKIF_RSP_OKAY);
            bytes.AsSpan((1024 + (q * 8)) * 512, 4096).ToArray().Should().Equal(BlockGuest.Pattern(4096, 60 + q));
        }

        for (var p = 0; p < queues * PerQueue; p++)
        {
            pages[p].Should().Equal(original.AsSpan(p * 16 * 512, 4096).ToArray(), $"page {p}");
        }

        dev.MaxInFlight.Should().Be(queues * PerQueue);
        disk.Stats.Reads.Should().Be(queues * PerQueue);
        disk.Stats.Connects.Should().Be(1);
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0, "every queue's ring was unmapped");
    }

    [Fact]
    public async Task A_Bad_Request_On_One_Queue_Does_Not_Touch_Another_And_Each_Queue_Keeps_Its_Own_Grants()
    {
        var bytes = BlockGuest.Pattern(1 << 20, 42);
        var d = hv.CreateDomain(BlockGuest.Config("mqbad"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(bytes), new BlkBackOptions { MaxQueues = 2 });
        short bad = 0, good0 = 1, good1 = 1;
        await BlockGuest.RunAsync(d, f =>
        {
            f.Connect(queues: 2, persistent: true).Should().BeTrue();
            for (var i = 0; i < 4; i++)
            {
                f.GrantPage(i);
            }

            var past = f.PageRequest((byte)Blkif.BLKIF_OP_READ, 2047, 0, 4);
            bad = f.Call(past, 1).status;
            good0 = f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_READ, 0, 0, 4), 0).status;
            good1 = f.Call(f.PageRequest((byte)Blkif.BLKIF_OP_READ, 8, 0, 4), 1).status;

            // The same four grants, used on both rings: each ring maps and keeps its own.
            hv.HostGrants.MappingCount.Should().Be(2 + 4 + 4);
            disk.PersistentGrantCount.Should().Be(8);
        });

        bad.Should().Be(Blkif.BLKIF_RSP_ERROR);
        good0.Should().Be(Blkif.BLKIF_RSP_OKAY);
        good1.Should().Be(Blkif.BLKIF_RSP_OKAY);
        disk.Stats.Errors.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task A_Ring_Overrun_On_One_Queue_Crashes_The_Domain_And_Every_Ring_Goes()
    {
        var d = hv.CreateDomain(BlockGuest.Config("mqoverrun"));
        var disk = d.AttachDisk("xvda", BlockDevice.InMemory(2048), new BlkBackOptions { MaxQueues = 2 });
        _ = BlockGuest.Start(d, f =>
        {
            f.Connect(queues: 2, persistent: true).Should().BeTrue();
            f.ReadPages(0, 0, 2, q: 0).Status.Should().Be(Blkif.BLKIF_RSP_OKAY);
            f.SetRequestProducer((uint)f.RingSize + 1, q: 1);
            f.Notify(1);
            f.WaitResponses(1, 0); // never returns: the domain is crashed under it
        });

        var exit = await d.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Crashed);
        exit.Reason.Should().Contain("more than a ring");
        await disk.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        disk.Stats.ProtocolErrors.Should().Be(1);
        disk.Queues.Should().Be(0);
        hv.HostGrants.MappingCount.Should().Be(0, "both rings and queue 0's kept grants were unmapped");
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task Bad_Queue_Keys_Refuse_The_Connection_With_The_Reason()
    {
        var d = hv.CreateDomain(BlockGuest.Config("mqkeys"));
        await using var disk = d.AttachDisk("xvda", BlockDevice.InMemory(64), new BlkBackOptions { MaxQueues = 2 });
        var outcomes = new List<(bool Connected, string? Error)>();
        await BlockGuest.RunAsync(d, f =>
        {
            void Try(Action<TestBlkFront> before)
            {
                var connected = f.Connect(beforeInitialised: before);
                outcomes.Add((connected, f.ReadBackend("error")));
                hv.HostGrants.MappingCount.Should().Be(0, "a refused connection leaves no ring mapped");
                f.SwitchState(XenbusState.Closed);
                f.WaitBackend(XenbusState.Closed);
                f.WriteFrontend("multi-queue-num-queues", "1");
                f.SwitchState(XenbusState.Initialising);
            }

            Try(x => x.WriteFrontend("multi-queue-num-queues", "0"));
            Try(x => x.WriteFrontend("multi-queue-num-queues", "3"));
            Try(x => x.WriteFrontend("multi-queue-num-queues", "two"));

            // Two queues asked for, but the keys are at the top, as for one: queue-0/ring-ref is missing.
            Try(x => x.WriteFrontend("multi-queue-num-queues", "2"));

            // queue-0 complete, queue-1 without its event channel.
            Try(x =>
            {
                x.WriteFrontend("multi-queue-num-queues", "2");
                x.WriteFrontend("queue-0/ring-ref", TestBlkFront.RingRef.ToString(System.Globalization.CultureInfo.InvariantCulture));
                x.WriteFrontend("queue-0/event-channel", x.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
                x.WriteFrontend("queue-1/ring-ref", TestBlkFront.RingRef.ToString(System.Globalization.CultureInfo.InvariantCulture));
            });

            // Two queues, the second's ring a grant never made.
            Try(x =>
            {
                x.WriteFrontend("multi-queue-num-queues", "2");
                x.WriteFrontend("queue-0/ring-ref", TestBlkFront.RingRef.ToString(System.Globalization.CultureInfo.InvariantCulture));
                x.WriteFrontend("queue-0/event-channel", x.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
                x.WriteFrontend("queue-1/ring-ref", "450");
                x.WriteFrontend("queue-1/event-channel", x.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            });

            // And a good connection after all that.
            f.Connect(queues: 2).Should().BeTrue();
            f.ReadPages(0, 0, 1, q: 1).Status.Should().Be(Blkif.BLKIF_RSP_OKAY);
        });

        outcomes.Should().OnlyContain(o => !o.Connected);
        outcomes[0].Error.Should().Contain("multi-queue-num-queues '0'").And.Contain("1 to 2 queues");
        outcomes[1].Error.Should().Contain("multi-queue-num-queues '3'");
        outcomes[2].Error.Should().Contain("multi-queue-num-queues 'two'");
        outcomes[3].Error.Should().Contain("frontend key 'queue-0/ring-ref' is missing");
        outcomes[4].Error.Should().Contain("frontend key 'queue-1/event-channel' is missing");
        outcomes[5].Error.Should().Contain("queue 1").And.Contain("grant 450");
        disk.Stats.Connects.Should().Be(1);
        d.Destroy();
        await disk.Detached.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        hv.HostGrants.MappingCount.Should().Be(0, "no refused connection left a ring mapped");
    }
}
