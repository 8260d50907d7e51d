using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>Two vCPUs racing on one frame: one maps it writable and unmaps it, the other pins and unpins it as an L1.</summary>
public sealed class PvConcurrencyTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;
    private const int Rounds = 2000;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task Racing_Writable_Mappings_And_Pins_Keep_Types_And_References_Consistent()
    {
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildAndEnter();
        d.MmuUpdate((d.PtePtr(t.L1, 100), 0)).Should().Be(0);
        var target = d.NewUnmappedPage();
        var targetMfn = d.Mfn(target);
        var refs = _hv.Frames.ReferenceCount(targetMfn);
        var mapper = d.Domain.VcpuList[1];
        PvMemory.SetKernelBase(mapper, d.Mfn(t.L4)).Should().Be(0);
        var mapBuffer = d.NewPage() << 12;
        var pinBuffer = d.NewPage() << 12;
        var ct = TestContext.Current.CancellationToken;

        long MmuUpdate(ulong value)
        {
            d.Domain.Memory.TryWrite(mapBuffer, new mmu_update { ptr = d.PtePtr(t.L1, 100), val = value }).Should().BeTrue();
            return _hv.Hypercalls.Invoke(mapper, Xen.__HYPERVISOR_mmu_update, mapBuffer, 1, 0, Xen.DOMID_SELF, 0);
        }

        long MmuExt(int cmd)
        {
            var op = new mmuext_op { cmd = (uint)cmd };
            op.arg1.mfn = targetMfn;
            d.Domain.Memory.TryWrite(pinBuffer, op).Should().BeTrue();
            return _hv.Hypercalls.Invoke(d.Vcpu, Xen.__HYPERVISOR_mmuext_op, pinBuffer, 1, 0, Xen.DOMID_SELF, 0);
        }

        var mapped = 0;
        var pinned = 0;
        var mapping = Task.Run(() =>
        {
            for (var i = 0; i < Rounds; i++)
            {
                var rc = MmuUpdate((targetMfn << 12) | P | RW);
                rc.Should().BeOneOf(0, -(long)Errno.EBUSY);
                if (rc == 0)
                {
                    mapped++;
                    PvMemory.TypeOf(d.Domain, targetMfn).Should().Be(PageType.Writable, "a frame mapped writable is no page table");
                    MmuUpdate(0).Should().Be(0);
                }
            }
        }, ct);
        var pinning = Task.Run(() =>
        {
            for (var i = 0; i < Rounds; i++)
            {
                var rc = MmuExt(Xen.MMUEXT_PIN_L1_TABLE);
                rc.Should().BeOneOf(0, -(long)Errno.EINVAL);
                if (rc == 0)
                {
                    pinned++;
                    PvMemory.TypeOf(d.Domain, targetMfn).Should().Be(PageType.L1, "a pinned table cannot gain a writable mapping");
                    MmuExt(Xen.MMUEXT_UNPIN_TABLE).Should().Be(0);
                }
            }
        }, ct);
        await Task.WhenAll(mapping, pinning).WaitAsync(TimeSpan.FromSeconds(60), ct);

        (mapped + pinned).Should().BeGreaterThan(0);
        _hv.Frames.Types.CountOf(targetMfn).Should().Be(0);
        _hv.Frames.ReferenceCount(targetMfn).Should().Be(refs, "every reference taken was given back");
        d.Read(t.L1, 100).Should().Be(0);
    }
}
