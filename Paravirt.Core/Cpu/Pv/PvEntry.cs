using Paravirt.Core.Domains;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// Where a 64-bit PV vCPU starts, as Xen's domain builder leaves it: rip at the kernel's entry,
/// rsp at the boot stack, rsi = start_info's virtual address; flat kernel selectors
/// (FLAT_KERNEL_CS/SS), events masked, guest kernel mode.
/// </summary>
public readonly record struct PvEntry(ulong Rip, ulong Rsp, ulong Rsi);

/// <summary>
/// Writable page tables, at a guest write fault on <paramref name="linear"/>: true, with the frame
/// in <paramref name="mfn"/>, when the address is mapped read-only onto one of the domain's
/// validated L1 page tables (Xen's ptwr_do_page_fault checks).
/// </summary>
public delegate bool PageTableLookup(Vcpu vcpu, ulong linear, out ulong mfn);

/// <summary>
/// Writable page tables, for each store of the emulated instruction to the L1 table
/// <paramref name="mfn"/>: <paramref name="size"/> bytes of <paramref name="value"/> at byte
/// <paramref name="offset"/>, a compare-exchange when <paramref name="comparand"/> is set
/// (<paramref name="found"/>: what the stored bytes held); 0, or a negative errno when the new
/// entry is refused (Xen's ptwr_emulated_update).
/// </summary>
public delegate long PageTableWrite(Domain domain, ulong mfn, uint offset, int size, ulong value, ulong? comparand, out ulong found);

/// <summary>What the PV engine needs from the PV memory model; each hook unset means "refuse".</summary>
public sealed record PvEngineOptions
{
    /// <summary>
    /// <c>mov %reg, %cr3</c> in guest kernel mode: Xen's new_guest_cr3 (as MMUEXT_NEW_BASEPTR: take the
    /// L4 type reference, set <see cref="PvVcpuState.KernelBaseMfn"/>); 0 or a negative errno. Unset:
    /// the write raises #GP(0) in the guest.
    /// </summary>
    public Func<Vcpu, ulong, long>? NewGuestCr3 { get; init; }

    /// <summary>
    /// A secondary vCPU's user page-table base from its VCPUOP_initialise context (ctrlreg[1]), as
    /// MMUEXT_NEW_USER_BASEPTR; 0 or a negative errno. Unset: a context with a user base cannot go up.
    /// </summary>
    public Func<Vcpu, ulong, long>? NewGuestUserCr3 { get; init; }

    /// <summary>
    /// <c>update_descriptor</c>, before the write: take a type on the machine frame that keeps it from
    /// becoming a page table while the descriptor is written (Xen: the segment-descriptor type if the
    /// frame has it, else the writable type); true when taken. Unset: update_descriptor answers -EINVAL.
    /// </summary>
    public Func<Domain, ulong, bool>? HoldDescriptorFrame { get; init; }

    /// <summary><c>update_descriptor</c>, after the write: drop what <see cref="HoldDescriptorFrame"/> took.</summary>
    public Action<Domain, ulong>? ReleaseDescriptorFrame { get; init; }

    /// <summary>
    /// VMASST_TYPE_writable_pagetables: finds the validated L1 page table a guest kernel's write
    /// fault hit through its read-only mapping. Unset (or <see cref="WritePageTable"/> unset): such
    /// a fault goes to the guest, as without the assist.
    /// </summary>
    public PageTableLookup? FindWritablePageTable { get; init; }

    /// <summary>VMASST_TYPE_writable_pagetables: checks, references and stores one write of the emulated instruction to that table.</summary>
    public PageTableWrite? WritePageTable { get; init; }

    /// <summary>Guest instructions per interpreter slice: the latency of pause, events and TLB flush requests from other threads.</summary>
    public long SliceInstructions { get; init; } = 20_000;
}
