using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Time;
using V = Paravirt.Core.Abi.VcpuOp;

namespace Paravirt.Tests.Support;

/// <summary>Guest-side helpers for vCPU tests: vcpu_op calls, the P→M lookup, a Linux-style pvclock read.</summary>
public static class GuestVcpu
{
    public const ulong PageSize = 4096;

    public static long VcpuOp(this IGuestCpu cpu, int cmd, ulong vcpuid, ulong arg = 0) =>
        cpu.Hypercall(Xen.__HYPERVISOR_vcpu_op, (ulong)cmd, vcpuid, arg);

    public static long VcpuOp(this GuestContext g, int cmd, ulong vcpuid, ulong arg = 0) => g.Cpu.VcpuOp(cmd, vcpuid, arg);

    /// <summary>
    /// The frame number a hypercall wants for a guest-physical address: the GFN in a translated
    /// domain (no P→M list: start_info.mfn_list is 0), else the MFN from the P→M list.
    /// </summary>
    public static ulong MfnOf(IGuestCpu cpu, ulong startInfo, ulong gpa)
    {
        var si = cpu.Memory.Read<start_info>(startInfo);
        return si.mfn_list == 0 ? gpa / PageSize : cpu.Memory.Read<ulong>(si.mfn_list + gpa / PageSize * 8);
    }

    /// <summary>VCPUOP_register_vcpu_info for vCPU <paramref name="vcpu"/>, placing it at <paramref name="page"/> + <paramref name="offset"/>.</summary>
    public static long RegisterVcpuInfo(IGuestCpu cpu, ulong startInfo, ulong argAt, int vcpu, ulong page, uint offset)
    {
        cpu.Memory.Write(argAt, new vcpu_register_vcpu_info { mfn = MfnOf(cpu, startInfo, page), offset = offset });
        return cpu.VcpuOp(V.VCPUOP_register_vcpu_info, (ulong)vcpu, argAt);
    }

    public static long RegisterVcpuInfo(this GuestContext g, ulong page, uint offset = 0) =>
        RegisterVcpuInfo(g.Cpu, g.StartInfo, g.Scratch + 0x800, g.Cpu.VcpuId, page, offset);

    /// <summary>Absolute system time via set_timer_op, then SCHEDOP_block until the timer wakes the vCPU.</summary>
    public static long BlockUntil(IGuestCpu cpu, ulong deadlineNs)
    {
        BindTimerVirq(cpu);
        cpu.Hypercall(Xen.__HYPERVISOR_set_timer_op, deadlineNs).Should().Be(0);
        return cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
    }

    /// <summary>
    /// Binds VIRQ_TIMER on this vCPU (as every PV kernel does before it relies on timers): a timer
    /// that fires without it wakes nobody. Already bound is fine.
    /// </summary>
    public static void BindTimerVirq(IGuestCpu cpu)
    {
        var scratch = cpu.Memory.Read<start_info>(Paravirt.Core.Boot.DomainBuilder.StartInfoPfn * PageSize).pt_base + 0xF00;
        cpu.Memory.Write(scratch, new evtchn_bind_virq { virq = Xen.VIRQ_TIMER, vcpu = (uint)cpu.VcpuId });
        var rc = cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_bind_virq, scratch);
        rc.Should().BeOneOf(0L, -(long)Errno.EEXIST);
    }

    /// <summary>
    /// System time as Linux's pvclock_clocksource_read computes it from <c>vcpu_time_info</c> at
    /// <paramref name="timeInfo"/>: retry while the version is odd or changed; then
    /// system_time + scale(rdtsc - tsc_timestamp).
    /// </summary>
    public static ulong ReadPvclock(IGuestCpu cpu, ulong timeInfo, out uint version)
    {
        while (true)
        {
            version = (uint)cpu.Memory.ReadVolatile(timeInfo, 4);
            var t = cpu.Memory.Read<vcpu_time_info>(timeInfo);
            var tsc = cpu.ReadTsc();
            var ns = t.system_time + Clock.Scale(tsc - t.tsc_timestamp, t.tsc_to_system_mul, t.tsc_shift);
            if ((version & 1) == 0 && version == (uint)cpu.Memory.ReadVolatile(timeInfo, 4))
            {
                return ns;
            }
        }
    }

    /// <summary>A runstate copy that lambdas can hold (fixed buffers cannot be captured).</summary>
    public static unsafe Runstate Unpack(this vcpu_runstate_info info) =>
        new(info.state, info.state_entry_time, [info.time[0], info.time[1], info.time[2], info.time[3]]);

    public sealed record Runstate(int state, ulong state_entry_time, ulong[] time);

    /// <summary>Offset of <c>vcpu_info.time</c>.</summary>
    public static readonly ulong TimeOffset = (ulong)System.Runtime.InteropServices.Marshal.OffsetOf<vcpu_info>(nameof(vcpu_info.time));
}
