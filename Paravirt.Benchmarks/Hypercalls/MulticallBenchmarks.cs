using BenchmarkDotNet.Attributes;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Core.Hypercalls;

namespace Paravirt.Benchmarks.Hypercalls;

/// <summary>
/// One <c>multicall</c> of 32 null entries (xen_version(XENVER_version)) through a managed vCPU's
/// gate, beside 32 direct interface calls to the same handler. Target: ≤ 2×, 0 bytes.
/// </summary>
[MemoryDiagnoser]
public class MulticallBenchmarks
{
    private const int Entries = 32;
    private Hypervisor _hv = null!;
    private IGuestCpu _gate = null!;
    private IVersionHandler _direct = null!;
    private Vcpu _vcpu = null!;
    private ulong _list;

    [GlobalSetup]
    public unsafe void Setup()
    {
        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 16 });
        var domain = _hv.CreateDomain(new DomainConfig { Name = "bench", MemoryMiB = 4 });
        _vcpu = domain.Vcpus[0];
        _gate = BenchGuest.Gate(domain);
        _direct = new VersionHandler();
        _list = BenchGuest.Scratch(domain, _gate);
        for (var i = 0; i < Entries; i++)
        {
            var entry = new multicall_entry { op = Xen.__HYPERVISOR_xen_version, result = ulong.MaxValue };
            entry.args[0] = XenVersion.XENVER_version;
            _gate.Memory.Write(_list + (ulong)(i * sizeof(multicall_entry)), entry);
        }

        BenchGuest.Expect(Multicall(), "multicall");
        var last = _gate.Memory.Read<multicall_entry>(_list + (ulong)((Entries - 1) * sizeof(multicall_entry)));
        if ((long)last.result != ((Hypervisor.MajorVersion << 16) | Hypervisor.MinorVersion))
        {
            throw new InvalidOperationException($"the last entry's result is 0x{last.result:x}; expected the version");
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _hv.Dispose();

    [Benchmark(Baseline = true)]
    public long DirectInterfaceCalls()
    {
        long sum = 0;
        for (var i = 0; i < Entries; i++)
        {
            sum += _direct.Handle(_vcpu, XenVersion.XENVER_version, 0, 0, 0, 0);
        }

        return sum;
    }

    [Benchmark]
    public long Multicall() => _gate.Hypercall(Xen.__HYPERVISOR_multicall, _list, Entries);

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
