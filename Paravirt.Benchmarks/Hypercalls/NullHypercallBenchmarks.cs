using BenchmarkDotNet.Attributes;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Core.Hypercalls;

namespace Paravirt.Benchmarks.Hypercalls;

/// <summary>
/// The null hypercall (xen_version(XENVER_version)) through a managed vCPU's gate, beside the
/// baseline that bounds it: a direct interface call to the same handler. Target: ≤ 3×, 0 bytes.
/// </summary>
[MemoryDiagnoser]
public class NullHypercallBenchmarks
{
    private Hypervisor _hv = null!;
    private IGuestCpu _gate = null!;
    private IVersionHandler _direct = null!;
    private Vcpu _vcpu = null!;

    [GlobalSetup]
    public void Setup()
    {
        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 16 });
        var domain = _hv.CreateDomain(new DomainConfig { Name = "bench", MemoryMiB = 4 });
        _vcpu = domain.Vcpus[0];
        _vcpu.SetDown(false); // as Domain.Start does for vCPU 0: the gate parks a vCPU that is down
        _gate = new ManagedCpu(domain, _vcpu);
        _direct = new VersionHandler();
    }

    [GlobalCleanup]
    public void Cleanup() => _hv.Dispose();

    [Benchmark(Baseline = true)]
    public long DirectInterfaceCall() => _direct.Handle(_vcpu, XenVersion.XENVER_version, 0, 0, 0, 0);

    [Benchmark]
    public long HypercallThroughGate() => _gate.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);

    private interface IVersionHandler
    {
        long Handle(Vcpu vcpu, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5);
    }

    private sealed class VersionHandler : IVersionHandler
    {
        // Not inlined: the baseline is a real call into the handler, not a constant the JIT folded
        // (in process, PGO devirtualizes the interface call and would fold XENVER_version away).
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        public long Handle(Vcpu vcpu, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5) => XenVersionOp.Handle(vcpu, a1, a2, a3, a4, a5);
    }
}
