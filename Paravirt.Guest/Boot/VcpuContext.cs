using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// What the stub keeps per vCPU (a kernel's per-CPU area): the vCPU's gate, its hypercall
/// argument area, where its <c>vcpu_info</c> lives, and its timers.
/// </summary>
public sealed class VcpuContext
{
    internal VcpuContext(int id, ulong vcpuInfoAddress, ArgStack args)
    {
        Id = id;
        VcpuInfoAddress = vcpuInfoAddress;
        Args = args;
    }

    /// <summary>The vCPU id.</summary>
    public int Id { get; }

    /// <summary>Guest address of this vCPU's <c>vcpu_info</c> (registered with VCPUOP_register_vcpu_info).</summary>
    public ulong VcpuInfoAddress { get; }

    /// <summary>The vCPU's gate, once it runs (null for a vCPU prepared but not yet entered).</summary>
    public IGuestCpu? Cpu { get; internal set; }

    /// <summary>The hypercall wrappers of this vCPU.</summary>
    public Hypercalls Hypercalls => _hypercalls ?? throw new InvalidOperationException($"vCPU {Id} has not entered guest code yet");

    internal ArgStack Args { get; }

    internal Hypercalls? _hypercalls;

    internal readonly List<(ulong Deadline, long Id, Action Callback)> Timers = [];

    internal ulong ArmedDeadline;

    internal uint TimerPort;

    internal Action<VcpuContext>? Entry;

    internal void Attach(IGuestCpu cpu)
    {
        Cpu = cpu;
        _hypercalls = new Hypercalls(cpu, Args);
    }
}
