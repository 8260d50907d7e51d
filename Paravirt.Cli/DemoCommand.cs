using System.CommandLine;
using System.Globalization;
using System.Text.RegularExpressions;
using Paravirt.Cli.Guests;
using Paravirt.Cli.Host;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt demo</c>, the README's main job: three managed guests on one hypervisor — two
/// well-behaved workers, each with a console, a disk and a vif on one switch, and a fork bomb — their console lines
/// prefixed by domain name, then one check line per step, then the domain table. Exit 0 only when
/// every check held.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var command = new Command(
            "demo",
            "Boot three managed guests on one hypervisor: two workers doing block I/O (write, flush, read back, compare; checked by the host too), "
            + "XenStore and event work, then ping each other over a virtual switch (every reply checked, the host pings too), and a fork bomb that takes memory, event channels, grant frames and XenStore nodes until each limit "
            + "answers, then crashes, while the others complete. Prints the guests' consoles, a check line per step, and the domain table. "
            + "Exit codes: 0 every check passed; 1 bad command line; 8 a check failed (its line says why).");
        command.SetAction((parse, ct) => RunAsync(parse.InvocationConfiguration.Output, ct));
        return command;
    }

    public static async Task<int> RunAsync(TextWriter output, CancellationToken ct)
    {
        await using var demo = new Demo(TextWriter.Synchronized(output));
        return await demo.RunAsync(ct).ConfigureAwait(false);
    }
}

/// <summary>A failed demo check: the message says what was expected and what was seen.</summary>
internal sealed class CheckFailedException(string message) : Exception(message);

/// <summary>One step of the demo: a name and a check that returns what it saw, or throws <see cref="CheckFailedException"/>.</summary>
/// <param name="Required">A failure stops the demo (later steps need this one).</param>
internal sealed record DemoStep(string Name, Func<CancellationToken, Task<string>> Check, bool Required = false);

/// <summary>A guest the demo boots.</summary>
/// <param name="IsBomb">The misbehaving guest (expected to crash after hitting its limits); the others are expected to power off.</param>
/// <param name="Mac">The MAC of its vif on the demo's switch <c>br0</c>, or null for no vif.</param>
internal sealed record DemoGuest(DomainConfig Config, bool IsBomb, Func<GuestLedger, Core.Cpu.ManagedKernel> Kernel, int DiskBytes, bool FileDisk, ulong Seed, MacAddress? Mac = null);

/// <summary>The demo's hypervisor, guests and steps.</summary>
internal sealed class Demo : IAsyncDisposable
{
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private const int WorkerBytes = 1 << 20;
    private const int Pings = 200;
    private static readonly MacAddress AlphaMac = MacAddress.Parse("00:16:3e:de:00:01");
    private static readonly MacAddress BetaMac = MacAddress.Parse("00:16:3e:de:00:02");
    private static readonly MacAddress HostMac = MacAddress.Parse("00:16:3e:de:00:ff");
    private readonly TextWriter _out;
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 160 });
    private readonly List<Booted> _booted = [];
    private readonly string _dir = Directory.CreateTempSubdirectory("paravirt-demo-").FullName;
    private IReadOnlyList<DomainRow> _table = [];
    private Task<string>? _hostPing;

    public Demo(TextWriter output)
    {
        _out = output;
        Guests =
        [
            // alpha and beta also have a vif on br0 each and ping each other (the network step).
            new(new DomainConfig { Name = "alpha", MemoryMiB = 16, CommandLine = $"bytes={WorkerBytes} keys=50 events=100 seed=11 pings={Pings} peer={BetaMac}" },
                IsBomb: false, l => new WorkerGuest(l), 4 << 20, FileDisk: true, Seed: 11, AlphaMac),
            new(new DomainConfig { Name = "beta", MemoryMiB = 16, CommandLine = $"bytes={WorkerBytes} keys=200 events=300 seed=22 pings={Pings} peer={AlphaMac}" },
                IsBomb: false, l => new WorkerGuest(l), 2 << 20, FileDisk: false, Seed: 22, BetaMac),
            new(new DomainConfig { Name = "bomb", MemoryMiB = 8, MaxMemoryMiB = 10 }, IsBomb: true, _ => new BombGuest(), 0, FileDisk: false, Seed: 0),
        ];
        Steps =
        [
            new("boot", BootAsync, Required: true),
            new("guests end", EndAsync, Required: true),
            new("consoles", ConsolesAsync),
            new("block", BlockAsync),
            new("xenstore and events", XenStoreAndEventsAsync),
            new("network", NetworkAsync),
            new("isolation", IsolationAsync),
            new("metering", MeteringAsync),
        ];
    }

    /// <summary>The guests <c>boot</c> starts (a list, so a step of another area can add its own).</summary>
    public List<DemoGuest> Guests { get; }

    /// <summary>The steps, in order (a list, so another area's step slots in).</summary>
    public List<DemoStep> Steps { get; }

    /// <summary>Runs each step, printing a check line for each, then the verdict and the table; 0 when all passed.</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        await _out.WriteLineAsync($"paravirt demo: {Guests.Count} managed guests on one hypervisor ({_hv.Version}); consoles are prefixed by domain name").ConfigureAwait(false);
        var failed = new List<string>();
        var ran = 0;
        foreach (var step in Steps)
        {
            ran++;
            string line;
            try
            {
                var seen = await step.Check(ct).ConfigureAwait(false);
                line = $"check {step.Name}: ok: {seen}";
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A check's own failure, or anything a step ran into (a guest that never answered, an I/O error): the step failed.
                line = $"check {step.Name}: FAILED: {(e is CheckFailedException ? "" : e.GetType().Name + ": ")}{e.Message}";
                failed.Add(step.Name);
            }

            await _out.WriteLineAsync(line).ConfigureAwait(false);
            if (failed.Count > 0 && step.Required)
            {
                break;
            }
        }

        await _out.WriteLineAsync(failed.Count == 0
            ? $"demo: all {Steps.Count} checks passed"
            : $"demo: FAILED: {failed.Count} of {ran} checks run failed ({string.Join(", ", failed)})").ConfigureAwait(false);
        await _out.WriteLineAsync().ConfigureAwait(false);
        DomainTable.WriteText(_out, _table.Count > 0 ? _table : DomainTable.Snapshot(_hv, Environment.ProcessId), withHost: false);
        return failed.Count == 0 ? ExitCodes.Ok : ExitCodes.CheckFailed;
    }

    private Booted Get(string name) => _booted.Single(b => b.Guest.Config.Name == name);

    private static void Expect(bool condition, string failure)
    {
        if (!condition)
        {
            throw new CheckFailedException(failure);
        }
    }

    // ---------------------------------------------------------------- steps

    private Task<string> BootAsync(CancellationToken ct)
    {
        foreach (var g in Guests)
        {
            var dom = _hv.CreateDomain(g.Config);
            var ledger = new GuestLedger();
            BlkBack? disk = null;
            string? path = null;
            byte[]? memory = null;
            if (g.DiskBytes > 0)
            {
                IBlockDevice device;
                if (g.FileDisk)
                {
                    path = Path.Combine(_dir, $"{g.Config.Name}.img");
                    using (var f = File.Create(path))
                    {
                        f.SetLength(g.DiskBytes);
                    }

                    device = BlockDevice.OpenFile(path, writable: true);
                }
                else
                {
                    memory = new byte[g.DiskBytes];
                    device = BlockDevice.InMemory(memory);
                }

                disk = dom.AttachDisk("xvda", device);
            }

            var vif = g.Mac is { } mac ? dom.AttachNic(_hv.Switch("br0"), new NicOptions { Mac = mac }) : null;
            var booted = new Booted(g, dom, ledger, disk, path, memory) { Vif = vif };
            booted.Console = PrintConsoleAsync(booted);
            _booted.Add(booted);
        }

        foreach (var b in _booted)
        {
            b.Domain.Start(new MeteredKernel(b.Guest.Kernel(b.Ledger), b.Ledger));
        }

        if (_booted.Any(b => b.Vif is not null))
        {
            _hostPing = HostPingAsync(ct);
        }

        return Task.FromResult(string.Join(", ", _booted.Select(b =>
            $"{b.Domain.Name} (domain {b.Domain.Id}, {b.Guest.Config.MemoryMiB}{(b.Guest.Config.MaxMemoryMiB is { } m ? $"..{m}" : "")} MiB{(b.Disk is null ? "" : b.Path is null ? ", xvda in memory" : ", xvda a file")}{(b.Vif is null ? "" : $", vif {b.Vif.Mac} on br0")})")) + " started");
    }

    private async Task PrintConsoleAsync(Booted b)
    {
        await foreach (var line in b.Domain.Console.ReadLinesAsync().ConfigureAwait(false))
        {
            lock (b.Lines)
            {
                b.Lines.Add(line);
            }

            await _out.WriteLineAsync($"[{b.Domain.Name}] {line}").ConfigureAwait(false);
        }
    }

    private async Task<string> EndAsync(CancellationToken ct)
    {
        foreach (var b in _booted)
        {
            try
            {
                b.Exit = await b.Domain.WaitForShutdownAsync(ct).WaitAsync(Bound, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new CheckFailedException($"{b.Domain.Name} did not end within {Bound.TotalSeconds} s (state {b.Domain.State})");
            }
        }

        // What the host checks on the living (ended, not yet destroyed) domains: table, XenStore, memory.
        _table = DomainTable.Snapshot(_hv, Environment.ProcessId);
        foreach (var b in _booted)
        {
            b.TotalPages = b.Domain.TotalPages;
            b.MaxPages = b.Domain.MaxPages;
            var data = Core.XenStore.HostXenStore.DomainPath(b.Domain.Id) + "/data";
            b.WorkerKeys = Children(data + "/worker").ToDictionary(k => k, k => _hv.XenStore.Read($"{data}/worker/{k}") ?? "");
            b.BombNodes = Children(data + "/bomb").Sum(d => 1 + Children($"{data}/bomb/{d}").Count);
        }

        foreach (var b in _booted)
        {
            b.Domain.Destroy();
            if (b.Disk is not null)
            {
                await b.Disk.DisposeAsync().ConfigureAwait(false);
            }

            if (b.Vif is not null)
            {
                await b.Vif.DisposeAsync().ConfigureAwait(false);
            }

            await b.Console!.WaitAsync(Bound, ct).ConfigureAwait(false);
        }

        var failures = _booted.Where(b => b.Guest.IsBomb
            ? b.Exit!.State != DomainState.Crashed
            : b.Exit!.State != DomainState.Shutdown || b.Exit.ShutdownCode != Core.Abi.Sched.SHUTDOWN_poweroff).ToList();
        Expect(failures.Count == 0, string.Join("; ", failures.Select(b => $"{b.Domain.Name} ended {b.Exit!.State} ({b.Exit.Reason})")));
        return string.Join(", ", _booted.Select(b => $"{b.Domain.Name} {(b.Exit!.State == DomainState.Crashed ? "crashed as it meant to" : "powered off")}"));
    }

    private IReadOnlyList<string> Children(string path)
    {
        try
        {
            return _hv.XenStore.Directory(path);
        }
        catch (Core.XenStore.XenStoreException)
        {
            return [];
        }
    }

    private Task<string> ConsolesAsync(CancellationToken ct)
    {
        foreach (var b in _booted)
        {
            var lines = b.Snapshot();
            var last = b.Guest.IsBomb ? "bomb: every resource ran out; crashing on purpose" : "result ok";
            Expect(lines.Contains(last), $"{b.Domain.Name}'s console has no line '{last}' (it printed {lines.Count} lines)");
        }

        return Task.FromResult(string.Join(", ", _booted.Select(b => $"{b.Domain.Name} {b.Snapshot().Count} lines")));
    }

    private Task<string> BlockAsync(CancellationToken ct)
    {
        var seen = new List<string>();
        foreach (var b in _booted.Where(b => b.Disk is not null))
        {
            var guestSays = b.Snapshot().FirstOrDefault(l => l.StartsWith("result block vbd 51712:", StringComparison.Ordinal));
            Expect(guestSays is not null && guestSays.EndsWith("read back: match", StringComparison.Ordinal),
                $"{b.Domain.Name} did not report a matching roundtrip (its line: '{guestSays}')");

            // The host's own look at the disk: the bytes the guest wrote, from the same generator.
            var image = b.Path is not null ? File.ReadAllBytes(b.Path) : b.Memory!;
            var expected = DiskPattern.Make(WorkerBytes, 0, b.Guest.Seed);
            var same = image.AsSpan(0, WorkerBytes).CommonPrefixLength(expected);
            Expect(same == WorkerBytes, $"{b.Domain.Name}'s disk differs from what the guest wrote at byte {same}");
            var stats = b.Disk!.Stats;
            Expect(stats.BytesWritten == WorkerBytes && stats.BytesRead == WorkerBytes && stats.Errors == 0 && stats.Flushes >= 1,
                $"{b.Domain.Name}'s blkback served {stats.BytesWritten} bytes written, {stats.BytesRead} read, {stats.Flushes} flushes, {stats.Errors} errors; expected {WorkerBytes}, {WorkerBytes}, at least 1, 0");
            seen.Add($"{b.Domain.Name} wrote, flushed and read back {WorkerBytes} bytes and the host finds them on its {(b.Path is null ? "in-memory disk" : "disk file")}");
        }

        return Task.FromResult(string.Join("; ", seen));
    }

    private Task<string> XenStoreAndEventsAsync(CancellationToken ct)
    {
        var seen = new List<string>();
        foreach (var b in _booted.Where(b => !b.Guest.IsBomb))
        {
            var args = new GuestArgs(b.Guest.Config.CommandLine);
            var keys = (int)args.Get("keys", 0);
            var events = (int)args.Get("events", 0);
            Expect(b.WorkerKeys.Count == keys && Enumerable.Range(0, keys).All(i => b.WorkerKeys.GetValueOrDefault($"k{i}") == $"v{i}"),
                $"{b.Domain.Name}: the host finds {b.WorkerKeys.Count} of {keys} keys under data/worker with the values written");
            var line = b.Snapshot().FirstOrDefault(l => l.StartsWith("result events:", StringComparison.Ordinal));
            Expect(line is not null && line.StartsWith($"result events: {events} sent and {events} received", StringComparison.Ordinal),
                $"{b.Domain.Name}: expected '{events} sent and {events} received', it said '{line}'");
            Expect(b.Domain.Meter.EventsReceived >= events, $"{b.Domain.Name}: the meter counts {b.Domain.Meter.EventsReceived} events received, fewer than the {events} looped");
            seen.Add($"{b.Domain.Name} {keys} keys (host read them back), {events} events looped");
        }

        return Task.FromResult(string.Join("; ", seen));
    }

    /// <summary>
    /// Runs beside the guests: once every vif is connected, the host plugs its own port into br0 and
    /// sends alpha one ping, then writes each vif guest's <c>data/go</c> (so no guest sends before
    /// every vif is on the switch), and waits for alpha's pong, checked like the guests check theirs.
    /// </summary>
    private async Task<string> HostPingAsync(CancellationToken ct)
    {
        var vifs = _booted.Where(b => b.Vif is not null).ToList();
        var target = vifs[0];
        try
        {
            foreach (var b in vifs)
            {
                try
                {
                    await b.Vif!.WaitForConnectAsync(ct).WaitAsync(Bound, ct).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    throw new CheckFailedException($"{b.Domain.Name}'s vif did not connect within {Bound.TotalSeconds} s (state {b.Vif!.State})");
                }
            }

            using var port = _hv.Switch("br0").ConnectHost(HostMac);
            var to = new byte[6];
            target.Vif!.Mac.Write(to);
            var from = new byte[6];
            HostMac.Write(from);
            var frame = new byte[VirtualSwitch.MaxFrameBytes];
            var payload = new byte[PingProtocol.MaxPayload];
            const int Seq = 7;
            const ulong Seed = 99;
            var length = PingProtocol.Payload(payload, Seed, Seq);
            var sent = PingProtocol.Build(frame, to, from, PingProtocol.Ping, Seq, payload.AsSpan(0, length));
            port.Send(frame.AsSpan(0, sent));
            Go(vifs);

            // Frames between the guests are flooded to the host's port too until the switch has learned
            // where their destination is: skip what is not addressed to the host.
            var reply = new byte[VirtualSwitch.MaxFrameBytes];
            using var within = CancellationTokenSource.CreateLinkedTokenSource(ct);
            within.CancelAfter(Bound);
            int n, skipped = 0;
            try
            {
                while (MacAddress.Read((n = await port.ReceiveAsync(reply, within.Token).ConfigureAwait(false)) >= 6 ? reply : new byte[6]) != HostMac)
                {
                    skipped++;
                }
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new CheckFailedException($"the host's ping to {target.Domain.Name} got no answer within {Bound.TotalSeconds} s");
            }

            var parsed = PingProtocol.Parse(reply, n, out var why) ?? throw new CheckFailedException($"the host received {why}");
            Expect(MacAddress.Read(reply.AsSpan(6)) == target.Vif.Mac && MacAddress.Read(reply) == HostMac,
                $"the host's answer came from {MacAddress.Read(reply.AsSpan(6))} to {MacAddress.Read(reply)}; expected {target.Vif.Mac} to {HostMac}");
            Expect(parsed.Kind == PingProtocol.Pong && parsed.Seq == Seq && parsed.Length == length && reply.AsSpan(PingProtocol.Meta, length).SequenceEqual(payload.AsSpan(0, length)),
                $"the host's ping {Seq} ({length} bytes) was answered by kind {parsed.Kind} seq {parsed.Seq} ({parsed.Length} bytes), not its pong byte for byte");
            return $"the host's ping through ConnectHost({HostMac}) came back from {target.Domain.Name} byte for byte ({sent} bytes; {skipped} flooded frames for others skipped)";
        }
        finally
        {
            Go(vifs); // also when the host's part failed: the guests must not wait for a go that never comes
        }
    }

    private void Go(IEnumerable<Booted> guests)
    {
        foreach (var b in guests)
        {
            try
            {
                _hv.XenStore.Write(Core.XenStore.HostXenStore.DomainPath(b.Domain.Id) + "/data/go", "1");
            }
            catch (Core.XenStore.XenStoreException)
            {
                // The domain is gone already.
            }
        }
    }

    private async Task<string> NetworkAsync(CancellationToken ct)
    {
        var vifs = _booted.Where(b => b.Vif is not null).ToList();
        Expect(vifs.Count > 0 && _hostPing is not null, "no guest has a vif");
        var seen = new List<string>();
        foreach (var b in vifs)
        {
            var line = b.Snapshot().FirstOrDefault(l => l.StartsWith("result network:", StringComparison.Ordinal));
            var args = new GuestArgs(b.Guest.Config.CommandLine);
            var pings = args.Get("pings", 0);
            Expect(line is not null && line.StartsWith($"result network: {pings} pings to {args.Get("peer", "")} answered and checked", StringComparison.Ordinal),
                $"{b.Domain.Name}: expected '{pings} pings to … answered and checked', it said '{line}'");
            var stats = b.Vif!.Stats;
            var l = b.Ledger;
            var m = b.Domain.Meter;
            Expect(stats.TxErrors + stats.RxErrors + stats.TxDropped + stats.ProtocolErrors == 0,
                $"{b.Domain.Name}'s netback saw {stats.TxErrors} tx errors, {stats.RxErrors} rx errors, {stats.TxDropped} dropped, {stats.ProtocolErrors} protocol errors; expected none");
            Expect(stats.TxPackets == l.NetFramesSent && stats.RxPackets == l.NetFramesReceived,
                $"{b.Domain.Name}: netback carried {stats.TxPackets}/{stats.RxPackets} frames out/in, the guest counted {l.NetFramesSent}/{l.NetFramesReceived}");
            Expect(m.NetBytesSent == l.NetBytesSent && m.NetBytesReceived == l.NetBytesReceived,
                $"{b.Domain.Name}: the meter counts {m.NetBytesSent}/{m.NetBytesReceived} network bytes sent/received, the guest {l.NetBytesSent}/{l.NetBytesReceived}");
            seen.Add(string.Create(CultureInfo.InvariantCulture,
                $"{b.Domain.Name} sent {l.NetFramesSent} frames ({l.NetBytesSent} bytes) and received {l.NetFramesReceived} ({l.NetBytesReceived} bytes) = meter"));
        }

        var host = await _hostPing!.WaitAsync(Bound, ct).ConfigureAwait(false);
        return $"{string.Join(" and ", vifs.Select(b => b.Domain.Name))} pinged each other {Pings} times each over br0, every pong checked (seq, length, FNV-1a, bytes); "
            + string.Join("; ", seen) + "; " + host;
    }

    private Task<string> IsolationAsync(CancellationToken ct)
    {
        var bomb = _booted.Single(b => b.Guest.IsBomb);
        var limits = BombReport.Parse(bomb.Snapshot());
        var seen = new List<string>();
        foreach (var (resource, answer) in BombReport.Expected)
        {
            Expect(limits.TryGetValue(resource, out var hit), $"the bomb reported no '{resource}' limit");
            Expect(hit!.Answer.StartsWith(answer, StringComparison.Ordinal), $"{resource}: Xen answered '{hit.Answer}'; expected {answer}");
            seen.Add($"{resource} {hit.Answer} after {hit.Count}");
        }

        Expect(bomb.TotalPages == bomb.MaxPages, $"the bomb holds {bomb.TotalPages} pages; expected its maximum {bomb.MaxPages}");
        Expect(bomb.BombNodes == limits["xenstore"].Count, $"the host finds {bomb.BombNodes} nodes under the bomb's data/bomb; it reported {limits["xenstore"].Count}");
        Expect(bomb.Exit!.State == DomainState.Crashed, $"the bomb ended {bomb.Exit.State}; expected Crashed");
        var others = _booted.Where(b => b != bomb).Select(b => b.Domain.Name);
        return Task.FromResult($"bomb: {string.Join(", ", seen)}; holds {bomb.TotalPages} = max_pages; crashed; {string.Join(" and ", others)} completed beside it");
    }

    private Task<string> MeteringAsync(CancellationToken ct)
    {
        var seen = new List<string>();
        foreach (var b in _booted)
        {
            var m = b.Domain.Meter;
            var l = b.Ledger;
            Expect(m.TotalHypercalls == l.TotalHypercalls, $"{b.Domain.Name}: the meter counts {m.TotalHypercalls} hypercalls, the guest made {l.TotalHypercalls}");
            for (var nr = 0; nr <= DomainMeter.HypercallSlots; nr++)
            {
                Expect(m.Hypercalls(nr) == l.Hypercalls(nr), $"{b.Domain.Name}: hypercall {nr}: the meter counts {m.Hypercalls(nr)}, the guest made {l.Hypercalls(nr)}");
            }

            Expect(m.EventsSent == l.EventsSent, $"{b.Domain.Name}: the meter counts {m.EventsSent} events sent, the guest's EVTCHNOP_send succeeded {l.EventsSent} times");
            Expect(m.BlockBytesRead == l.BlockBytesRead && m.BlockBytesWritten == l.BlockBytesWritten,
                $"{b.Domain.Name}: the meter counts {m.BlockBytesRead}/{m.BlockBytesWritten} block bytes read/written, the guest {l.BlockBytesRead}/{l.BlockBytesWritten}");
            Expect(m.NetBytesSent == l.NetBytesSent && m.NetBytesReceived == l.NetBytesReceived,
                $"{b.Domain.Name}: the meter counts {m.NetBytesSent}/{m.NetBytesReceived} network bytes sent/received, the guest {l.NetBytesSent}/{l.NetBytesReceived}");
            Expect(b.Domain.CpuTimeNs > 0, $"{b.Domain.Name}: no CPU time metered");
            seen.Add(string.Create(CultureInfo.InvariantCulture, $"{b.Domain.Name} {m.TotalHypercalls} hypercalls, {m.EventsSent} sends, {m.BlockBytesWritten} bytes written, {m.NetBytesSent} network bytes sent"));
        }

        return Task.FromResult("meter = guest's own count: " + string.Join("; ", seen));
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var b in _booted)
        {
            b.Domain.Destroy();
            if (b.Disk is not null)
            {
                await b.Disk.DisposeAsync().ConfigureAwait(false);
            }

            if (b.Vif is not null)
            {
                await b.Vif.DisposeAsync().ConfigureAwait(false);
            }
        }

        if (_hostPing is not null)
        {
            try
            {
                await _hostPing.ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Reported by the network step, if it ran.
            }
        }

        _hv.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private sealed class Booted(DemoGuest guest, Domain domain, GuestLedger ledger, BlkBack? disk, string? path, byte[]? memory)
    {
        public DemoGuest Guest { get; } = guest;

        public Domain Domain { get; } = domain;

        public GuestLedger Ledger { get; } = ledger;

        public BlkBack? Disk { get; } = disk;

        public NetBack? Vif { get; init; }

        public string? Path { get; } = path;

        public byte[]? Memory { get; } = memory;

        public List<string> Lines { get; } = [];

        public Task? Console { get; set; }

        public DomainExit? Exit { get; set; }

        public long TotalPages { get; set; }

        public long MaxPages { get; set; }

        public Dictionary<string, string> WorkerKeys { get; set; } = [];

        public int BombNodes { get; set; }

        public List<string> Snapshot()
        {
            lock (Lines)
            {
                return [.. Lines];
            }
        }
    }
}

/// <summary>The bomb's <c>limit …</c> lines, read back by a host.</summary>
internal static partial class BombReport
{
    /// <summary>Each resource and the start of the answer Xen 4.17 gives at its limit.</summary>
    public static IReadOnlyList<(string Resource, string Answer)> Expected { get; } =
    [
        ("memory", "0 of 1 extents"),           // XENMEM_increase_reservation: the extents done, not an errno
        ("event-channels", "-ENOSPC"),          // get_free_port past max_evtchns
        ("grant-frames", "-EINVAL"),            // gnttab_map_frame past max_grant_frames
        ("xenstore", "-ENOSPC"),                // quota_nb_entry_per_domain
    ];

    public sealed record Hit(string Operation, string Answer, int Count, string Line);

    public static Dictionary<string, Hit> Parse(IEnumerable<string> lines)
    {
        var hits = new Dictionary<string, Hit>(StringComparer.Ordinal);
        foreach (var line in lines)
        {
            var m = LineRegex().Match(line);
            if (m.Success)
            {
                hits[m.Groups["resource"].Value] = new Hit(m.Groups["op"].Value, m.Groups["answer"].Value,
                    int.Parse(m.Groups["count"].Value, CultureInfo.InvariantCulture), line);
            }
        }

        return hits;
    }

    [GeneratedRegex(BombGuest.LinePattern)]
    private static partial Regex LineRegex();
}
