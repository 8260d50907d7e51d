using System.Buffers.Binary;
using System.Diagnostics;
using Paravirt.Cli.Guests;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Guest.Network;

namespace Paravirt.Tests.EndToEnd;

/// <summary>Guests on the stub's netfront, the host's netback and a virtual switch, end to end.</summary>
public sealed class NetworkEndToEndTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private static readonly MacAddress MacA = MacAddress.Parse("00:16:3e:00:00:0a");
    private static readonly MacAddress MacB = MacAddress.Parse("00:16:3e:00:00:0b");
    private static readonly MacAddress MacC = MacAddress.Parse("00:16:3e:00:00:0c");
    private static readonly MacAddress MacD = MacAddress.Parse("00:16:3e:00:00:0d");
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    // Our frames: header, then kind (1 byte), sequence (4), payload length (2), FNV-1a of the payload (4), payload.
    private const byte Ping = 1, Pong = 2, Done = 3, Data = 4, Ack = 5;
    private const int Meta = 14 + 11;

    /// <summary>The payload of frame <paramref name="seq"/> of a stream: the demo's generator (<see cref="PingProtocol.Payload"/>) up to a full frame.</summary>
    private static int Payload(Span<byte> into, int seed, int seq) =>
        PingProtocol.Payload(into, (ulong)seed, seq, NetFrontend.MaxFrameBytes - Meta);

    private static uint Fnv(ReadOnlySpan<byte> bytes) => PingProtocol.Fnv(bytes);

    private static int Build(Span<byte> frame, ReadOnlySpan<byte> to, ReadOnlySpan<byte> from, byte kind, int seq, ReadOnlySpan<byte> payload)
    {
        NetKernel.Header(frame, to, from);
        frame[14] = kind;
        BinaryPrimitives.WriteInt32BigEndian(frame[15..], seq);
        BinaryPrimitives.WriteUInt16BigEndian(frame[19..], (ushort)payload.Length);
        BinaryPrimitives.WriteUInt32BigEndian(frame[21..], Fnv(payload));
        payload.CopyTo(frame[Meta..]);
        return Math.Max(Meta + payload.Length, 60); // pad short frames to Ethernet's 60 bytes
    }

    /// <summary>Parses one of our frames; throws on a torn frame (length or checksum wrong).</summary>
    private static (byte Kind, int Seq, int Length) Parse(ReadOnlySpan<byte> frame, int received)
    {
        BinaryPrimitives.ReadUInt16BigEndian(frame[12..]).Should().Be(NetKernel.EtherType);
        var length = BinaryPrimitives.ReadUInt16BigEndian(frame[19..]);
        received.Should().Be(Math.Max(Meta + length, 60), "the frame arrives whole");
        Fnv(frame.Slice(Meta, length)).Should().Be(BinaryPrimitives.ReadUInt32BigEndian(frame[21..]), "the payload's checksum matches");
        return (frame[14], BinaryPrimitives.ReadInt32BigEndian(frame[15..]), length);
    }

    private static int ReceiveWithin(NetFrontend fe, Span<byte> buffer, string waitingFor) =>
        fe.TryReceive(buffer, Patience, out var n) ? n : throw new TimeoutException($"{fe.MacText}: nothing arrived within {Patience} while waiting for {waitingFor}");

    /// <summary>
    /// Each guest pings its peer <paramref name="pings"/> times (one at a time, the pong must carry
    /// the same sequence and payload) while answering the peer's pings; then says Done and keeps
    /// answering until the peer's Done.
    /// </summary>
    private static Action<GuestRuntime> Pinger(MacAddress peer, int seed, int pings, Action<NetFrontend>? after = null) => rt =>
    {
        using var fe = NetFrontend.Connect(rt);
        NetKernel.WaitForGo(rt);
        var to = NetKernel.Octets(peer);
        var frame = new byte[NetFrontend.MaxFrameBytes];
        var reply = new byte[NetFrontend.MaxFrameBytes];
        var payload = new byte[NetFrontend.MaxFrameBytes];
        var peerDone = false;
        var seq = 0;
        var waiting = false;
        while (seq < pings || !peerDone)
        {
            if (seq < pings && !waiting)
            {
                var len = Payload(payload, seed, seq);
                fe.Send(frame.AsSpan(0, Build(frame, to, fe.Mac, Ping, seq, payload.AsSpan(0, len))));
                waiting = true;
            }

            var n = ReceiveWithin(fe, reply, waiting ? $"pong {seq}" : "the peer's Done");
            var (kind, s, length) = Parse(reply, n);
            switch (kind)
            {
                case Ping:
                    reply.AsSpan(6, 6).CopyTo(reply);
                    fe.Mac.CopyTo(reply.AsSpan(6));
                    reply[14] = Pong;
                    fe.Send(reply.AsSpan(0, n));
                    break;
                case Pong:
                    s.Should().Be(seq, "a pong answers the ping in flight");
                    var expected = Payload(payload, seed, seq);
                    length.Should().Be(expected);
                    reply.AsSpan(Meta, length).SequenceEqual(payload.AsSpan(0, expected)).Should().BeTrue("the pong carries the ping's bytes");
                    seq++;
                    waiting = false;
                    if (seq == pings)
                    {
                        fe.Send(frame.AsSpan(0, Build(frame, to, fe.Mac, Done, seq, [])));
                    }

                    break;
                case Done:
                    peerDone = true;
                    break;
                default:
                    throw new InvalidOperationException($"unexpected frame kind {kind}");
            }
        }

        if (pings == 0)
        {
            fe.Send(frame.AsSpan(0, Build(frame, to, fe.Mac, Done, 0, [])));
        }

        fe.Flush();
        after?.Invoke(fe);
    };

    [Fact]
    public async Task Two_Guests_On_One_Switch_Ping_Each_Other_Both_Ways()
    {
        var sw = hv.Switch("br0");
        var a = hv.CreateDomain(NetKernel.Config("ping-a"));
        var b = hv.CreateDomain(NetKernel.Config("ping-b"));
        await using var vifA = a.AttachNic(sw, new NicOptions { Mac = MacA });
        await using var vifB = b.AttachNic(sw, new NicOptions { Mac = MacB });
        var ka = NetKernel.Start(a, Pinger(MacB, seed: 1, pings: 100));
        var kb = NetKernel.Start(b, Pinger(MacA, seed: 2, pings: 100));
        await NetKernel.GoAsync(hv, (a, vifA), (b, vifB));
        await ka.WaitAsync(a);
        await kb.WaitAsync(b);

        // 100 pings + 100 pongs + Done each way.
        vifA.Stats.TxPackets.Should().Be(201);
        vifB.Stats.TxPackets.Should().Be(201);
        vifA.Stats.RxPackets.Should().Be(201);
        vifB.Stats.RxPackets.Should().Be(201);
        sw.PortOf(MacA).Should().BeNull("both guests closed their vifs: the switch forgot their addresses");
        (vifA.Stats.TxErrors + vifB.Stats.TxErrors + vifA.Stats.RxErrors + vifB.Stats.RxErrors).Should().Be(0);
    }

    [Fact]
    public async Task Ten_Thousand_Frames_Cross_Between_Two_Guests_None_Lost_Or_Corrupted_And_Metering_Adds_Up()
    {
        const int Frames = 10_000;
        const int Window = 32; // below the receiver's 64 buffers and its port's 256-frame queue: nothing may drop
        var sw = hv.Switch("br-10k");
        var a = hv.CreateDomain(NetKernel.Config("sender"));
        var b = hv.CreateDomain(NetKernel.Config("receiver"));
        await using var vifA = a.AttachNic(sw, new NicOptions { Mac = MacA });
        await using var vifB = b.AttachNic(sw, new NicOptions { Mac = MacB });
        long aSentBytes = 0, aReceivedBytes = 0, bSentBytes = 0, bReceivedBytes = 0, bReceived = 0;
        NetFrontendStats statsA = default, statsB = default;

        var ka = NetKernel.Start(a, rt =>
        {
            using var fe = NetFrontend.Connect(rt);
            NetKernel.WaitForGo(rt);
            var to = NetKernel.Octets(MacB);
            var frame = new byte[NetFrontend.MaxFrameBytes];
            var ack = new byte[NetFrontend.MaxFrameBytes];
            var payload = new byte[NetFrontend.MaxFrameBytes];
            var acked = -1;
            for (var seq = 0; seq < Frames; seq++)
            {
                while (seq - acked > Window)
                {
                    var n = ReceiveWithin(fe, ack, $"an ack past {acked} (sending {seq})");
                    aReceivedBytes += n;
                    var (kind, s, _) = Parse(ack, n);
                    kind.Should().Be(Ack);
                    s.Should().BeGreaterThan(acked, "acks only move forward").And.BeLessThan(seq);
                    acked = s;
                }

                var len = Payload(payload, 77, seq);
                var size = Build(frame, to, fe.Mac, Data, seq, payload.AsSpan(0, len));
                fe.Send(frame.AsSpan(0, size));
                aSentBytes += size;
            }

            while (acked < Frames - 1)
            {
                var n = ReceiveWithin(fe, ack, $"the last acks (at {acked})");
                aReceivedBytes += n;
                acked = Parse(ack, n).Seq;
            }

            fe.Flush();
            statsA = fe.Stats;
        });

        var kb = NetKernel.Start(b, rt =>
        {
            using var fe = NetFrontend.Connect(rt);
            NetKernel.WaitForGo(rt);
            var to = NetKernel.Octets(MacA);
            var frame = new byte[NetFrontend.MaxFrameBytes];
            var ack = new byte[NetFrontend.MaxFrameBytes];
            var expected = new byte[NetFrontend.MaxFrameBytes];
            for (var seq = 0; seq < Frames; seq++)
            {
                var n = ReceiveWithin(fe, frame, $"frame {seq}");
                bReceivedBytes += n;
                var (kind, s, length) = Parse(frame, n);
                kind.Should().Be(Data);
                s.Should().Be(seq, "frames arrive once each, in order: none lost, none repeated");
                var want = Payload(expected, 77, seq);
                length.Should().Be(want);
                frame.AsSpan(Meta, length).SequenceEqual(expected.AsSpan(0, want)).Should().BeTrue($"frame {seq}'s bytes are the sender's");
                bReceived++;
                if (seq % 8 == 7 || seq == Frames - 1)
                {
                    var size = Build(ack, to, fe.Mac, Ack, seq, []);
                    fe.Send(ack.AsSpan(0, size));
                    bSentBytes += size;
                }
            }

            fe.Flush();
            statsB = fe.Stats;
        });

        await NetKernel.GoAsync(hv, (a, vifA), (b, vifB));
        await ka.WaitAsync(a);
        await kb.WaitAsync(b);
        bReceived.Should().Be(Frames);
        vifB.Port.Should().BeNull("the receiver closed its vif");
        vifB.Stats.RxPackets.Should().Be(Frames);
        vifA.Stats.TxPackets.Should().Be(Frames);

        // Metering: what each guest counted itself = its netfront's counters = netback's = its domain's Meter.
        a.Meter.NetBytesSent.Should().Be(aSentBytes).And.Be(statsA.TxBytes).And.Be(vifA.Stats.TxBytes);
        a.Meter.NetPacketsSent.Should().Be(Frames).And.Be(statsA.TxPackets);
        b.Meter.NetBytesReceived.Should().Be(bReceivedBytes).And.Be(aSentBytes, "every byte A sent reached B").And.Be(statsB.RxBytes);
        b.Meter.NetPacketsReceived.Should().Be(Frames);
        b.Meter.NetBytesSent.Should().Be(bSentBytes).And.Be(statsB.TxBytes);
        a.Meter.NetBytesReceived.Should().Be(aReceivedBytes).And.Be(bSentBytes).And.Be(statsA.RxBytes);
        a.Meter.NetPacketsReceived.Should().Be(b.Meter.NetPacketsSent).And.Be(Frames / 8);
    }

    [Fact]
    public async Task A_Guest_Flooding_The_Switch_Is_Held_To_Its_Rate_And_Its_Neighbours_Exchange_Completes()
    {
        const long Rate = 40_000; // bytes/s: 40 frames/s, several times below what the flooder manages unlimited
        var interval = TimeSpan.FromMilliseconds(50); // credit: 2,000 bytes (two frames) per window
        const int FloodFrames = 80;
        const int FloodSize = 1000;
        var sw = hv.Switch("br-flood");
        using var sink = sw.ConnectHost(MacAddress.Parse("02:00:00:00:00:99"), queueFrames: 4);
        sink.Send(MacAddress.Broadcast, NetKernel.EtherType, "here"u8); // the switch learns the sink

        var a = hv.CreateDomain(NetKernel.Config("neighbour-a"));
        var b = hv.CreateDomain(NetKernel.Config("neighbour-b"));
        await using var vifA = a.AttachNic(sw, new NicOptions { Mac = MacA });
        await using var vifB = b.AttachNic(sw, new NicOptions { Mac = MacB });
        var started = Stopwatch.GetTimestamp();
        var f = hv.CreateDomain(NetKernel.Config("flooder"));
        await using var vifF = f.AttachNic(sw, new NicOptions { Mac = MacC, RateBytesPerSecond = Rate, RateInterval = interval });
        vifF.CreditBytes.Should().Be(2_000);
        var kf = NetKernel.Start(f, rt =>
        {
            using var fe = NetFrontend.Connect(rt);
            var frame = new byte[FloodSize];
            NetKernel.Header(frame, NetKernel.Octets(sink.Mac), fe.Mac);
            for (var i = 0; i < FloodFrames; i++)
            {
                BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(14), i);
                fe.Send(frame); // as fast as the ring takes them
            }

            fe.Flush();
        });
        var ka = NetKernel.Start(a, Pinger(MacB, seed: 3, pings: 150));
        var kb = NetKernel.Start(b, Pinger(MacA, seed: 4, pings: 150));
        await NetKernel.GoAsync(hv, (a, vifA), (b, vifB));
        await kf.WaitAsync(f);
        var elapsed = Stopwatch.GetElapsedTime(started); // up to the flooder's end: the tightest run its bytes must fit
        await ka.WaitAsync(a);
        await kb.WaitAsync(b);

        // The neighbours' exchange completed correctly (every pong checked in the guests) …
        vifA.Stats.TxPackets.Should().Be(301);
        vifB.Stats.RxPackets.Should().Be(301);

        // … and the flooder got no more than its credit: 2,000 bytes at the start plus 2,000 per window passed
        // (80 kB needs at least 39 windows, 1.95 s; unlimited, the flooder sends it several times faster).
        var sent = vifF.Stats.TxBytes;
        sent.Should().Be((long)FloodFrames * FloodSize, "every flood frame was sent in the end (the limiter delays, it does not drop)");
        var windows = (long)(elapsed / interval);
        sent.Should().BeLessThanOrEqualTo(2_000 * (windows + 1), $"{elapsed.TotalMilliseconds:F0} ms is {windows} windows of credit after the first");
        vifF.Stats.TxRateLimited.Should().BeGreaterThan(0, "the flooder had to wait for credit");
        sink.Stats.Dropped.Should().BeGreaterThan(0, "the sink never read, so its small queue overflowed without holding up anyone");
        f.Meter.NetBytesSent.Should().Be(sent);
    }

    [Fact]
    public async Task The_Host_And_Two_Guests_Share_A_Switch_And_Broadcasts_Reach_Everyone_But_The_Sender()
    {
        var sw = hv.Switch("br-bcast");
        using var host = sw.ConnectHost(MacD);
        var a = hv.CreateDomain(NetKernel.Config("bc-a"));
        var b = hv.CreateDomain(NetKernel.Config("bc-b"));
        await using var vifA = a.AttachNic(sw, new NicOptions { Mac = MacA });
        await using var vifB = b.AttachNic(sw, new NicOptions { Mac = MacB });
        Action<GuestRuntime> guest = rt =>
        {
            // Wait for the host's broadcast, answer it to the host, and say hello to everyone.
            using var fe = NetFrontend.Connect(rt);
            var frame = new byte[NetFrontend.MaxFrameBytes];
            var n = ReceiveWithin(fe, frame, "the host's broadcast");
            MacAddress.Read(frame).Should().Be(MacAddress.Broadcast);
            frame.AsSpan(14, n - 14).SequenceEqual("who is there"u8).Should().BeTrue();
            var reply = new byte[60];
            NetKernel.Header(reply, NetKernel.Octets(MacD), fe.Mac);
            fe.Send(reply);
            fe.Flush();
        };
        var ka = NetKernel.Start(a, guest);
        var kb = NetKernel.Start(b, guest);
        await vifA.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(Patience, TestContext.Current.CancellationToken);
        await vifB.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(Patience, TestContext.Current.CancellationToken);
        host.Send(MacAddress.Broadcast, NetKernel.EtherType, "who is there"u8);
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        var from = new HashSet<MacAddress>();
        for (var i = 0; i < 2; i++)
        {
            (await host.ReceiveAsync(buffer, TestContext.Current.CancellationToken).AsTask().WaitAsync(Patience, TestContext.Current.CancellationToken)).Should().Be(60);
            from.Add(MacAddress.Read(buffer.AsSpan(6)));
        }

        from.Should().BeEquivalentTo([MacA, MacB]);
        await ka.WaitAsync(a);
        await kb.WaitAsync(b);
        host.TryReceive(buffer, out _).Should().BeFalse("the broadcast did not come back to the host");
        vifA.Stats.RxPackets.Should().Be(1);
        vifB.Stats.RxPackets.Should().Be(1);
    }
}
