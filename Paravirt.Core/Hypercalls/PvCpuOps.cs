using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// The CPU-side hypercalls of a 64-bit PV guest, as Xen 4.17 implements them (pv/iret.c,
/// pv/callback.c, pv/misc-hypercalls.c, pv/descriptor-tables.c): iret, set_trap_table,
/// stack_switch, set_segment_base, fpu_taskswitch, set/get_debugreg, set_gdt and
/// update_descriptor. They act on the interpreted PV vCPU (<c>Cpu/Pv</c>); a managed vCPU has
/// none of that state and gets -ENOSYS, as before they existed.
/// </summary>
internal static class PvCpuOps
{
    public static long Iret(Vcpu vcpu, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.Iret() : Result.Err(Errno.ENOSYS);

    public static long SetTrapTable(Vcpu vcpu, ulong traps, ulong a2, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.SetTrapTable(traps) : Result.Err(Errno.ENOSYS);

    public static long StackSwitch(Vcpu vcpu, ulong ss, ulong sp, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.StackSwitch(ss, sp) : Result.Err(Errno.ENOSYS);

    public static long SetSegmentBase(Vcpu vcpu, ulong which, ulong value, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.SetSegmentBase((uint)which, value) : Result.Err(Errno.ENOSYS);

    public static long FpuTaskswitch(Vcpu vcpu, ulong set, ulong a2, ulong a3, ulong a4, ulong a5)
    {
        if (vcpu.Pv.Engine is not { } cpu)
        {
            return Result.Err(Errno.ENOSYS);
        }

        cpu.FpuTaskswitch((int)set != 0);
        return Result.Ok;
    }

    public static long SetDebugreg(Vcpu vcpu, ulong reg, ulong value, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.SetDebugreg((int)Math.Min(reg, int.MaxValue), value) : Result.Err(Errno.ENOSYS);

    public static long GetDebugreg(Vcpu vcpu, ulong reg, ulong a2, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.GetDebugreg((int)Math.Min(reg, int.MaxValue)) : Result.Err(Errno.ENOSYS);

    public static long SetGdt(Vcpu vcpu, ulong frameList, ulong entries, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.SetGdt(frameList, (uint)entries) : Result.Err(Errno.ENOSYS);

    public static long UpdateDescriptor(Vcpu vcpu, ulong machineAddress, ulong descriptor, ulong a3, ulong a4, ulong a5) =>
        vcpu.Pv.Engine is { } cpu ? cpu.UpdateDescriptor(machineAddress, descriptor) : Result.Err(Errno.ENOSYS);
}

/// <summary>
/// <c>HYPERVISOR_xenpmu_op</c>: Xen 4.17 answers -EOPNOTSUPP while the vPMU is off (its default,
/// <c>vpmu=0</c>), before it reads any argument; Linux then says "VPMU disabled by hypervisor".
/// </summary>
internal static class XenPmuOp
{
    public static long Handle(Vcpu vcpu, ulong op, ulong arg, ulong a3, ulong a4, ulong a5) => Result.Err(Errno.EOPNOTSUPP);
}
