using System.Diagnostics;
using System.Text;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Benchmarks.Linux;

/// <summary>
/// Debian's cloud kernel (LZ4 bzImage; or with <c>--generic</c> the generic one, XZ) from power-on
/// to its busybox <c>/init</c> printing a marker, as a 64-bit PV domU on the interpreter, beside
/// QEMU's TCG (the speed peer: a software x86 emulator booting the same kernel and initramfs
/// natively, serial console), in the same run, on 1 vCPU or <c>--vcpus N</c> (QEMU gets as many).
/// Tens of seconds an operation: <c>dotnet run -c Release --project Paravirt.Benchmarks --
/// --linux-boot [N] [--generic] [--vcpus V]</c> times N boots of each, alternating, and prints the medians and their ratio
/// (BenchmarkDotNet's in-process toolchain refuses operations this long). Needs <c>./test.sh</c>'s
/// kernel cache (<see cref="KernelCache"/>) and, for the baseline,
/// <c>apt-get install qemu-system-x86</c> (benchmarks only; the tests never use it).
/// </summary>
public sealed class LinuxBootBenchmarks
{
    /// <summary>Boots each <paramref name="iterations"/> times, alternating, and prints the table; 0 on success.</summary>
    public static async Task<int> RunAsync(int iterations, bool generic = false, int vcpus = 1)
    {
        var bench = new LinuxBootBenchmarks { _flavour = generic ? "linux-generic" : "linux-cloud", _vcpus = vcpus };
        bench.Setup();
        try
        {
            var paravirt = new List<double>();
            var qemu = new List<double>();
            for (var i = 0; i < iterations; i++)
            {
                paravirt.Add(await Time(bench.Paravirt));
                qemu.Add(await Time(bench.QemuTcg));
                Console.WriteLine($"boot {i + 1}: Paravirt {paravirt[^1]:F2} s, QEMU TCG {qemu[^1]:F2} s");
            }

            var (p, q) = (Median(paravirt), Median(qemu));
            Console.WriteLine($"| Debian kernel to /init ({Path.GetFileName(bench._kernel)}, {vcpus} vCPU) | median of {iterations} | ratio |");
            Console.WriteLine("|---|---|---|");
            Console.WriteLine($"| QEMU TCG (baseline) | {q:F2} s | 1.00 |");
            Console.WriteLine($"| Paravirt (PV domU, interpreter) | {p:F2} s | {p / q:F2} |");
            return 0;
        }
        finally
        {
            bench.Cleanup();
        }
    }

    private static async Task<double> Time(Func<Task> boot)
    {
        var watch = Stopwatch.StartNew();
        await boot();
        return watch.Elapsed.TotalSeconds;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private const string Marker = "PARAVIRT-BENCH-INIT";
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(5);
    private string _kernel = "";
    private string _flavour = "linux-cloud";
    private int _vcpus = 1;
    private byte[] _kernelBytes = [];
    private byte[] _initramfs = [];
    private string _initramfsPath = "";

    public void Setup()
    {
        _kernel = KernelCache.Kernel(_flavour);
        var busybox = KernelCache.Busybox;
        _kernelBytes = File.ReadAllBytes(_kernel);
        _initramfs = Initramfs.Busybox(busybox, $"#!/bin/sh\necho {Marker}\nexec sh\n").ToGzip();
        _initramfsPath = Path.Combine(Path.GetTempPath(), $"paravirt-bench-{Environment.ProcessId}.gz");
        File.WriteAllBytes(_initramfsPath, _initramfs);
    }

    public void Cleanup() => File.Delete(_initramfsPath);

    /// <summary>Paravirt: the kernel as a PV domU on the interpreter, to /init's marker on hvc0.</summary>
    public async Task Paravirt()
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 300 });
        var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = "bench", MemoryMiB = 256, Vcpus = _vcpus, AutoTranslated = false, CommandLine = "console=hvc0" }, _kernelBytes, _initramfs);
        PvKernelStart.Start(d, boot);
        using var cts = new CancellationTokenSource(Bound);
        var seen = new StringBuilder();
        while (!seen.ToString().Contains(Marker, StringComparison.Ordinal))
        {
            var result = await d.Console.Output.ReadAsync(cts.Token);
            foreach (var segment in result.Buffer)
            {
                seen.Append(Encoding.Latin1.GetString(segment.Span));
            }

            d.Console.Output.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                throw new InvalidOperationException($"the domain ended before /init: {d.Exit}");
            }
        }

        d.Destroy();
    }

    /// <summary>The baseline: QEMU's TCG, to /init's marker on the serial console.</summary>
    public async Task QemuTcg()
    {
        var start = new ProcessStartInfo("qemu-system-x86_64")
        {
            ArgumentList = { "-accel", "tcg", "-smp", _vcpus.ToString(System.Globalization.CultureInfo.InvariantCulture), "-m", "256", "-kernel", _kernel, "-initrd", _initramfsPath, "-append", "console=ttyS0", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none" },
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        using var qemu = Process.Start(start) ?? throw new InvalidOperationException("qemu-system-x86_64 did not start (apt-get install qemu-system-x86)");
        try
        {
            using var cts = new CancellationTokenSource(Bound);
            while (await qemu.StandardOutput.ReadLineAsync(cts.Token) is { } line)
            {
                if (line.Contains(Marker, StringComparison.Ordinal))
                {
                    return;
                }
            }

            throw new InvalidOperationException("QEMU ended before /init");
        }
        finally
        {
            qemu.Kill();
            await qemu.WaitForExitAsync();
        }
    }
}
