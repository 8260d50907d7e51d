using BenchmarkDotNet.Running;
using Paravirt.Benchmarks.Domains;

// `--density [N]`: N managed domains alive at once and the host memory each costs (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--density")
{
    return Density.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1000);
}

// `--linux-boot [N] [--generic] [--vcpus V]`: Debian's Linux to /init on Paravirt beside QEMU TCG, N boots each (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--linux-boot")
{
    var invariant = System.Globalization.CultureInfo.InvariantCulture;
    var count = args.Length > 1 && int.TryParse(args[1], invariant, out var n) ? n : 3;
    var vcpus = Array.IndexOf(args, "--vcpus") is var at and >= 0 && at + 1 < args.Length ? int.Parse(args[at + 1], invariant) : 1;
    return await Paravirt.Benchmarks.Linux.LinuxBootBenchmarks.RunAsync(count, args.Contains("--generic"), vcpus);
}

// `--linux-disk [N]`: Linux's own blkfront reading and writing 64 MiB beside the host's own I/O (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--linux-disk")
{
    return await Paravirt.Benchmarks.Linux.LinuxDiskBenchmarks.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 3);
}

// `--linux-net [N]`: a 16 MiB TCP stream between two Linux guests' own netfronts beside the host's loopback (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--linux-net")
{
    return await Paravirt.Benchmarks.Linux.LinuxNetBenchmarks.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 3);
}

// In process by default: each pair compares two methods of one class in one process, so a separate
// generated project gains nothing and its build (minutes on a busy 2-core machine, past
// BenchmarkDotNet's build timeout) would dwarf a short job. `--outOfProcess` restores the default.
var outOfProcess = args.Contains("--outOfProcess");
args = [.. args.Where(a => a != "--outOfProcess")];
if (!outOfProcess && !args.Contains("--inProcess") && !args.Contains("-i"))
{
    args = [.. args, "--inProcess"];
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
