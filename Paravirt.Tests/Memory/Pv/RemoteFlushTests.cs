using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// Xen's TLB shootdown is synchronous: flush_tlb_mask IPIs the other CPUs and waits, so when
/// update_va_mapping with a vCPU mask returns, no vCPU in the mask can still translate through the
/// old entry. Linux relies on it (it frees the old page right after). Two vCPUs race on a mapping.
/// </summary>
public sealed class RemoteFlushTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task A_Remapping_With_A_Vcpu_Mask_Is_Complete_On_The_Other_Vcpu_When_The_Hypercall_Returns()
    {
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildAndEnter();
        ulong code0 = d.NewPage(), code1 = d.NewPage(), data = d.NewPage(), pageA = d.NewPage(), pageB = d.NewPage();
        ulong stack0 = d.NewPage(), stack1 = d.NewPage(), window = d.NewPage(), ctx = d.NewPage();
        ulong dataVa = data << 12, windowVa = window << 12;
        ulong started = dataVa, remapped = dataVa + 8, result = dataVa + 16, ready = dataVa + 24, mask = dataVa + 32, rc = dataVa + 40;
        d.Write(pageA, 0, 0xAAAA);
        d.Write(pageB, 0, 0xBBBB);
        d.Write(data, 4, 1UL << 1); // the vCPU mask: vCPU 1
        d.Call(Xen.__HYPERVISOR_update_va_mapping, windowVa, d.Entry(pageA, P | RW), Xen.UVMF_INVLPG | Xen.UVMF_LOCAL).Should().Be(0);
        d.WriteSecondaryContext(ctx, code1 << 12, stack1, t.L4);

        // vCPU 1: read through the window (its TLB now holds window -> A) until vCPU 0 says it
        // remapped, then read once more and report.
        d.LoadCode(code1, a =>
        {
            var poll = a.CreateLabel();
            a.mov(rax, __qword_ptr[windowVa]);
            a.mov(__qword_ptr[started], 1);
            a.Label(ref poll);
            a.mov(rbx, __qword_ptr[windowVa]);
            a.cmp(__qword_ptr[remapped], 1);
            a.jne(poll);
            a.mov(rbx, __qword_ptr[windowVa]);
            a.mov(__qword_ptr[result], rbx);
            PvTestDomain.SignalAndSpin(a, ready);
        });

        // vCPU 0: bring vCPU 1 up, wait until it reads through the window, remap the window to B for
        // vCPU 1's TLB (a pointer to the mask in the flags), say so, and wait for vCPU 1's read.
        d.LoadCode(code0, a =>
        {
            PvTestDomain.BringUpVcpu1(a, ctx << 12);
            PvTestDomain.WaitFor(a, started);
            a.mov(rdi, windowVa);
            a.mov(rsi, d.Entry(pageB, P | RW));
            a.mov(rdx, mask | Xen.UVMF_INVLPG);
            a.mov(eax, Xen.__HYPERVISOR_update_va_mapping);
            a.syscall();
            a.mov(__qword_ptr[rc], rax);
            a.mov(__qword_ptr[remapped], 1);
            PvTestDomain.WaitFor(a, ready);
            d.PowerOff(a, dataVa + 0x100);
        });

        var exit = await d.RunEngineAsync(code0, stack0);

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        d.Read(data, 5).Should().Be(0, "update_va_mapping with a vCPU mask succeeds");
        d.Read(data, 2).Should().Be(0xBBBB, "once the hypercall returned, vCPU 1 can no longer read page A through the window");
    }
}
