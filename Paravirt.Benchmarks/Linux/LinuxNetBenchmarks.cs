using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Benchmarks.Linux;

/// <summary>
/// A TCP stream between two Linux guests (Debian's cloud kernel, Linux's own xen-netfront) on one
/// switch: A sends 16 MiB of zeros with busybox <c>nc</c>, B counts them off with <c>dd iflag=fullblock</c>
/// and answers "done" on the same connection; A's clock (Xen system time) times from before the
/// first byte to the answer. Beside it, the same stream between two sockets on the host's loopback
/// in the same run. <c>dotnet run -c Release --project Paravirt.Benchmarks -- --linux-net [N]</c>:
/// N guest runs (two boots each) and the medians. Needs <c>./test.sh</c>'s kernel cache.
/// </summary>
public static partial class LinuxNetBenchmarks
{
    private const int MiB = 1 << 20;
    private const int Size = 16 * MiB;

    public static async Task<int> RunAsync(int iterations)
    {
        var kernel = await File.ReadAllBytesAsync(KernelCache.Kernel());
        var module = await File.ReadAllBytesAsync(KernelCache.CloudModule("xen-netfront.ko"));
        var busybox = KernelCache.Busybox;
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
            ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up
            echo LISTENING
            nc -l -p 5000 -e /recv
            read go
            poweroff -f
            """;
        var client = $"""
            {Setup}
            ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up
            read go
            ping -c 1 -W 10 10.0.0.2 >/dev/null
            echo "T0 $(cat /proc/uptime)"
            (dd if=/dev/zero bs=64k count={Size / 65536} 2>/dev/null; sleep 600) | nc 10.0.0.2 5000 | (read line; echo "T1 $(cat /proc/uptime) $line")
            """;
        var applets = new[] { "mount", "echo", "cat", "sleep", "insmod", "ip", "ping", "nc", "dd", "poweroff", "sh" };
        byte[] Ramdisk(string init) => Initramfs.Busybox(busybox, init, applets)
            .FileEntry("xen-netfront.ko", module)
            .Script("recv", $"#!/bin/sh\ndd bs=64k count={Size / 65536} iflag=fullblock of=/dev/null 2>/dev/null\necho done\n")
            .ToGzip();
        var (serverDisk, clientDisk) = (Ramdisk(server), Ramdisk(client));

        var guest = new List<double>();
        var host = new List<double>();
        for (var i = 0; i < iterations; i++)
        {
            guest.Add(await GuestAsync(kernel, serverDisk, clientDisk));
            host.Add(await LoopbackAsync());
            Console.WriteLine($"run {i + 1}: Linux to Linux {Rate(guest[^1])}; host loopback {Rate(host[^1])}");
        }

        Console.WriteLine("| 16 MiB TCP stream | host loopback (baseline) | Linux netfront to Linux netfront on Paravirt | ratio (time) |");
        Console.WriteLine("|---|---|---|---|");
        Console.WriteLine($"| one connection, 64 KiB writes | {Rate(Median(host))} | {Rate(Median(guest))} | {Median(guest) / Median(host):F0}× |");
        return 0;
    }

    private static string Rate(double seconds) => string.Create(CultureInfo.InvariantCulture, $"{Size / (double)MiB / seconds:F1} MiB/s ({seconds:F3} s)");

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>The same stream between two sockets on the host's loopback: 64 KiB writes, the receiver answers once it has every byte.</summary>
    private static async Task<double> LoopbackAsync()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accept = Task.Run(async () =>
        {
            using var peer = await listener.AcceptSocketAsync();
            var buffer = new byte[65536];
            long got = 0;
            while (got < Size)
            {
                var n = await peer.ReceiveAsync(buffer, SocketFlags.None);
                if (n == 0)
                {
                    throw new InvalidOperationException($"the stream ended after {got} bytes");
                }

                got += n;
            }

            await peer.SendAsync("done\n"u8.ToArray(), SocketFlags.None);
        });
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync(listener.LocalEndpoint);
        var chunk = new byte[65536];
        var watch = Stopwatch.StartNew();
        for (var sent = 0; sent < Size; sent += chunk.Length)
        {
            await s.SendAsync(chunk, SocketFlags.None);
        }

        var answer = new byte[16];
        _ = await s.ReceiveAsync(answer, SocketFlags.None);
        var seconds = watch.Elapsed.TotalSeconds;
        await accept;
        return seconds;
    }

    private static async Task<double> GuestAsync(byte[] kernel, byte[] serverDisk, byte[] clientDisk)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 450 });
        var network = hv.Switch("br0");
        var consoles = new List<(Domain D, GuestConsole Console)>();
        foreach (var (name, disk, mac) in new[] { ("net-b", serverDisk, "00:16:3e:00:00:b2"), ("net-a", clientDisk, "00:16:3e:00:00:a1") })
        {
            var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = name, MemoryMiB = 192, AutoTranslated = false, CommandLine = "console=hvc0 quiet" }, kernel, disk);
            d.AttachNic(network, new NicOptions { Mac = MacAddress.Parse(mac) });
            consoles.Add((d, new GuestConsole(d)));
            PvKernelStart.Start(d, boot);
        }

        var (b, bSeen) = consoles[0];
        var (a, aSeen) = consoles[1];
        await Until(() => bSeen.Text.Contains("LISTENING", StringComparison.Ordinal), b, bSeen);
        await Until(() => aSeen.Text.Contains("T0", StringComparison.Ordinal), a, aSeen, send: "go\n");
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var (ca0, cb0) = (a.CpuTimeNs, b.CpuTimeNs);
        long Decodes(Domain d) => d.VcpuList[0].Pv.Engine!.Interpreter.BlocksDecoded;
        long Insns(Domain d) => d.VcpuList[0].Pv.Engine!.Instructions;
        var (da0, db0, ia0, ib0) = (Decodes(a), Decodes(b), Insns(a), Insns(b));
        var wall = Stopwatch.StartNew();
        await Until(() => Stamp().Matches(aSeen.Text).Count >= 2, a, aSeen);
        Console.WriteLine($"  blocks decoded A {Decodes(a) - da0:N0}, B {Decodes(b) - db0:N0}; instructions A {Insns(a) - ia0:N0}, B {Insns(b) - ib0:N0}");
        Console.WriteLine($"  transfer: wall {wall.Elapsed.TotalSeconds:F2} s, process CPU {(Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds:F2} s, vCPU A {(a.CpuTimeNs - ca0) / 1e9:F2} s, vCPU B {(b.CpuTimeNs - cb0) / 1e9:F2} s");
        var stamps = Stamp().Matches(aSeen.Text);
        var t0 = double.Parse(stamps[0].Groups["t"].Value, CultureInfo.InvariantCulture);
        var t1 = double.Parse(stamps[1].Groups["t"].Value, CultureInfo.InvariantCulture);
        if (!aSeen.Text.Contains("done", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"the receiver did not answer done: {aSeen.Tail()}");
        }

        foreach (var (d, console) in consoles)
        {
            d.Destroy();
            await console.Completed.WaitAsync(TimeSpan.FromMinutes(1));
        }

        return t1 - t0;
    }

    /// <summary>Waits (bounded, polling the console text a guest has printed) until <paramref name="done"/>; sends <paramref name="send"/> to the console first.</summary>
    private static async Task Until(Func<bool> done, Domain d, GuestConsole console, string? send = null)
    {
        if (send is not null)
        {
            await d.Console.Input.WriteAsync(Encoding.ASCII.GetBytes(send));
        }

        var deadline = Stopwatch.StartNew();
        while (!done())
        {
            if (d.Exit is not null || deadline.Elapsed > TimeSpan.FromMinutes(5))
            {
                throw new InvalidOperationException($"{d.Name} ended or took too long ({d.Exit}); its console ends:\n{console.Tail()}");
            }

            await Task.Delay(50);
        }
    }

    [GeneratedRegex(@"^T\d (?<t>\d+\.\d+)", RegexOptions.Multiline)]
    private static partial Regex Stamp();
}
