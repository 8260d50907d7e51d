using Paravirt.Core.Domains;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// Runs a classic 64-bit PV kernel's machine code on the interpreter, one host thread per vCPU,
/// as Xen runs a 64-bit PV vCPU (see docs/pv-cpu.md). The domain must be classic PV
/// (<c>AutoTranslated = false</c>) with the vCPU's page tables in place
/// (<see cref="PvVcpuState.KernelBaseMfn"/> set, with the memory model's type references).
/// </summary>
public static class PvEngine
{
    /// <summary>
    /// Starts <paramref name="vcpu"/> at <paramref name="entry"/> in guest kernel mode on a new
    /// thread; vCPU 0 of a Created domain makes it Running. The thread leaves when the domain shuts
    /// down, crashes or is destroyed; pause holds it at the next slice boundary.
    /// </summary>
    public static void Start(Domain domain, Vcpu vcpu, PvEntry entry, PvEngineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(vcpu);
        if (vcpu.Domain != domain)
        {
            throw new ArgumentException($"vCPU {vcpu.Id} belongs to domain {vcpu.Domain.Id}, not {domain.Id}", nameof(vcpu));
        }

        if (domain.IsTranslated)
        {
            throw new ArgumentException($"domain {domain.Id} ({domain.Name}) is auto-translated; the PV engine runs classic PV domains (AutoTranslated = false)", nameof(domain));
        }

        if (vcpu.Pv.KernelBaseMfn == 0)
        {
            throw new InvalidOperationException($"vCPU {vcpu.Id} of domain {domain.Id} has no page tables: set its kernel base (PvMemory.SetKernelBase) before starting it");
        }

        options ??= new PvEngineOptions();
        var cpu = new PvCpu(domain, vcpu, entry, options);
        domain.EngineSecondaryStart ??= v => StartSecondary(domain, v, options);
        StartThread(domain, vcpu, cpu);
    }

    /// <summary>
    /// VCPUOP_up of a secondary vCPU on a PV-engine domain: its VCPUOP_initialise context's page
    /// tables go through the memory model (<see cref="PvEngineOptions.NewGuestCr3"/> for ctrlreg[3],
    /// <see cref="PvEngineOptions.NewGuestUserCr3"/> for ctrlreg[1]), then it starts on its own thread
    /// with the context's registers, trap table, kernel stack and segment bases. -EINVAL when a base
    /// is refused or no hook is set.
    /// </summary>
    private static unsafe long StartSecondary(Domain domain, Vcpu vcpu, PvEngineOptions options)
    {
        if (vcpu.InitialGuestContext is not { } box)
        {
            return -(long)Abi.Errno.EINVAL;
        }

        var c = box.Value;
        var kernelBase = c.ctrlreg[3] >> 12; // xen_cr3_to_pfn
        var userBase = c.ctrlreg[1] >> 12;
        if (options.NewGuestCr3 is not { } setKernel || setKernel(vcpu, kernelBase) != 0)
        {
            return -(long)Abi.Errno.EINVAL;
        }

        if (userBase != 0 && (options.NewGuestUserCr3 is not { } setUser || setUser(vcpu, userBase) != 0))
        {
            return -(long)Abi.Errno.EINVAL;
        }

        var cpu = new PvCpu(domain, vcpu, new PvEntry(c.user_regs.rip, c.user_regs.rsp, c.user_regs.rsi), options);
        cpu.LoadContext(in c);
        StartThread(domain, vcpu, cpu);
        return 0;
    }

    private static void StartThread(Domain domain, Vcpu vcpu, PvCpu cpu)
    {
        domain.StartEngineVcpu(vcpu, () =>
        {
            vcpu.Pv.Engine = cpu;
            return VcpuThread.Start(
                domain,
                vcpu,
                $"d{domain.Id}v{vcpu.Id}-pv",
                cpu.Run,
                e => $"PV engine error on vCPU {vcpu.Id} at rip 0x{cpu.State.Rip:x}: {e.GetType().Name}: {e.Message}");
        });
    }
}
