using System.Buffers.Binary;
using System.Net;
using System.Text.RegularExpressions;
using Paravirt.Cli.Guests;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Linux's own xen-netfront (the module from Debian's cloud kernel package, which nobody here
/// wrote) in two guests on one switch, beside a managed guest and the host's own port, in one
/// boot of each: the Linux guests exchange ARP, pings and a multi-megabyte TCP stream (busybox
/// <c>nc</c>), checksummed with md5sum on both ends; one of them pings the managed
/// <c>pingable</c> guest and the host's port (both check the checksums of what they get). The
/// server has two vCPUs, so its netfront asks for two queues; both negotiate scatter-gather, TCP
/// GSO and checksum offload, so the stream goes as GSO frames delivered whole.
/// </summary>
public sealed partial class LinuxNetFrontTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Applets = ["mount", "echo", "cat", "sleep", "insmod", "ip", "ping", "nc", "md5sum", "dd", "poweroff", "sh", "cut", "grep", "wc", "tail", "sed"];

    private static readonly string[] Forbidden = ["Oops", "BUG:", "WARNING:", "general protection fault", "Call Trace", "xennet: ", "rx->offset", "Bad rx response", "Invalid extra type", "Missing extra info"];

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 600 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Linux_Netfront_Talks_To_Linux_Over_Arp_Ping_And_Tcp_And_Pings_A_Managed_Guest_And_The_Host()
    {
        var ct = TestContext.Current.CancellationToken;
        var mark = Guid.NewGuid().ToString("N")[..12];
        var module = await File.ReadAllBytesAsync(DebianLinux.CloudModule("kernel/drivers/net/xen-netfront.ko"), ct);
        var kernel = await File.ReadAllBytesAsync(DebianLinux.CloudKernel, ct);
        const string Setup = """
            #!/bin/sh
            mount -t proc proc /proc
            mount -t sysfs sys /sys
            mount -t devtmpfs dev /dev
            insmod /xen-netfront.ko
            n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done
            """;
        const string Counters = "grep ^Tcp: /proc/net/snmp | tail -n1 | sed 's/^/TCPSTATS /'";

        // B listens (nc -e runs /recv, which keeps the stream until the sender's FIN); A sends.
        var server = $"""
            {Setup}
            ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up && echo UP-{mark}
            echo LISTENING-{mark}
            nc -l -p 5000 -e /recv
            echo RECEIVED-$(md5sum < /tmp/got | cut -d' ' -f1)-$(wc -c < /tmp/got)
            ping -c 3 10.0.0.1 && echo PINGED-{mark}
            read go
            {Counters}
            poweroff -f
            """;
        var client = $"""
            {Setup}
            ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up && echo UP-{mark}
            read go
            ping -c 3 10.0.0.2 && echo PINGED-{mark}
            ping -c 3 10.0.0.3 && echo PINGED-MANAGED-{mark}
            ping -c 3 10.0.0.254 && echo PINGED-HOST-{mark}
            dd if=/dev/urandom of=/tmp/data bs=64k count=64 2>/dev/null
            echo SENDING-$(md5sum < /tmp/data | cut -d' ' -f1)-$(wc -c < /tmp/data)
            nc 10.0.0.2 5000 < /tmp/data && echo SENT-{mark}
            read go
            {Counters}
            poweroff -f
            """;

        var network = hv.Switch("br0");
        using var host = network.ConnectHost(MacAddress.Parse("00:16:3e:00:00:fe"));
        using var stopHost = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var hostReplies = AnswerPingsAsync(host, 0x0A0000FE, stopHost.Token);

        var pingable = hv.CreateDomain(new DomainConfig { Name = "pingable", MemoryMiB = 8, CommandLine = "ip=10.0.0.3 pings=3" });
        await using var pingableVif = pingable.AttachNic(network, new NicOptions { Mac = MacAddress.Parse("00:16:3e:00:00:03") });
        var pingableOut = new ConsoleWatcher(pingable.Console.Output, ct);
        pingable.Start(new PingableGuest());

        var linux = new List<(Domain D, ConsoleWatcher Console, NetBack Nic)>();
        try
        {
            foreach (var (name, init, mac, ip, vcpus) in new[] { ("linux-b", server, "00:16:3e:00:00:b2", "10.0.0.2", 2), ("linux-a", client, "00:16:3e:00:00:a1", "10.0.0.1", 1) })
            {
                var ramdisk = Initramfs.Busybox(DebianLinux.Busybox, init, Applets)
                    .FileEntry("xen-netfront.ko", module)
                    .Script("recv", "#!/bin/sh\ncat > /tmp/got\n")
                    .ToGzip();
                var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = name, MemoryMiB = 192, Vcpus = vcpus, AutoTranslated = false, CommandLine = "console=hvc0" }, kernel, ramdisk);

                // ip= as xl's vif would give it: the switch admits IPv4 from that address only.
                var nic = d.AttachNic(network, new NicOptions { Mac = MacAddress.Parse(mac), Ips = [IPAddress.Parse(ip)], MaxQueues = 2 });
                var watcher = new ConsoleWatcher(d.Console.Output, ct);
                PvKernelStart.Start(d, boot);
                linux.Add((d, watcher, nic));
            }

            var (b, bConsole, _) = linux[0];
            var (a, aConsole, _) = linux[1];
            await bConsole.WaitForAsync(b, $"LISTENING-{mark}", Bound, ct);
            await aConsole.WaitForAsync(a, $"UP-{mark}", Bound, ct);
            await a.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            await aConsole.WaitForAsync(a, $"SENT-{mark}", Bound, ct);
            var negotiated = new Dictionary<string, string?>();
            foreach (var (d, _, nic) in linux)
            {
                // What Linux's netfront negotiated: the keys it wrote into its vif directory.
                var keys = hv.XenStore.Directory(nic.FrontendPath).Order(StringComparer.Ordinal).Select(k => $"{k}={hv.XenStore.Read($"{nic.FrontendPath}/{k}")}");
                TestContext.Current.TestOutputHelper?.WriteLine($"{d.Name} {nic.FrontendPath}: {string.Join(' ', keys)}; {nic.Queues} queue(s) served");
                foreach (var key in (string[])["multi-queue-num-queues", "feature-sg", "feature-gso-tcpv4", "queue-1/tx-ring-ref"])
                {
                    negotiated[$"{d.Name} {key}"] = hv.XenStore.Read($"{nic.FrontendPath}/{key}");
                }

                negotiated[$"{d.Name} queues"] = nic.Queues.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            negotiated["linux-b multi-queue-num-queues"].Should().Be("2", "the two-vCPU guest's netfront asks for a queue per vCPU");
            negotiated["linux-b queues"].Should().Be("2");
            negotiated["linux-b queue-1/tx-ring-ref"].Should().NotBeNull("a second queue has its own rings");
            negotiated["linux-a queues"].Should().Be("1");
            negotiated["linux-a feature-gso-tcpv4"].Should().Be("1");
            negotiated["linux-b feature-gso-tcpv4"].Should().Be("1");

            await bConsole.WaitForAsync(b, $"PINGED-{mark}", Bound, ct);
            await a.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            await b.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            foreach (var (d, _, _) in linux)
            {
                (await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct)).State.Should().Be(DomainState.Shutdown);
            }

            (await pingable.WaitForShutdownAsync(ct).WaitAsync(Bound, ct)).State.Should().Be(DomainState.Shutdown, $"pingable powers off after 3 replies:\n{pingableOut.Text}");
            await stopHost.CancelAsync();
            var answered = await hostReplies;

            var aText = aConsole.Text;
            var bText = bConsole.Text;
            var sent = Digest().Match(aText);
            var received = Digest().Match(bText);
            sent.Success.Should().BeTrue($"the client printed its digest:\n{aText}");
            received.Success.Should().BeTrue($"the server printed its digest:\n{bText}");
            received.Groups[2].Value.Should().Be(sent.Groups[2].Value, $"every byte of the stream arrives:\n{bText}");
            received.Groups[1].Value.Should().Be(sent.Groups[1].Value, "the same bytes arrive");
            aText.Should().Contain($"PINGED-{mark}", "A pinged B")
                .And.Contain($"PINGED-MANAGED-{mark}", "A pinged the managed guest")
                .And.Contain($"PINGED-HOST-{mark}", "A pinged the host's port");
            bText.Should().Contain($"PINGED-{mark}", "B pinged A");
            pingableOut.Text.Should().Contain("3 echo replies, 0 packets with bad checksums");
            answered.Echoes.Should().Be(3);
            answered.BadChecksums.Should().Be(0);
            foreach (var (text, who) in new[] { (aText, "A"), (bText, "B") })
            {
                // Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
                var tcp = TcpStats().Match(text);
                tcp.Success.Should().BeTrue($"{who} printed its TCP counters:\n{text}");
                var counters = tcp.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                counters.Should().HaveCount(15);
                counters[12].Should().Be("0", $"{who}'s TCP saw no bad segment (InErrs)");
                counters[14].Should().Be("0", $"{who}'s TCP saw no checksum error (InCsumErrors)");
                foreach (var bad in Forbidden)
                {
                    text.Should().NotContain(bad, $"{who}'s console:\n{text}");
                }
            }

            foreach (var (d, _, nic) in linux)
            {
                TestContext.Current.TestOutputHelper?.WriteLine($"{d.Name}: {nic.Stats}");
                nic.Stats.TxErrors.Should().Be(0);
                nic.Stats.RxErrors.Should().Be(0);
                nic.Stats.ProtocolErrors.Should().Be(0);
                nic.Stats.TxOffloadDropped.Should().Be(0, "Linux's checksum and GSO requests fit its packets");
            }

            var (_, _, bNic) = linux[0];
            var (_, _, aNic) = linux[1];
            aNic.Stats.TxGsoPackets.Should().BeGreaterThan(0, "Linux's TCP sends the stream as GSO frames once the backend offers feature-gso-tcpv4");
            bNic.Stats.RxGsoPackets.Should().BeGreaterThan(0, "and the receiving netfront, which asked for GSO, takes them whole");
        }
        finally
        {
            await stopHost.CancelAsync();
            foreach (var (d, c, _) in linux)
            {
                d.Destroy();
                c.Dispose();
            }

            pingable.Destroy();
            pingableOut.Dispose();
        }
    }

    /// <summary>The host's port answers ARP and ICMP echo at <paramref name="ip"/> until stopped.</summary>
    private static async Task<(int Echoes, int BadChecksums)> AnswerPingsAsync(SwitchHostPort port, uint ip, CancellationToken ct)
    {
        var frame = new byte[VirtualSwitch.MaxFrameBytes];
        var reply = new byte[VirtualSwitch.MaxFrameBytes];
        var mac = new byte[6];
        port.Mac.Write(mac);
        int echoes = 0, bad = 0;
        try
        {
            while (true)
            {
                var n = await port.ReceiveAsync(frame, ct);
                switch (Ipv4Responder.Answer(frame.AsSpan(0, n), mac, ip, reply, out var length))
                {
                    case ResponderVerdict.ArpReply:
                        port.Send(reply.AsSpan(0, length));
                        break;
                    case ResponderVerdict.EchoReply:
                        echoes++;
                        port.Send(reply.AsSpan(0, length));
                        break;
                    case ResponderVerdict.BadChecksum:
                        bad++;
                        break;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return (echoes, bad);
        }
    }

    [GeneratedRegex(@"TCPSTATS Tcp: ([0-9 -]+)")]
    private static partial Regex TcpStats();

    [GeneratedRegex(@"(?:SENDING|RECEIVED)-([0-9a-f]{32})-\s*(\d+)")]
    private static partial Regex Digest();
}
