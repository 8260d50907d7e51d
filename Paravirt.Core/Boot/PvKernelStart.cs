using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Boot;

/// <summary>
/// Starts vCPU 0 of a domain built by <see cref="Hypervisor.CreatePvDomain"/> at its
/// <see cref="PvBootImage"/>, as libxenguest's bootlate and the vCPU-context domctl leave a PV
/// guest: the bootstrap L4 pinned (which validates every table under it), made vCPU 0's kernel
/// base, and the entry run on the PV CPU engine with its hooks into the PV memory model.
/// Hosts (and <c>paravirt run --kernel</c>) call only this.
/// </summary>
public static class PvKernelStart
{
    /// <summary>The PV engine's hooks into the PV memory model.</summary>
    public static PvEngineOptions EngineOptions { get; } = new()
    {
        NewGuestCr3 = PvMemory.SetKernelBase,
        NewGuestUserCr3 = PvMemory.SetUserBase,
        HoldDescriptorFrame = static (d, mfn) => PvMemory.GetDescriptorWritePage(d, mfn) == 0,
        ReleaseDescriptorFrame = PvMemory.PutDescriptorWritePage,
        FindWritablePageTable = WritablePageTables.TryFindTable,
        WritePageTable = WritablePageTables.Update,
    };

    /// <summary>Starts vCPU 0 of <paramref name="domain"/> at the entry in <paramref name="boot"/>.</summary>
    /// <exception cref="InvalidOperationException">The bootstrap tables did not validate (the image and the builder disagree).</exception>
    public static void Start(Domain domain, PvBootImage boot)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(boot);
        var vcpu = domain.Vcpus[0];
        var rc = PvMemory.PinTable(domain, boot.L4Mfn, 4);
        if (rc != 0)
        {
            throw new InvalidOperationException($"domain {domain.Id} ({domain.Name}): its bootstrap page tables did not validate as an L4 at mfn 0x{boot.L4Mfn:x} (errno {-rc}); expected the builder's tables to be valid");
        }

        rc = PvMemory.SetKernelBase(vcpu, boot.L4Mfn);
        if (rc != 0)
        {
            throw new InvalidOperationException($"domain {domain.Id} ({domain.Name}): the bootstrap L4 at mfn 0x{boot.L4Mfn:x} could not become vCPU 0's base (errno {-rc})");
        }

        PvEngine.Start(domain, vcpu, new PvEntry(boot.Entry, boot.StackPointer, boot.StartInfo), EngineOptions);
    }
}
