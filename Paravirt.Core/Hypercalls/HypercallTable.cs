using System.Reflection;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>One slot of the hypercall table, for display.</summary>
public sealed record HypercallEntry(int Number, string Name, bool Implemented);

/// <summary>
/// The hypercall table: number → handler. Handlers are thin: copy arguments out of guest memory
/// once, validate the copy, call a mechanism, write results back, and return a Xen errno on
/// failure. An empty slot answers <c>-ENOSYS</c>, as Xen does for a hypercall it does not have.
/// </summary>
public sealed unsafe class HypercallTable
{
    /// <summary>Xen's NR_hypercalls.</summary>
    public const int Size = 64;

    private static readonly string[] XenNames = LoadNames();
    // Handlers are static methods called through function pointers: a direct indirect call, where a
    // delegate to a static method would go through a shuffle thunk on every hypercall.
    private readonly delegate*<Vcpu, ulong, ulong, ulong, ulong, ulong, long>[] _handlers = new delegate*<Vcpu, ulong, ulong, ulong, ulong, ulong, long>[Size];

    internal HypercallTable()
    {
    }

    public IReadOnlyList<HypercallEntry> Entries =>
        [.. Enumerable.Range(0, Size).Where(n => XenNames[n] is not null || IsImplemented(n))
            .Select(n => new HypercallEntry(n, XenNames[n] ?? $"#{n}", IsImplemented(n)))];

    /// <summary>Xen's name of hypercall <paramref name="nr"/> ("sched_op"), or null if Xen 4.17 names none.</summary>
    public static string? XenName(int nr) => (uint)nr < Size ? XenNames[nr] : null;

    public bool IsImplemented(int nr) => (uint)nr < Size && _handlers[nr] != null;

    /// <summary>The table with every hypercall Paravirt implements.</summary>
    internal static HypercallTable CreateDefault()
    {
        var t = new HypercallTable();
        t.Register(Xen.__HYPERVISOR_xen_version, &XenVersionOp.Handle);
        t.Register(Xen.__HYPERVISOR_console_io, &ConsoleIoOp.Handle);
        t.Register(Xen.__HYPERVISOR_sched_op, &SchedOp.Handle);
        t.Register(Xen.__HYPERVISOR_multicall, &MulticallOp.Handle);
        t.Register(Xen.__HYPERVISOR_callback_op, &CallbackOp.Handle);
        t.Register(Xen.__HYPERVISOR_set_callbacks, &CallbackOp.SetCallbacks);
        t.Register(Xen.__HYPERVISOR_vm_assist, &VmAssistOp.Handle);
        t.Register(Xen.__HYPERVISOR_event_channel_op, &EventChannelOp.Handle);
        t.Register(Xen.__HYPERVISOR_memory_op, &MemoryOp.Handle);
        t.Register(Xen.__HYPERVISOR_vcpu_op, &VcpuOp.Handle);
        t.Register(Xen.__HYPERVISOR_set_timer_op, &SetTimerOp.Handle);
        t.Register(Xen.__HYPERVISOR_grant_table_op, &GrantTableOp.Handle);
        t.Register(Xen.__HYPERVISOR_set_trap_table, &PvCpuOps.SetTrapTable);
        t.Register(Xen.__HYPERVISOR_set_gdt, &PvCpuOps.SetGdt);
        t.Register(Xen.__HYPERVISOR_stack_switch, &PvCpuOps.StackSwitch);
        t.Register(Xen.__HYPERVISOR_fpu_taskswitch, &PvCpuOps.FpuTaskswitch);
        t.Register(Xen.__HYPERVISOR_set_debugreg, &PvCpuOps.SetDebugreg);
        t.Register(Xen.__HYPERVISOR_get_debugreg, &PvCpuOps.GetDebugreg);
        t.Register(Xen.__HYPERVISOR_update_descriptor, &PvCpuOps.UpdateDescriptor);
        t.Register(Xen.__HYPERVISOR_iret, &PvCpuOps.Iret);
        t.Register(Xen.__HYPERVISOR_set_segment_base, &PvCpuOps.SetSegmentBase);
        t.Register(Xen.__HYPERVISOR_mmu_update, &MmuUpdateOp.Handle);
        t.Register(Xen.__HYPERVISOR_mmuext_op, &MmuExtOp.Handle);
        t.Register(Xen.__HYPERVISOR_update_va_mapping, &UpdateVaMappingOp.Handle);
        t.Register(Xen.__HYPERVISOR_update_va_mapping_otherdomain, &UpdateVaMappingOp.HandleOtherDomain);
        t.Register(Xen.__HYPERVISOR_physdev_op, &PhysdevOp.Handle);
        t.Register(Xen.__HYPERVISOR_xenpmu_op, &XenPmuOp.Handle);
        return t;
    }

    /// <summary>A hypercall handler: arguments as the guest left them in rdi, rsi, rdx, r10, r8; a result for rax.</summary>
    internal void Register(int nr, delegate*<Vcpu, ulong, ulong, ulong, ulong, ulong, long> handler)
    {
        if ((uint)nr >= Size)
        {
            throw new ArgumentOutOfRangeException(nameof(nr), nr, $"hypercall numbers run from 0 to {Size - 1}");
        }

        _handlers[nr] = handler;
    }

    /// <summary>Runs hypercall <paramref name="nr"/> without metering it (the caller has counted it).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal long Invoke(Vcpu vcpu, ulong nr, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5)
    {
        if (nr < Size)
        {
            var handler = _handlers[nr];
            if (handler != null)
            {
                return handler(vcpu, a1, a2, a3, a4, a5);
            }
        }

        return -(long)Errno.ENOSYS;
    }

    /// <summary>Xen's names for hypercall numbers, from the ABI's <c>__HYPERVISOR_*</c> constants.</summary>
    private static string[] LoadNames()
    {
        var names = new string[Size];
        foreach (var f in typeof(Xen).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            if (f.IsLiteral && f.Name.StartsWith("__HYPERVISOR_", StringComparison.Ordinal) && f.GetRawConstantValue() is int n && (uint)n < Size)
            {
                var name = f.Name["__HYPERVISOR_".Length..];
                if (names[n] is null || !name.EndsWith("_compat", StringComparison.Ordinal))
                {
                    names[n] = name;
                }
            }
        }

        return names;
    }
}

/// <summary>Guest errno results.</summary>
internal static class Result
{
    public const long Ok = 0;

    public static long Err(Errno e) => -(long)e;
}
