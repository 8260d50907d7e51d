using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:worker</c>: a well-behaved neighbour. On each writable disk it writes <c>bytes=</c>
/// (default 256 KiB) of <see cref="DiskPattern"/> with <c>seed=</c> from byte 0, flushes, reads back
/// and compares; it writes <c>keys=</c> (default 100) XenStore nodes <c>data/worker/kN = vN</c> and
/// reads each back; and it sends <c>events=</c> (default 200) events over a loopback interdomain
/// channel to itself, one at a time, waiting for each. With <c>pings=N peer=MAC</c> it then connects
/// its first vif, waits for the host's <c>data/go</c>, and pings the peer N times with
/// <see cref="PingProtocol"/> (one in flight; each pong's sequence, length, checksum and bytes
/// checked) while answering any ping addressed to it (the peer's, the host's) with a pong, until
/// both sides said Done; frames for other addresses (flooded by the switch) are ignored, as a NIC does. Each result is a console line
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
        var pings = (int)args.Get("pings", 0);
        if (pings > 0)
        {
            Network(rt, pings, args.Get("peer", ""), seed);
        }

        rt.Out.WriteLine("result ok");
    }

    private void Network(GuestRuntime rt, int pings, string peerText, ulong seed)
    {
        var peer = new byte[6];
        var parts = peerText.Split(':');
        if (parts.Length != 6 || !parts.Select((p, i) => byte.TryParse(p, System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out peer[i])).All(ok => ok))
        {
            throw new InvalidOperationException($"peer '{peerText}' is not a MAC address; expected peer=xx:xx:xx:xx:xx:xx with pings=N");
        }

        using var fe = NetFrontend.Connect(rt);
        rt.Out.WriteLine($"worker: vif {fe.Device.Id} {fe.MacText} connected; waiting for data/go");
        var go = false;
        GuestCheck.Ok(rt.XenBus.Watch("data/go", _ => go |= rt.XenBus.Read("data/go", out _) >= 0, out _), "XS_WATCH data/go");
        if (!rt.WaitFor(() => go, rt.Clock.SystemTimeNs() + 20_000_000_000UL))
        {
            throw new TimeoutException("the host did not write data/go within 20 s");
        }

        var frame = new byte[NetFrontend.MaxFrameBytes];
        var reply = new byte[NetFrontend.MaxFrameBytes];
        var payload = new byte[PingProtocol.MaxPayload];
        long sentFrames = 0, sentBytes = 0, receivedFrames = 0, receivedBytes = 0, answered = 0, ignored = 0;
        void Send(ReadOnlySpan<byte> f)
        {
            fe.Send(f);
            sentFrames++;
            sentBytes += f.Length;
            ledger?.CountNetSent(f.Length);
        }

        var seq = 0;
        var waiting = false;
        var peerDone = false;
        while (seq < pings || !peerDone)
        {
            if (seq < pings && !waiting)
            {
                var len = PingProtocol.Payload(payload, seed, seq);
                Send(frame.AsSpan(0, PingProtocol.Build(frame, peer, fe.Mac, PingProtocol.Ping, seq, payload.AsSpan(0, len))));
                waiting = true;
            }

            if (!fe.TryReceive(reply, TimeSpan.FromSeconds(20), out var n))
            {
                throw new TimeoutException($"nothing arrived within 20 s while waiting for {(waiting ? $"pong {seq}" : "the peer's Done")}");
            }

            receivedFrames++;
            receivedBytes += n;
            ledger?.CountNetReceived(n);
            if (!reply.AsSpan(0, 6).SequenceEqual(fe.Mac))
            {
                ignored++; // flooded to us while the switch had not yet learned where its destination is
                continue;
            }

            var parsed = PingProtocol.Parse(reply, n, out var why) ?? throw new InvalidOperationException($"received {why}");
            switch (parsed.Kind)
            {
                case PingProtocol.Ping:
                    reply.AsSpan(6, 6).CopyTo(reply);
                    fe.Mac.CopyTo(reply.AsSpan(6));
                    reply[14] = PingProtocol.Pong;
                    Send(reply.AsSpan(0, n));
                    answered++;
                    break;
                case PingProtocol.Pong:
                    var expected = PingProtocol.Payload(payload, seed, seq);
                    if (!waiting || parsed.Seq != seq || parsed.Length != expected || !reply.AsSpan(PingProtocol.Meta, expected).SequenceEqual(payload.AsSpan(0, expected)))
                    {
                        throw new InvalidOperationException($"pong {parsed.Seq} ({parsed.Length} bytes) does not answer ping {seq} ({expected} bytes) byte for byte");
                    }

                    seq++;
                    waiting = false;
                    if (seq == pings)
                    {
                        Send(frame.AsSpan(0, PingProtocol.Build(frame, peer, fe.Mac, PingProtocol.Done, seq, [])));
                    }

                    break;
                case PingProtocol.Done:
                    peerDone = true;
                    break;
                default:
                    throw new InvalidOperationException($"a frame of unknown kind {parsed.Kind}");
            }
        }

        fe.Flush();
        rt.Out.WriteLine($"result network: {pings} pings to {peerText} answered and checked; {answered} pings answered; sent {sentFrames} frames ({sentBytes} bytes), received {receivedFrames} frames ({receivedBytes} bytes, {ignored} of them for another address)");
    }
}
