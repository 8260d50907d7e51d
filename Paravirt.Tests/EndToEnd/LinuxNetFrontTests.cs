using System.Text.RegularExpressions;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Linux's own xen-netfront (the module from Debian's cloud kernel package) in two guests on one
/// switch: ARP, ICMP and a multi-megabyte TCP stream between them, checksummed on both ends. The
/// server has two vCPUs, so its netfront asks for two queues; both negotiate scatter-gather, TCP
/// GSO and checksum offload, so the stream goes as GSO frames delivered whole.
/// </summary>
public sealed partial class LinuxNetFrontTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Applets = ["mount", "mkdir", "echo", "cat", "sleep", "insmod", "ip", "ping", "nc", "md5sum", "dd", "poweroff", "sh", "cut", "grep", "wc", "tail", "sed"];

    private static readonly string[] Forbidden = ["Oops", "BUG:", "WARNING:", "general protection fault", "Call Trace", "xennet: Too many frags", "rx->offset", "Bad rx response", "Invalid extra type"];

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 600 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Two_Linux_Guests_Exchange_Arp_Ping_And_A_Tcp_Stream_Through_Their_Own_Netfront()
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
        var server = $"""
            {Setup}
            ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up && echo UP-{mark}
            echo LISTENING-{mark}
            nc -l -p 5000 -e /recv
            echo RECEIVED-$(md5sum < /tmp/got | cut -d' ' -f1)-$(wc -c < /tmp/got)
            ping -c 3 10.0.0.1 && echo PINGED-{mark}
            read go
            grep ^Tcp: /proc/net/snmp | tail -n1 | sed 's/^/TCPSTATS /'
            poweroff -f
            """;
        var client = $"""
            {Setup}
            ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up && echo UP-{mark}
            read go
            ping -c 3 10.0.0.2 && echo PINGED-{mark}
            dd if=/dev/urandom of=/tmp/data bs=64k count=64 2>/dev/null
            echo SENDING-$(md5sum < /tmp/data | cut -d' ' -f1)-$(wc -c < /tmp/data)
            echo UPTIME-START $(cut -d' ' -f1 /proc/uptime)
            nc 10.0.0.2 5000 < /tmp/data && echo SENT-{mark}
            echo UPTIME-END $(cut -d' ' -f1 /proc/uptime)
            read go
            grep ^Tcp: /proc/net/snmp | tail -n1 | sed 's/^/TCPSTATS /'
            poweroff -f
            """;
        var domains = new List<(Domain D, ConsoleWatcher Console, NetBack Nic)>();
        try
        {
            foreach (var (name, init, mac, vcpus) in new[] { ("linux-b", server, 0x00163E0000B2UL, 2), ("linux-a", client, 0x00163E0000A1UL, 1) })
            {
                var ramdisk = Initramfs.Busybox(DebianLinux.Busybox, init, Applets).FileEntry("xen-netfront.ko", module).Script("recv", "#!/bin/sh\ncat > /tmp/got\n").ToGzip();
                var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = name, MemoryMiB = 192, Vcpus = vcpus, AutoTranslated = false, CommandLine = "console=hvc0" }, kernel, ramdisk);
                var nic = d.AttachNic(hv.Switch("br0"), new NicOptions { Mac = MacAddress.FromValue(mac), MaxQueues = 2 });
                var watcher = new ConsoleWatcher(d.Console.Output, ct);
                PvKernelStart.Start(d, boot);
                domains.Add((d, watcher, nic));
            }

            var (b, bConsole, _) = domains[0];
            var (a, aConsole, _) = domains[1];
            await bConsole.WaitForAsync(b, $"LISTENING-{mark}", Bound, ct);
            await aConsole.WaitForAsync(a, $"UP-{mark}", Bound, ct);
            await a.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            await aConsole.WaitForAsync(a, $"SENT-{mark}", Bound, ct);
            var negotiated = new Dictionary<string, string?>();
            foreach (var (d, _, nic) in domains)
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
            foreach (var (d, _, nic) in domains)
            {
                await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
                TestContext.Current.TestOutputHelper?.WriteLine($"{d.Name}: {nic.Stats}");
                nic.Stats.TxErrors.Should().Be(0);
                nic.Stats.RxErrors.Should().Be(0);
                nic.Stats.ProtocolErrors.Should().Be(0);
                nic.Stats.TxOffloadDropped.Should().Be(0, "Linux's checksum and GSO requests fit its packets");
            }

            var (_, _, bNic) = domains[0];
            var (_, _, aNic) = domains[1];
            aNic.Stats.TxGsoPackets.Should().BeGreaterThan(0, "Linux's TCP sends the stream as GSO frames once the backend offers feature-gso-tcpv4");
            bNic.Stats.RxGsoPackets.Should().BeGreaterThan(0, "and the receiving netfront, which asked for GSO, takes them whole");

            var aText = aConsole.Text;
            var bText = bConsole.Text;
            var sent = Digest().Match(aText);
            var received = Digest().Match(bText);
            sent.Success.Should().BeTrue($"the client printed its digest:\n{aText}");
            received.Success.Should().BeTrue($"the server printed its digest:\n{bText}");
            received.Groups[2].Value.Should().Be(sent.Groups[2].Value, $"all bytes arrive:\n{bText}");
            received.Groups[1].Value.Should().Be(sent.Groups[1].Value, "the same bytes arrive");
            var uptime = Uptime().Matches(aText);
            if (uptime.Count == 2)
            {
                var seconds = double.Parse(uptime[1].Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) - double.Parse(uptime[0].Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                TestContext.Current.TestOutputHelper?.WriteLine($"the 4 MiB stream took {seconds:F2} s of the client's uptime");
            }

            aText.Should().Contain($"PINGED-{mark}", "A pinged B");
            bText.Should().Contain($"PINGED-{mark}", "B pinged A");
            foreach (var (text, who) in new[] { (aText, "A"), (bText, "B") })
            {
                // Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
                var tcp = TcpStats().Match(text);
                tcp.Success.Should().BeTrue($"{who} printed its TCP counters:\n{text}");
                var counters = tcp.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                counters.Should().HaveCount(15);
                counters[12].Should().Be("0", $"{who}'s TCP saw no bad segment (InErrs)");
                counters[14].Should().Be("0", $"{who}'s TCP saw no checksum error (InCsumErrors)");
            }

            foreach (var bad in Forbidden)
            {
                aText.Should().NotContain(bad);
                bText.Should().NotContain(bad);
            }

        }
        finally
        {
            foreach (var (d, c, _) in domains)
            {
                d.Destroy();
                c.Dispose();
            }
        }
    }

    [GeneratedRegex(@"UPTIME-(?:START|END) ([0-9.]+)")]
    private static partial Regex Uptime();

    [GeneratedRegex(@"TCPSTATS Tcp: ([0-9 -]+)")]
    private static partial Regex TcpStats();

    [GeneratedRegex(@"(?:SENDING|RECEIVED)-([0-9a-f]{32})-\s*(\d+)")]
    private static partial Regex Digest();
}
