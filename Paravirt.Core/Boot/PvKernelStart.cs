using Paravirt.Core.Domains;

namespace Paravirt.Core.Boot;

/// <summary>
/// The one seam between the ELF domain builder and the PV CPU engine: starts vCPU 0 of a domain
/// built by <see cref="Hypervisor.CreatePvDomain"/> at its <see cref="PvBootImage"/>. Hosts (and
/// <c>paravirt run --kernel</c>) call only this.
/// </summary>
/// <remarks>
/// To be wired by the integrator once the PV memory model and CPU engine are merged: pin
/// <see cref="PvBootImage.L4Mfn"/> as an L4 table (<c>PvMemory.PinTable(domain, boot.L4Mfn, 4)</c>),
/// make it vCPU 0's kernel base (<c>PvMemory.SetKernelBase(vcpu0, boot.L4Mfn)</c>), then
/// <c>PvEngine.Start(domain, vcpu0, new PvEntry(boot.Entry, boot.StackPointer, boot.StartInfo))</c>.
/// The boot tables' leaf entries have no user bit (as libxenguest writes them); validation must add
/// it for a 64-bit PV guest as Xen's adjust_guest_l1e does (docs/boot.md).
/// </remarks>
public static class PvKernelStart
{
    /// <summary>The message of the <see cref="NotSupportedException"/> thrown while no engine is wired.</summary>
    public const string NotWiredMessage =
        "running a PV kernel needs the PV CPU engine and memory model, which are not wired into this build yet; the domain was built (start_info, page tables, P→M list) but vCPU 0 cannot start";

    /// <summary>Starts vCPU 0 of <paramref name="domain"/> at the entry in <paramref name="boot"/>.</summary>
    /// <exception cref="NotSupportedException">No PV CPU engine is wired into this build yet.</exception>
    public static void Start(Domain domain, PvBootImage boot)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(boot);
        throw new NotSupportedException(NotWiredMessage);
    }
}
