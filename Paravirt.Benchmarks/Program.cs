using BenchmarkDotNet.Running;
using Paravirt.Benchmarks.Domains;

// `--density [N]`: N managed domains alive at once and the host memory each costs (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--density")
{
    return Density.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1000);
}

// `--linux-boot [N]`: Debian's Linux to /init on Paravirt beside QEMU TCG, N boots each (not a BenchmarkDotNet run).
if (args.Length > 0 && args[0] == "--linux-boot")
{
    return await Paravirt.Benchmarks.Linux.LinuxBootBenchmarks.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 3);
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
