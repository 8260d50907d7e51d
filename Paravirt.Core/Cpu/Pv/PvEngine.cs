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

        var cpu = new PvCpu(domain, vcpu, entry, options ?? new PvEngineOptions());
        domain.StartEngineVcpu(vcpu, () =>
        {
            vcpu.Pv.Engine = cpu;
            var thread = new Thread(() => Run(domain, vcpu, cpu))
            {
                IsBackground = true,
                Name = $"d{domain.Id}v{vcpu.Id}-pv",
            };
            vcpu.SetRunstate(Vcpu.RUNSTATE_running);
            vcpu.UpdateTimeInfo();
            thread.Start();
            return thread;
        });
    }

    private static void Run(Domain domain, Vcpu vcpu, PvCpu cpu)
    {
        try
        {
            cpu.Run();
        }
        catch (VcpuExitException)
        {
            // The domain shut down, crashed or is being destroyed.
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            domain.Crash($"PV engine error on vCPU {vcpu.Id} at rip 0x{cpu.State.Rip:x}: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            vcpu.SetRunstate(Vcpu.RUNSTATE_offline);
            lock (domain.VcpuLock)
            {
                vcpu.HasThread = false;
                vcpu.SetDown(true);
            }
        }
    }
}
