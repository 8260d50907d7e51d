using Paravirt.Core.Abi;
using Paravirt.Core.Boot;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Tests.Cpu.Interpreter;
using Paravirt.Tests.Memory.Pv;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>
/// Linux's text_poke on SMP: one CPU rewrites kernel code, then every CPU runs sync_core (an
/// iretq to itself), after which it executes the new bytes. The interpreter decodes blocks once,
/// so the serializing iretq must drop them on the vCPU that did not write the code.
/// </summary>
public sealed class CrossModifyingCodeTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW;
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
        d.Domain.Memory.TryWrite(funcVa, InterpreterMachine.Assemble(a =>
        {
            a.mov(eax, 0x1111);
            a.ret();
        }, funcVa, halt: false)).Should().BeTrue();

        var context = new vcpu_guest_context
        {
            flags = ArchX86.VGCF_in_kernel | ArchX86.VGCF_online,
            kernel_ss = ArchX86.FLAT_KERNEL_SS,
            kernel_sp = (stack1 << 12) + 0x1000,
        };
        context.user_regs.rip = code1 << 12;
        context.user_regs.rsp = (stack1 << 12) + 0x1000;
        context.user_regs.cs = ArchX86.FLAT_KERNEL_CS;
        context.user_regs.ss = ArchX86.FLAT_KERNEL_SS;
        context.user_regs.rflags = 0x202;
        unsafe
        {
            context.ctrlreg[3] = d.Mfn(t.L4) << 12;
        }

        d.Domain.Memory.TryWrite(ctx << 12, context).Should().BeTrue();

        // vCPU 1: call func (decoding it), wait for the patch, sync_core (iret_to_self), call func again.
        d.Domain.Memory.TryWrite(code1 << 12, InterpreterMachine.Assemble(a =>
        {
            var poll = a.CreateLabel();
            var resume = a.CreateLabel();
            var spin = a.CreateLabel();
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
            a.mov(__qword_ptr[ready], 1);
            a.Label(ref spin);
            a.pause();
            a.jmp(spin);
        }, code1 << 12, halt: false)).Should().BeTrue();

        d.Domain.Memory.TryWrite(dataVa + 0x100, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff }).Should().BeTrue();
        d.Domain.Memory.TryWrite(code0 << 12, InterpreterMachine.Assemble(a =>
        {
            var wait = a.CreateLabel();
            var done = a.CreateLabel();
            a.mov(edi, VcpuOp.VCPUOP_initialise);
            a.mov(esi, 1);
            a.mov(rdx, ctx << 12);
            a.mov(eax, Xen.__HYPERVISOR_vcpu_op);
            a.syscall();
            a.Label(ref wait);
            a.cmp(__qword_ptr[started], 1);
            a.jne(wait);
            a.mov(__dword_ptr[funcVa + 1], 0x2222); // the immediate of mov eax, imm32
            a.mov(__qword_ptr[patched], 1);
            a.Label(ref done);
            a.cmp(__qword_ptr[ready], 1);
            a.jne(done);
            a.mov(edi, Sched.SCHEDOP_shutdown);
            a.mov(rsi, dataVa + 0x100);
            a.mov(eax, Xen.__HYPERVISOR_sched_op);
            a.syscall();
            a.ud2();
        }, code0 << 12, halt: false)).Should().BeTrue();

        PvEngine.Start(d.Domain, d.Vcpu, new PvEntry(code0 << 12, (stack0 << 12) + 0x1000, d.Domain.StartInfoAddress), PvKernelStart.EngineOptions);
        var exit = await d.Domain.ExitWithinAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        d.Read(data, 0).Should().Be(0x1111);
        d.Read(data, 2).Should().Be(0x2222, "after sync_core vCPU 1 runs the bytes vCPU 0 wrote, not its decoded copy");
    }
}
