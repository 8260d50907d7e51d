using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;

namespace Paravirt.Core.Cpu.Pv;

// Writable page tables (VMASST_TYPE_writable_pagetables; Xen's fixup_page_fault →
// pv_ro_page_fault → ptwr_do_page_fault): a guest kernel's store to one of its validated L1 page
// tables through a read-only mapping page-faults, and the engine emulates the instruction with
// its stores to that table checked by the memory model, instead of delivering the fault.
internal sealed partial class PvCpu
{
    private PageTableWriteBus? _pageTableBus;

    /// <summary>
    /// Emulates the instruction behind a write fault on a read-only mapping of a validated L1 page
    /// table: it runs once more in the interpreter with that page writable and its stores to the
    /// table going through <see cref="PvEngineOptions.WritePageTable"/>, so the new entries are
    /// checked and referenced as mmu_update's are, rip moves past it and registers and flags change
    /// as the instruction says. False, leaving the fault to the guest with its own error code and
    /// cr2, when the assist is off, the fault is not a guest-kernel write to a present page, the
    /// page is not such a table, or the memory model refuses a store (Xen's
    /// X86EMUL_UNHANDLEABLE). Any other exit of the emulated instruction (another page's fault,
    /// a hypercall if the code changed under it) is handled as that exit.
    /// </summary>
    private bool TryEmulatePageTableWrite(CpuExit fault)
    {
        const uint mask = PageFaultErrorCode.Present | PageFaultErrorCode.Write | PageFaultErrorCode.Reserved | PageFaultErrorCode.InstructionFetch;
        var code = fault.ErrorCode ?? 0;
        if ((Domain.VmAssist & (1UL << Xen.VMASST_TYPE_writable_pagetables)) == 0
            || !Vcpu.Pv.KernelMode
            || (code & mask) != (PageFaultErrorCode.Present | PageFaultErrorCode.Write)
            || Options.FindWritablePageTable is not { } find
            || Options.WritePageTable is not { } write
            || !find(Vcpu, fault.Address, out var mfn))
        {
            return false;
        }

        var bus = _pageTableBus ??= new PageTableWriteBus(Bus, Domain, write);
        bus.Target(mfn);
        var exit = Interpreter.StepWritingThrough(fault.Address, bus);
        Instructions += exit.Instructions;
        CompleteRemoteFlushes(); // the store may have changed a frame's type: other vCPUs flush before this one goes on
        if (bus.Refused)
        {
            return false;
        }

        OnExit(exit, emulated: true);
        return true;
    }
}
