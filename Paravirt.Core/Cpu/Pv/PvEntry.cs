using Paravirt.Core.Domains;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// Where a 64-bit PV vCPU starts, as Xen's domain builder leaves it: rip at the kernel's entry,
/// rsp at the boot stack, rsi = start_info's virtual address; flat kernel selectors
/// (FLAT_KERNEL_CS/SS), events masked, guest kernel mode.
/// </summary>
public readonly record struct PvEntry(ulong Rip, ulong Rsp, ulong Rsi);

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

    /// <summary>Guest instructions per interpreter slice: the latency of pause, events and TLB flush requests from other threads.</summary>
    public long SliceInstructions { get; init; } = 20_000;
}
