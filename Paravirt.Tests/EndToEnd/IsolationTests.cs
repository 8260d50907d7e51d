using Paravirt.Cli;
using Paravirt.Cli.Guests;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// The fork-bomb problem: a guest that takes memory, event channels, grant frames and XenStore nodes
/// without end meets its own limits, each with Xen's answer, while neighbours beside it — one started
/// with it, one started while it holds everything it took — do block I/O, XenStore and event work to
/// the end. No timing is asserted: only who got what.
/// </summary>
public sealed class IsolationTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 192 });
    private readonly string dir = Directory.CreateTempSubdirectory("paravirt-isolation-").FullName;

    public void Dispose()
    {
        hv.Dispose();
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>A domain with its console lines collected as they come.</summary>
    private sealed class Watched
    {
        private readonly List<string> _lines = [];
        private readonly List<(string Text, TaskCompletionSource Seen)> _waits = [];

        public Watched(Domain domain)
        {
            Domain = domain;
            Reader = Task.Run(async () =>
            {
                await foreach (var line in domain.Console.ReadLinesAsync())
                {
                    lock (_lines)
                    {
                        _lines.Add(line);
                        foreach (var w in _waits.Where(w => line.StartsWith(w.Text, StringComparison.Ordinal)).ToList())
                        {
                            w.Seen.TrySetResult();
                            _waits.Remove(w);
                        }
                    }
                }
            });
        }

        public Domain Domain { get; }

        public Task Reader { get; }

        public List<string> Lines
        {
            get
            {
                lock (_lines)
                {
                    return [.. _lines];
                }
            }
        }

        public async Task WaitForLineAsync(string start)
        {
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_lines)
            {
                if (_lines.Any(l => l.StartsWith(start, StringComparison.Ordinal)))
                {
                    return;
                }

                _waits.Add((start, seen));
            }

            try
            {
                await seen.Task.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"{Domain.Name} did not print '{start}' within {GuestRunner.Timeout.TotalSeconds} s; it is {Domain.State} ({Domain.Exit?.Reason}) and printed: {string.Join(" | ", Lines)}");
            }
        }
    }

    private string FileDisk(int bytes)
    {
        var path = Path.Combine(dir, $"{Guid.NewGuid():N}.img");
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    private IReadOnlyList<string> Children(string path)
    {
        try
        {
            return hv.XenStore.Directory(path);
        }
        catch (XenStoreException)
        {
            return [];
        }
    }

    [Fact]
    public async Task A_Fork_Bomb_Meets_Each_Of_Its_Own_Limits_With_Xens_Answer_While_Two_Neighbours_Complete_Their_Work()
    {
        const int Bytes = 1 << 20;

        // The bomb and neighbour A start together.
        var bomb = hv.CreateDomain(new DomainConfig { Name = "bomb", MemoryMiB = 8, MaxMemoryMiB = 12, CommandLine = "hold" });
        var a = hv.CreateDomain(new DomainConfig { Name = "a", MemoryMiB = 16, CommandLine = $"bytes={Bytes} keys=150 events=250 seed=5" });
        var pathA = FileDisk(2 << 20);
        var diskA = a.AttachDisk("xvda", BlockDevice.OpenFile(pathA, writable: true));
        var wb = new Watched(bomb);
        var wa = new Watched(a);
        bomb.Start(new BombGuest());
        a.Start(new WorkerGuest());

        await wb.WaitForLineAsync("bomb: every resource ran out; holding it all");

        // While the bomb holds all it could take, it holds exactly its limits, and no more.
        bomb.TotalPages.Should().Be(bomb.MaxPages, "memory stops at max_pages (maxmem)");
        bomb.MaxPages.Should().Be(12 * 256);
        bomb.Events.ActiveCount.Should().Be(bomb.Limits.MaxEventChannels, "ports 1 to max_evtchn_port (xl's event_channels, 1023) are all taken; port 0 is reserved");
        bomb.Grants.FrameCount.Should().Be(bomb.Limits.MaxGrantFrames, "the grant table grew to max_grant_frames");
        var limits = BombReport.Parse(wb.Lines);
        limits.Keys.Should().BeEquivalentTo(["memory", "event-channels", "grant-frames", "xenstore"]);
        limits["memory"].Answer.Should().Be("0 of 1 extents", "XENMEM_increase_reservation answers the extents it did");
        limits["memory"].Count.Should().Be(4 * 256, "maxmem 12 MiB less memory 8 MiB");
        limits["event-channels"].Answer.Should().Be("-ENOSPC (-28)");
        limits["grant-frames"].Answer.Should().Be("-EINVAL (-22)");
        limits["grant-frames"].Count.Should().Be(bomb.Limits.MaxGrantFrames - 1, "the runtime had set up frame 0");
        limits["xenstore"].Answer.Should().Be("-ENOSPC (-28)");
        var bombData = HostXenStore.DomainPath(bomb.Id) + "/data/bomb";
        Children(bombData).Sum(d => 1 + Children($"{bombData}/{d}").Count).Should().Be(limits["xenstore"].Count, "the store holds every node the bomb says it made");

        // Neighbour B starts now, beside a bomb that holds everything it took.
        var b = hv.CreateDomain(new DomainConfig { Name = "b", MemoryMiB = 16, CommandLine = $"bytes={Bytes} keys=300 events=400 seed=6" });
        var bytesB = new byte[2 << 20];
        var diskB = b.AttachDisk("xvda", BlockDevice.InMemory(bytesB));
        var wbb = new Watched(b);
        b.Start(new WorkerGuest());

        foreach (var (w, keys, events) in new[] { (wa, 150, 250), (wbb, 300, 400) })
        {
            var exit = await w.Domain.ExitWithinAsync();
            exit.State.Should().Be(DomainState.Shutdown, $"{w.Domain.Name} completes: {exit.Reason}; it printed {string.Join(" | ", w.Lines)}");
            exit.ShutdownCode.Should().Be(Core.Abi.Sched.SHUTDOWN_poweroff);
            var data = HostXenStore.DomainPath(w.Domain.Id) + "/data/worker";
            Enumerable.Range(0, keys).Select(i => hv.XenStore.Read($"{data}/k{i}")).Should().Equal(Enumerable.Range(0, keys).Select(i => $"v{i}"));
            await w.WaitForLineAsync("result ok");
            w.Lines.Should().Contain($"result xenstore: {keys} keys written and read back")
                .And.Contain(l => l.StartsWith($"result events: {events} sent and {events} received", StringComparison.Ordinal))
                .And.Contain($"result block vbd 51712: wrote {Bytes} bytes, flushed, read back: match");
        }

        bomb.State.Should().Be(DomainState.Running, "the bomb still holds everything while the neighbours finish");

        // Told to go on, the bomb crashes itself; nobody else is touched.
        await bomb.Console.Input.WriteAsync("go\n"u8.ToArray(), TestContext.Current.CancellationToken);
        var bombExit = await bomb.ExitWithinAsync();
        bombExit.State.Should().Be(DomainState.Crashed, bombExit.Reason);
        a.State.Should().Be(DomainState.Shutdown);
        b.State.Should().Be(DomainState.Shutdown);

        foreach (var d in new[] { bomb, a, b })
        {
            d.Destroy();
        }

        await diskA.DisposeAsync();
        await diskB.DisposeAsync();
        await Task.WhenAll(wb.Reader, wa.Reader, wbb.Reader).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        wb.Lines.Should().Contain("bomb: every resource ran out; crashing on purpose");

        // The host's own look at both disks, and at its memory.
        var fileA = await File.ReadAllBytesAsync(pathA, TestContext.Current.CancellationToken);
        fileA.AsSpan(0, Bytes).SequenceEqual(DiskPattern.Make(Bytes, 0, 5)).Should().BeTrue("A's image holds what A wrote");
        bytesB.AsSpan(0, Bytes).SequenceEqual(DiskPattern.Make(Bytes, 0, 6)).Should().BeTrue("B's disk holds what B wrote");
        hv.FreeFrames.Should().Be(hv.TotalFrames, "every frame the bomb took came back");
    }

    [Fact]
    public async Task Limits_Are_Per_Domain_A_Tighter_Bomb_Stops_At_Its_Own_Lower_Limits()
    {
        var limits = DomainLimits.Default with { MaxEventChannels = 64, MaxGrantFrames = 4 };
        var bomb = hv.CreateDomain(new DomainConfig { Name = "tight", MemoryMiB = 8, MaxMemoryMiB = 9, Limits = limits });
        var neighbour = hv.CreateDomain(new DomainConfig { Name = "roomy", MemoryMiB = 8, MaxMemoryMiB = 10, CommandLine = "hold" });
        var wt = new Watched(bomb);
        var wn = new Watched(neighbour);
        bomb.Start(new BombGuest());
        neighbour.Start(new BombGuest());

        var exit = await bomb.ExitWithinAsync();
        exit.State.Should().Be(DomainState.Crashed);
        await wn.WaitForLineAsync("bomb: every resource ran out; holding it all");
        await wt.WaitForLineAsync("bomb: every resource ran out; crashing on purpose");
        var tight = BombReport.Parse(wt.Lines);
        var roomy = BombReport.Parse(wn.Lines);

        tight["memory"].Count.Should().Be(256);
        roomy["memory"].Count.Should().Be(512);
        tight["grant-frames"].Count.Should().Be(3);
        tight["grant-frames"].Line.Should().EndWith("GNTTABOP_query_size says 4 of max 4");
        roomy["grant-frames"].Count.Should().Be(63);
        (roomy["event-channels"].Count - tight["event-channels"].Count).Should().Be(1023 - 64, "each domain stops at its own max_event_channels");
        neighbour.Events.ActiveCount.Should().Be(1023);

        await neighbour.Console.Input.WriteAsync("go\n"u8.ToArray(), TestContext.Current.CancellationToken);
        (await neighbour.ExitWithinAsync()).State.Should().Be(DomainState.Crashed);
    }
}
