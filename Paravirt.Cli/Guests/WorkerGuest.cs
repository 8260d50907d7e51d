using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:worker</c>: a well-behaved neighbour. On each writable disk it writes <c>bytes=</c>
/// (default 256 KiB) of <see cref="DiskPattern"/> with <c>seed=</c> from byte 0, flushes, reads back
/// and compares; it writes <c>keys=</c> (default 100) XenStore nodes <c>data/worker/kN = vN</c> and
/// reads each back; and it sends <c>events=</c> (default 200) events over a loopback interdomain
/// channel to itself, one at a time, waiting for each. Each result is a console line
/// <c>result …</c>; any mismatch throws, which crashes the domain with the reason.
/// </summary>
internal sealed class WorkerGuest(GuestLedger? ledger = null) : GuestKernel
{
    public WorkerGuest()
        : this(null)
    {
    }

    protected override void Run(GuestRuntime rt)
    {
        var args = new GuestArgs(rt.CommandLine);
        var bytes = (int)args.Get("bytes", 256 * 1024);
        var keys = (int)args.Get("keys", 100);
        var events = (int)args.Get("events", 200);
        var seed = (ulong)args.Get("seed", 1);
        var self = rt.XenBus.DomainId;
        rt.Out.WriteLine($"worker in domain {self}: {bytes} bytes per disk, {keys} keys, {events} events");

        foreach (var dev in rt.Devices.Where(d => d.Type == "vbd"))
        {
            using var disk = BlockFrontend.Connect(rt, dev);
            if (disk.ReadOnly)
            {
                continue;
            }

            var length = (int)Math.Min(bytes, disk.SectorCount * disk.SectorSize) / disk.SectorSize * disk.SectorSize;
            var bad = BlockRoundtrip.Run(disk, 0, length, seed, ledger);
            if (bad >= 0)
            {
                throw new InvalidOperationException($"vbd {dev.Id}: read back differs at byte {bad}");
            }

            rt.Out.WriteLine($"result block vbd {dev.Id}: wrote {length} bytes, flushed, read back: match");
        }

        for (var i = 0; i < keys; i++)
        {
            GuestCheck.Ok(rt.XenBus.Write($"data/worker/k{i}", $"v{i}"), $"XS_WRITE data/worker/k{i}");
        }

        for (var i = 0; i < keys; i++)
        {
            GuestCheck.Ok(rt.XenBus.Read($"data/worker/k{i}", out var value), $"XS_READ data/worker/k{i}");
            if (value != $"v{i}")
            {
                throw new InvalidOperationException($"data/worker/k{i} reads '{value}', not 'v{i}'");
            }
        }

        rt.Out.WriteLine($"result xenstore: {keys} keys written and read back");

        // A loopback interdomain channel: a is unbound for ourselves, b binds to it; sends on b arrive on a.
        var received = 0;
        GuestCheck.Ok(rt.Events.AllocUnbound(self, _ => received++, out var a), "EVTCHNOP_alloc_unbound(self)");
        GuestCheck.Ok(rt.Events.BindInterdomain(self, a, _ => { }, out var b), "EVTCHNOP_bind_interdomain(self)");
        for (var i = 0; i < events; i++)
        {
            GuestCheck.Ok(rt.Events.Send(b), "EVTCHNOP_send");
            var want = i + 1;
            if (!rt.WaitFor(() => received >= want, rt.Clock.SystemTimeNs() + 10_000_000_000UL))
            {
                throw new TimeoutException($"event {want} of {events} did not arrive within 10 s (port {a} received {received})");
            }
        }

        rt.Out.WriteLine($"result events: {events} sent and {received} received over a loopback channel (ports {b} -> {a})");
        rt.Out.WriteLine("result ok");
    }
}
