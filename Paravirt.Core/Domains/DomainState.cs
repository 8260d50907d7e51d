namespace Paravirt.Core.Domains;

/// <summary>Where a domain is in its life: Created → Running ⇄ Paused → Shutdown / Crashed → Dead.</summary>
public enum DomainState
{
    /// <summary>Built (memory allocated) but no vCPU has run.</summary>
    Created,
    Running,
    /// <summary>Held by the host: vCPUs stop at their next hypercall or stay blocked.</summary>
    Paused,
    /// <summary>The guest asked to stop (<c>SCHEDOP_shutdown</c>); see <see cref="DomainExit.ShutdownCode"/>.</summary>
    Shutdown,
    /// <summary>The guest broke a protocol or threw; see <see cref="DomainExit.Reason"/>.</summary>
    Crashed,
    /// <summary>Destroyed: every frame and resource is back with the host.</summary>
    Dead,
}

/// <summary>How a domain ended.</summary>
/// <param name="State">Shutdown, Crashed or Dead.</param>
/// <param name="ShutdownCode">The <c>SHUTDOWN_*</c> reason for a shutdown (<c>SHUTDOWN_crash</c> = 3 for a crash).</param>
/// <param name="Reason">Words for a person: the guest's reason or the crash's cause.</param>
public sealed record DomainExit(DomainState State, uint ShutdownCode, string Reason)
{
    /// <summary>
    /// The shutdown came from the last vCPU going down (VCPUOP_down), not from SCHEDOP_shutdown:
    /// Xen 4.17 powers such a domain off (domain_shutdown with SHUTDOWN_poweroff), and so does
    /// Paravirt, but a host may want to tell it apart: Linux's <c>halt()</c> with interrupts
    /// disabled ends this way after a fatal early error.
    /// </summary>
    public bool LastVcpuWentDown { get; init; }
}
