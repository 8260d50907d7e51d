using BenchmarkDotNet.Attributes;
using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Benchmarks.Interpreter;

/// <summary>
/// The interpreter through the whole PV engine: a classic PV domain with 4-level page tables
/// (every access through the MMU and TLB, memory through the domain's frames), a vCPU thread
/// running slices, and <c>syscall</c> hypercalls. Each invocation builds the domain, runs the
/// kernel to SCHEDOP_shutdown and destroys it; the figure is per guest instruction (or per
/// hypercall), beside <see cref="InterpreterBenchmarks"/>' flat-memory loop.
/// </summary>
public class PvEngineBenchmarks
{
    private const ulong CodeVa = 0x10_0000;
    private const ulong DataVa = 0x20_0000;
    private const ulong StackTop = 0x30_0000;
    private const int MemoryMiB = 4;

    // The integer loop of InterpreterBenchmarks: add, xor, dec, jnz.
    private const int IntegerIterations = 5_000_000;
    private const int IntegerInstructions = 4 * IntegerIterations;

    // xen_version(XENVER_version) in a loop: mov, syscall, dec, jnz per hypercall.
    private const int Hypercalls = 200_000;

    private Hypervisor _hv = null!;

    [GlobalSetup]
    public void Setup() => _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });

    [GlobalCleanup]
    public void Cleanup() => _hv.Dispose();

    [Benchmark(OperationsPerInvoke = IntegerInstructions)]
    public long IntegerLoopOnPvEngine() => Run(a =>
    {
        var loop = a.CreateLabel();
        a.mov(ecx, IntegerIterations);
        a.Label(ref loop);
        a.add(rax, rcx);
        a.xor(rdx, rax);
        a.dec(ecx);
        a.jnz(loop);
    });

    [Benchmark(OperationsPerInvoke = Hypercalls)]
    public long NullHypercallOnPvEngine() => Run(a =>
    {
        var loop = a.CreateLabel();
        a.mov(ebx, Hypercalls);
        a.Label(ref loop);
        a.mov(eax, Xen.__HYPERVISOR_xen_version);
        a.xor(edi, edi);
        a.syscall();
        a.dec(ebx);
        a.jnz(loop);
    });

    private long Run(Action<Assembler> body)
    {
        var domain = _hv.CreateDomain(new DomainConfig { Name = $"bench-{Guid.NewGuid():N}", MemoryMiB = MemoryMiB, AutoTranslated = false });
        try
        {
            var vcpu = domain.VcpuList[0];
            vcpu.Pv.KernelBaseMfn = BuildIdentityTables(domain);
            var a = new Assembler(64);
            body(a);
            a.mov(__dword_ptr[DataVa], Sched.SHUTDOWN_poweroff);
            a.mov(edi, Sched.SCHEDOP_shutdown);
            a.mov(esi, (uint)DataVa);
            a.mov(eax, Xen.__HYPERVISOR_sched_op);
            a.syscall();
            a.ud2();
            using var stream = new MemoryStream();
            a.Assemble(new StreamCodeWriter(stream), CodeVa);
            if (!domain.Memory.TryWrite(CodeVa, stream.ToArray()))
            {
                throw new InvalidOperationException("the benchmark kernel does not fit");
            }

            PvEngine.Start(domain, vcpu, new PvEntry(CodeVa, StackTop, domain.StartInfoAddress));
            var exit = domain.WaitForShutdownAsync().WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
            if (exit.State != DomainState.Shutdown)
            {
                throw new InvalidOperationException($"the benchmark kernel ended {exit.State}: {exit.Reason}");
            }

            return domain.Meter.TotalHypercalls;
        }
        finally
        {
            domain.Destroy();
        }
    }

    /// <summary>Virtual = pseudo-physical over the domain's memory, present, writable, user; the tables from start_info.pt_base.</summary>
    private static ulong BuildIdentityTables(Domain domain)
    {
        if (!domain.Memory.TryRead(domain.StartInfoAddress, out start_info si))
        {
            throw new InvalidOperationException("no start_info");
        }

        var next = si.pt_base >> 12;
        ulong Mfn(ulong pfn) => domain.PhysMap.TryLookup(pfn, out var mfn, out _) ? mfn : throw new InvalidOperationException($"pfn {pfn}");
        void Entry(ulong table, ulong index, ulong pfn) => domain.Memory.TryWrite((table << 12) + (index * 8), (Mfn(pfn) << 12) | 7);

        ulong l4 = next++, l3 = next++, l2 = next++;
        Entry(l4, 0, l3);
        Entry(l3, 0, l2);
        var pages = (ulong)MemoryMiB * 256;
        var l1Base = next;
        for (ulong i = 0; i < pages / 512; i++)
        {
            Entry(l2, i, next++);
        }

        for (ulong pfn = 0; pfn < pages; pfn++)
        {
            Entry(l1Base + (pfn / 512), pfn % 512, pfn);
        }

        return Mfn(l4);
    }
}
