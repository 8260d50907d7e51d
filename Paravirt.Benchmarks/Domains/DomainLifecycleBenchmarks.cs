using BenchmarkDotNet.Attributes;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;

namespace Paravirt.Benchmarks.Domains;

/// <summary>
/// Create + start + destroy of a managed domain with 4 MiB (its kernel blocks in SCHEDOP_block
/// until the destroy takes it out), beside starting and joining a host thread. Reported, no target.
/// </summary>
[MemoryDiagnoser]
public class DomainLifecycleBenchmarks
{
    private Hypervisor _hv = null!;
    private int _next;

    [GlobalSetup]
    public void Setup() => _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });

    [GlobalCleanup]
    public void Cleanup() => _hv.Dispose();

    [Benchmark(Baseline = true)]
    public void StartAndJoinThread()
    {
        var thread = new Thread(static () => { });
        thread.Start();
        thread.Join();
    }

    [Benchmark]
    public void CreateStartDestroy()
    {
        var domain = _hv.CreateDomain(new DomainConfig { Name = $"life{_next++}", MemoryMiB = 4 });
        domain.Start(BlockingKernel.Instance);
        domain.Destroy();
    }

    /// <summary>A kernel that blocks until its domain goes away.</summary>
    internal sealed class BlockingKernel : ManagedKernel
    {
        public static readonly BlockingKernel Instance = new();

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            while (true)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
            }
        }
    }
}
