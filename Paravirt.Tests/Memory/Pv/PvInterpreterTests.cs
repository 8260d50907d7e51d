using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;
using Paravirt.Tests.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// The interpreter runs a PV guest kernel (ring 3) on page tables built and validated with the
/// memory model's hypercalls, over the domain's machine frames: the entries as Xen stores them
/// (user bit forced) let it run, and the read-only mapping of its own page table stops a write.
/// </summary>
public sealed class PvInterpreterTests : IDisposable
{
    private const ulong P = PvTestDomain.P;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Ring3_Kernel_Code_Runs_On_Validated_Tables_And_Faults_Writing_Its_Own_Page_Table()
    {
        var d = new PvTestDomain(_hv);
        var t = d.BuildAndEnter();
        var code = d.NewPage();
        var data = d.NewPage();
        var stack = d.NewPage();
        ulong l1Va = t.L1 << 12, dataVa = data << 12, codeVa = code << 12;

        var bytes = InterpreterMachine.Assemble(a =>
        {
            a.mov(rax, __qword_ptr[rbx]);       // read the L1 through its read-only mapping
            a.mov(__qword_ptr[rcx], rax);       // store it in a writable data page
            a.add(__qword_ptr[rcx + 8], 7);     // read-modify-write on the data page
            a.push(rax);                        // the stack works
            a.mov(__qword_ptr[rbx + 8], rax);   // write to the page table: #PF
        }, codeVa, halt: false);
        d.Domain.Memory.TryWrite(codeVa, bytes).Should().BeTrue();

        // Made read-only with the hypercall, as a kernel maps its text.
        d.Call(Xen.__HYPERVISOR_update_va_mapping, codeVa, d.Entry(code, P), Xen.UVMF_INVLPG | Xen.UVMF_LOCAL).Should().Be(0);
        d.Vcpu.Pv.TakeTlbFlushRequest().Should().BeTrue();

        var cpu = new CpuState
        {
            Rip = codeVa,
            Cr3 = d.Vcpu.Pv.CurrentBaseMfn << 12,
            Cpl = 3,
        };
        cpu.Cr0 |= ControlBits.Cr0PG | ControlBits.Cr0WP;
        cpu.Gpr[Gpr.Rbx] = l1Va;
        cpu.Gpr[Gpr.Rcx] = dataVa;
        cpu.Gpr[Gpr.Rsp] = (stack << 12) + 0x1000;
        var interpreter = new X86Interpreter(cpu, new DomainMachineBus(_hv.Frames, d.Domain.Id), new TestPlatform());
        var l1Entry1 = d.Read(t.L1, 1);

        var exit = interpreter.Run(100);

        exit.Reason.Should().Be(ExitReason.Exception, $"the write to the page table faults, not {exit}");
        (exit.Vector, exit.ErrorCode, exit.Address).Should().Be((Vectors.PF, PageFaultErrorCode.Present | PageFaultErrorCode.Write | PageFaultErrorCode.User, l1Va + 8));
        cpu.Rip.Should().Be(codeVa + (ulong)bytes.Length - 4, "rip stays at the faulting store (mov [rbx+8], rax is 4 bytes)");
        d.Read(data, 0).Should().Be(d.Read(t.L1, 0), "the kernel read its L1 entry and stored it");
        d.Read(data, 1).Should().Be(7);
        d.Read(stack, 511).Should().Be(d.Read(t.L1, 0));
        d.Read(t.L1, 1).Should().Be(l1Entry1, "the page table is unchanged");

        // The same store to the read-only code page faults too; to the data page it is fine.
        cpu.Rip = codeVa + (ulong)bytes.Length - 4;
        cpu.Gpr[Gpr.Rbx] = codeVa - 8;
        interpreter.Run(1).Address.Should().Be(codeVa);
        cpu.Gpr[Gpr.Rbx] = dataVa + 0x100 - 8;
        interpreter.Run(1).Reason.Should().Be(ExitReason.SliceDone);
        d.Read(data, 0x100 / 8).Should().Be(d.Read(t.L1, 0));
    }
}
