using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Benchmarks.Linux;

/// <summary>
/// Linux's own xen-blkfront (Debian's cloud kernel and its module) reading and writing 64 MiB of
/// a file-backed <c>xvda</c> with busybox <c>dd</c> (1 MiB blocks; the write ends with fsync), timed
/// by the guest's clock (Xen system time, the host's monotonic clock), beside the host reading and
/// writing the same file itself in 1 MiB calls, in the same run. <c>dotnet run -c Release --project
/// Paravirt.Benchmarks -- --linux-disk [N]</c>: N guest runs (one boot each) and their medians.
/// Needs <c>./test.sh</c>'s kernel cache. Not a BenchmarkDotNet run (an operation is a Linux boot).
/// </summary>
public static partial class LinuxDiskBenchmarks
{
    private const int MiB = 1 << 20;
    private const int Size = 64 * MiB;

    public static async Task<int> RunAsync(int iterations)
    {
        var kernel = KernelCache.Kernel();
        var module = KernelCache.CloudModule("xen-blkfront.ko");
        var busybox = KernelCache.Busybox;
        var image = Path.Combine(Path.GetTempPath(), $"paravirt-disk-{Environment.ProcessId}.img");
        var data = new byte[Size];
        new Random(20261208).NextBytes(data);
        await File.WriteAllBytesAsync(image, data);
        const string Wait = "n=0; while [ ! -b /dev/xvda ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done";
        var init = $"""
            #!/bin/sh
            mount -t proc proc /proc
            mount -t sysfs sys /sys
            mount -t devtmpfs dev /dev
            insmod /xen-blkfront.ko
            {Wait}
            echo "T0 $(cat /proc/uptime)"
            dd if=/dev/xvda of=/dev/null bs=1M count=64 2>/dev/null
            echo "T1 $(cat /proc/uptime)"
            dd if=/dev/zero of=/dev/xvda bs=1M count=64 conv=fsync 2>/dev/null
            echo "T2 $(cat /proc/uptime)"
            poweroff -f
            """;
        var ramdisk = Initramfs.Busybox(busybox, init, "mount", "cat", "echo", "sleep", "insmod", "dd", "poweroff", "sh")
            .FileEntry("xen-blkfront.ko", await File.ReadAllBytesAsync(module)).ToGzip();
        try
        {
            var guestRead = new List<double>();
            var guestWrite = new List<double>();
            var hostRead = new List<double>();
            var hostWrite = new List<double>();
            for (var i = 0; i < iterations; i++)
            {
                await File.WriteAllBytesAsync(image, data);
                var (read, write) = await GuestAsync(kernel, ramdisk, image);
                guestRead.Add(read);
                guestWrite.Add(write);
                var (hr, hw) = Host(image);
                hostRead.Add(hr);
                hostWrite.Add(hw);
                Console.WriteLine($"run {i + 1}: guest read {Rate(read)}, write {Rate(write)}; host read {Rate(hr)}, write {Rate(hw)}");
            }

            Console.WriteLine("| 64 MiB, 1 MiB blocks | host (baseline) | Linux blkfront on Paravirt | ratio (time) |");
            Console.WriteLine("|---|---|---|---|");
            Console.WriteLine($"| read | {Rate(Median(hostRead))} | {Rate(Median(guestRead))} | {Median(guestRead) / Median(hostRead):F1}× |");
            Console.WriteLine($"| write + fsync | {Rate(Median(hostWrite))} | {Rate(Median(guestWrite))} | {Median(guestWrite) / Median(hostWrite):F1}× |");
            return 0;
        }
        finally
        {
            File.Delete(image);
        }
    }

    private static string Rate(double seconds) => $"{64 / seconds:F0} MiB/s ({seconds:F2} s)";

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>The host's own read and write of the file: 1 MiB calls, the write flushed to the device.</summary>
    private static (double Read, double Write) Host(string image)
    {
        var buffer = new byte[MiB];
        var watch = Stopwatch.StartNew();
        using (var f = new FileStream(image, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None))
        {
            while (f.Read(buffer) > 0)
            {
            }
        }

        var read = watch.Elapsed.TotalSeconds;
        watch.Restart();
        using (var f = new FileStream(image, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1, FileOptions.None))
        {
            for (var i = 0; i < Size / MiB; i++)
            {
                f.Write(buffer);
            }

            f.Flush(flushToDisk: true);
        }

        return (read, watch.Elapsed.TotalSeconds);
    }

    private static async Task<(double Read, double Write)> GuestAsync(string kernel, byte[] ramdisk, string image)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 300 });
        var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = "disk-bench", MemoryMiB = 256, AutoTranslated = false, CommandLine = "console=hvc0 quiet" }, await File.ReadAllBytesAsync(kernel), ramdisk);
        await using var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true));
        var console = new GuestConsole(d);
        PvKernelStart.Start(d, boot);
        await d.WaitForShutdownAsync().WaitAsync(TimeSpan.FromMinutes(5));
        d.Destroy();
        await console.Completed.WaitAsync(TimeSpan.FromMinutes(1));
        var text = console.Text;
        double At(string mark) => Stamp().Match(text[text.IndexOf($"{mark} ", StringComparison.Ordinal)..]) is { Success: true } m
            ? double.Parse(m.Groups["t"].Value, CultureInfo.InvariantCulture)
            : throw new InvalidOperationException($"the guest printed no {mark}: {text[^Math.Min(2000, text.Length)..]}");
        var (t0, t1, t2) = (At("T0"), At("T1"), At("T2"));
        return (t1 - t0, t2 - t1);
    }

    [GeneratedRegex(@"^T\d (?<t>\d+\.\d+)", RegexOptions.Multiline)]
    private static partial Regex Stamp();
}
