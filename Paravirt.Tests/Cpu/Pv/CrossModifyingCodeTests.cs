using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Memory.Pv;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>
/// Linux's text_poke on SMP: one CPU rewrites kernel code, then every CPU runs sync_core (an
/// iretq to itself), after which it executes the new bytes. The interpreter decodes blocks once,
/// so the serializing iretq must drop them on the vCPU that did not write the code.
/// </summary>
public sealed class CrossModifyingCodeTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task After_Sync_Core_A_Vcpu_Runs_The_Code_Another_Vcpu_Rewrote()
    {
        var d = new PvTestDomain(_hv, vcpus: 2);
        var t = d.BuildAndEnter();
        ulong code0 = d.NewPage(), code1 = d.NewPage(), func = d.NewPage(), data = d.NewPage();
        ulong stack0 = d.NewPage(), stack1 = d.NewPage(), ctx = d.NewPage();
        ulong dataVa = data << 12, funcVa = func << 12;
        ulong before = dataVa, patched = dataVa + 8, after = dataVa + 16, ready = dataVa + 24, started = dataVa + 32;

        // func: mov eax, imm32; ret. vCPU 0 rewrites the immediate.
        d.LoadCode(func, a =>
        {
            a.mov(eax, 0x1111);
            a.ret();
        });
        d.WriteSecondaryContext(ctx, code1 << 12, stack1, t.L4);

        // vCPU 1: call func (decoding it), wait for the patch, sync_core (iret_to_self), call func again.
        d.LoadCode(code1, a =>
        {
            var poll = a.CreateLabel();
            var resume = a.CreateLabel();
            a.mov(rbx, funcVa);
            a.call(rbx);
            a.mov(__qword_ptr[before], rax);
            a.mov(__qword_ptr[started], 1);
            a.Label(ref poll);
            a.call(rbx); // keep the old block hot
            a.cmp(__qword_ptr[patched], 1);
            a.jne(poll);
            a.mov(rcx, rsp);
            a.mov(eax, ArchX86.FLAT_KERNEL_SS);
            a.push(rax);
            a.push(rcx);
            a.pushfq();
            a.mov(eax, ArchX86.FLAT_KERNEL_CS);
            a.push(rax);
            a.lea(rax, __[resume]);
            a.push(rax);
            a.iretq();
            a.Label(ref resume);
            a.call(rbx);
            a.mov(__qword_ptr[after], rax);
            PvTestDomain.SignalAndSpin(a, ready);
        });

        d.LoadCode(code0, a =>
        {
            PvTestDomain.BringUpVcpu1(a, ctx << 12);
            PvTestDomain.WaitFor(a, started);
            a.mov(__dword_ptr[funcVa + 1], 0x2222); // the immediate of mov eax, imm32
            a.mov(__qword_ptr[patched], 1);
            PvTestDomain.WaitFor(a, ready);
            d.PowerOff(a, dataVa + 0x100);
        });

        var exit = await d.RunEngineAsync(code0, stack0);

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        d.Read(data, 0).Should().Be(0x1111);
        d.Read(data, 2).Should().Be(0x2222, "after sync_core vCPU 1 runs the bytes vCPU 0 wrote, not its decoded copy");
    }
}
