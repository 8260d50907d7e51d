using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:pingable</c>: connects its first vif and answers, at <c>ip=A.B.C.D</c> (its command
/// line), ARP requests and ICMP echo requests (<see cref="Ipv4Responder"/>), so any IPv4 host on the
/// switch — a Linux guest's <c>ping</c> — can reach it; it drops packets with bad checksums and
/// counts them. It powers off after <c>pings=N</c> echo replies (default: never), or when a
/// netecho stop frame (ethertype 0x88b6, byte 2) arrives, printing what it answered.
/// </summary>
internal sealed class PingableGuest : GuestKernel
{
    protected override void Run(GuestRuntime rt)
    {
        var args = new GuestArgs(rt.CommandLine);
        var address = args.Get("ip", "");
        if (!Ipv4Responder.TryParse(address, out var ip))
        {
            throw new InvalidOperationException($"pingable: ip '{address}' is not an IPv4 address; expected extra = \"ip=A.B.C.D\"");
        }

        var limit = args.Get("pings", long.MaxValue);
        using var fe = NetFrontend.Connect(rt);
        rt.Out.WriteLine($"pingable: vif {fe.Device.Id} {fe.MacText} at {address}: answering ARP and ICMP echo");
        var frame = new byte[NetFrontend.MaxFrameBytes];
        var reply = new byte[NetFrontend.MaxFrameBytes];
        long arps = 0, echoes = 0, bad = 0;
        var why = $"pings={limit} answered";
        while (echoes < limit)
        {
            var n = fe.Receive(frame);
            if (n > 14 && frame[12] == NetEchoGuest.ControlType >> 8 && frame[13] == (NetEchoGuest.ControlType & 0xFF) && frame[14] == NetEchoGuest.Stop)
            {
                why = "stop frame";
                break;
            }

            switch (Ipv4Responder.Answer(frame.AsSpan(0, n), fe.Mac, ip, reply, out var length))
            {
                case ResponderVerdict.ArpReply:
                    arps++;
                    fe.Send(reply.AsSpan(0, length));
                    break;
                case ResponderVerdict.EchoReply:
                    echoes++;
                    fe.Send(reply.AsSpan(0, length));
                    rt.Out.WriteLine($"pingable: echo reply {echoes}");
                    break;
                case ResponderVerdict.BadChecksum:
                    bad++;
                    break;
            }
        }

        fe.Flush();
        rt.Out.WriteLine($"pingable: {why}: {arps} ARP replies, {echoes} echo replies, {bad} packets with bad checksums dropped; powering off");
    }
}
