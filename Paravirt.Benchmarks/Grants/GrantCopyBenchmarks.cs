using BenchmarkDotNet.Attributes;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;

namespace Paravirt.Benchmarks.Grants;

/// <summary>
/// <c>GNTTABOP_copy</c> of a whole 4 KiB page, beside <see cref="Buffer.MemoryCopy"/> of 4 KiB:
/// a managed guest's gate copying another domain's read-only grant into its own frame (the
/// headline), and the host's <see cref="HostGrants.Copy"/> between two grants to domain 0.
/// Target: ≤ 1.25×, 0 bytes.
/// </summary>
[MemoryDiagnoser]
public unsafe class GrantCopyBenchmarks
{
    private const int PageSize = 4096;
    private Hypervisor _hv = null!;
    private IGuestCpu _copier = null!;
    private ulong _copyOp;
    private GrantReference _hostSource;
    private GrantReference _hostDest;
    private byte* _from;
    private byte* _to;

    [GlobalSetup]
    public void Setup()
    {
        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 32 });
        var granter = _hv.CreateDomain(new DomainConfig { Name = "granter", MemoryMiB = 4 });
        var copier = _hv.CreateDomain(new DomainConfig { Name = "copier", MemoryMiB = 4 });
        var granterGate = BenchGuest.Gate(granter);
        _copier = BenchGuest.Gate(copier);

        // The granter shares three data pages: one with the copier, two with domain 0.
        var table = BenchGuest.MapGrantFrame(granterGate, granter.StartInfoAddress);
        var data = BenchGuest.Scratch(granter, granterGate) + 0x10000;
        var fill = new byte[PageSize];
        for (var page = 0; page < 3; page++)
        {
            Array.Fill(fill, (byte)(0x40 + page));
            granterGate.Memory.Write(data + (ulong)(page * PageSize), (ReadOnlySpan<byte>)fill);
        }

        BenchGuest.GrantV1(granterGate, table, 8, copier.Id, (data >> 12) + 0, readOnly: true);
        BenchGuest.GrantV1(granterGate, table, 9, 0, (data >> 12) + 1, readOnly: true);
        BenchGuest.GrantV1(granterGate, table, 10, 0, (data >> 12) + 2, readOnly: false);

        var scratch = BenchGuest.Scratch(copier, _copier);
        var destGfn = (scratch + 0x10000) >> 12;
        _copyOp = scratch;
        _copier.Memory.Write(_copyOp, new gnttab_copy
        {
            source = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { @ref = 8 }, domid = granter.Id, offset = 0 },
            dest = new gnttab_copy_ptr { u = new gnttab_copy_ptr.U { gmfn = destGfn }, domid = Xen.DOMID_SELF, offset = 0 },
            len = PageSize,
            flags = GrantTable.GNTCOPY_source_gref,
        });
        BenchGuest.Expect(GuestGateCopy(), "GNTTABOP_copy");
        var status = _copier.Memory.Read<gnttab_copy>(_copyOp).status;
        if (status != GrantTable.GNTST_okay || _copier.Memory.Read<byte>(destGfn << 12) != 0x40)
        {
            throw new InvalidOperationException($"the guest's grant copy did not copy (status {status})");
        }

        _hostSource = new GrantReference(granter, 9);
        _hostDest = new GrantReference(granter, 10);
        if (HostGrantCopy() != GrantStatus.Okay || granterGate.Memory.Read<byte>(data + (2 * PageSize)) != 0x41)
        {
            throw new InvalidOperationException("the host's grant copy did not copy");
        }

        _from = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(PageSize, PageSize);
        _to = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(PageSize, PageSize);
        new Span<byte>(_from, PageSize).Fill(0x5A);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _hv.Dispose();
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_from);
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_to);
    }

    [Benchmark(Baseline = true)]
    public void MemoryCopy4K() => Buffer.MemoryCopy(_from, _to, PageSize, PageSize);

    [Benchmark]
    public long GuestGateCopy() => _copier.Hypercall(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_copy, _copyOp, 1);

    [Benchmark]
    public GrantStatus HostGrantCopy() => _hv.HostGrants.Copy(_hostSource, _hostDest, PageSize);
}
