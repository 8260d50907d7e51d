using System.Diagnostics;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;

namespace Paravirt.Benchmarks.Domains;

/// <summary>
/// <c>--density [N]</c>: N (default 1,000) managed domains of 4 MiB alive at once, each vCPU thread
/// blocked in SCHEDOP_block, and what the host pays per domain beyond its RAM. The hypervisor's
/// machine memory is touched page by page before the first domain exists, so guest RAM is already
/// resident in the "before" figures and the deltas are the host's own cost: managed heap, native
/// allocations, thread stacks and kernel bookkeeping.
/// </summary>
internal static class Density
{
    private const int RamMiB = 4;

    public static unsafe int Run(int count)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = (count * (RamMiB + 1)) + 64, MaxDomains = count + 16 });

        // Make every machine frame resident now, so guest RAM is not counted as overhead below.
        for (var mfn = 0UL; mfn < (ulong)hv.Machine.Frames; mfn++)
        {
            hv.Machine.FramePointer(mfn)[0] = 0;
        }

        var before = Snapshot();
        var domains = new List<Domain>(count);
        var kernel = new ParkedKernel(count);
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < count; i++)
        {
            domains.Add(hv.CreateDomain(new DomainConfig { Name = $"dense{i}", MemoryMiB = RamMiB }));
        }

        var created = clock.Elapsed;
        var afterCreate = Snapshot();
        foreach (var d in domains)
        {
            d.Start(kernel);
        }

        if (!kernel.AllBlocked.Wait(TimeSpan.FromMinutes(5)))
        {
            Console.Error.WriteLine($"only {count - kernel.AllBlocked.CurrentCount} of {count} guests reached SCHEDOP_block within 5 minutes");
            return 1;
        }

        Thread.Sleep(500); // let the last threads settle into their wait before reading the working set
        var started = clock.Elapsed;
        var afterStart = Snapshot();
        var alive = domains.Count(d => d.State == DomainState.Running);

        Console.WriteLine($"density: {count} managed domains of {RamMiB} MiB, {alive} running and blocked at once");
        Console.WriteLine($"  create {count}: {created.TotalMilliseconds:F0} ms ({created.TotalMilliseconds * 1000 / count:F0} µs each); start: {(started - created).TotalMilliseconds:F0} ms");
        Report("created (not started)", before, afterCreate, count);
        Report("started (one blocked vCPU thread each)", before, afterStart, count);

        clock.Restart();
        foreach (var d in domains)
        {
            d.Destroy();
        }

        Console.WriteLine($"  destroy {count}: {clock.Elapsed.TotalMilliseconds:F0} ms; free frames back to {hv.FreeFrames} of {hv.TotalFrames}");
        return alive == count ? 0 : 1;
    }

    private static (long Heap, long Committed, long WorkingSet, long Private, int Threads) Snapshot()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        return (GC.GetTotalMemory(false), GC.GetGCMemoryInfo().TotalCommittedBytes, process.WorkingSet64, process.PrivateMemorySize64, process.Threads.Count);
    }

    private static void Report(string stage, (long Heap, long Committed, long WorkingSet, long Private, int Threads) a, (long Heap, long Committed, long WorkingSet, long Private, int Threads) b, int count)
    {
        static string PerDomain(long delta, int n) => $"{delta / (double)n / 1024:F1} KiB";
        Console.WriteLine($"  {stage}:");
        Console.WriteLine($"    GC heap (live)      +{(b.Heap - a.Heap) / 1048576.0:F1} MiB = {PerDomain(b.Heap - a.Heap, count)} per domain");
        Console.WriteLine($"    GC committed        +{(b.Committed - a.Committed) / 1048576.0:F1} MiB = {PerDomain(b.Committed - a.Committed, count)} per domain");
        Console.WriteLine($"    working set         +{(b.WorkingSet - a.WorkingSet) / 1048576.0:F1} MiB = {PerDomain(b.WorkingSet - a.WorkingSet, count)} per domain (guest RAM already resident)");
        Console.WriteLine($"    private bytes       +{(b.Private - a.Private) / 1048576.0:F1} MiB = {PerDomain(b.Private - a.Private, count)} per domain");
        Console.WriteLine($"    threads             +{b.Threads - a.Threads}");
    }

    /// <summary>A kernel that reports reaching its first SCHEDOP_block and then blocks until destroyed.</summary>
    private sealed class ParkedKernel(int count) : ManagedKernel
    {
        public CountdownEvent AllBlocked { get; } = new(count);

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            AllBlocked.Signal();
            while (true)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
            }
        }
    }
}
