using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/vcpu.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/vcpu.h</c>: <c>VCPUOP_*</c> commands, runstates, timer flags.</summary>
public static class VcpuOp
{
    // HYPERVISOR_vcpu_op(cmd, vcpuid, extra_args).
    /// <summary>Initialise a vCPU once. arg: <c>vcpu_guest_context</c> (PV).</summary>
    public const int VCPUOP_initialise = 0;
    /// <summary>Make an initialised vCPU runnable.</summary>
    public const int VCPUOP_up = 1;
    /// <summary>Make a vCPU non-runnable (asynchronous unless called on itself).</summary>
    public const int VCPUOP_down = 2;
    /// <summary>Returns 1 if the vCPU is up.</summary>
    public const int VCPUOP_is_up = 3;
    /// <summary>arg: <see cref="vcpu_runstate_info"/> (OUT).</summary>
    public const int VCPUOP_get_runstate_info = 4;
    /// <summary>arg: <see cref="vcpu_register_runstate_memory_area"/>.</summary>
    public const int VCPUOP_register_runstate_memory_area = 5;
    /// <summary>arg: <see cref="vcpu_set_periodic_timer"/>.</summary>
    public const int VCPUOP_set_periodic_timer = 6;
    /// <summary>arg: NULL.</summary>
    public const int VCPUOP_stop_periodic_timer = 7;
    /// <summary>arg: <see cref="vcpu_set_singleshot_timer"/>.</summary>
    public const int VCPUOP_set_singleshot_timer = 8;
    /// <summary>arg: NULL.</summary>
    public const int VCPUOP_stop_singleshot_timer = 9;
    /// <summary>Place the vCPU's <c>vcpu_info</c> in a guest page, once. arg: <see cref="vcpu_register_vcpu_info"/>.</summary>
    public const int VCPUOP_register_vcpu_info = 10;
    /// <summary>Send an NMI to the vCPU. arg: NULL.</summary>
    public const int VCPUOP_send_nmi = 11;
    /// <summary>arg: <see cref="vcpu_get_physid"/>.</summary>
    public const int VCPUOP_get_physid = 12;
    /// <summary>Register a secondary copy of the vCPU time info. arg: <see cref="vcpu_register_time_memory_area"/>.</summary>
    public const int VCPUOP_register_vcpu_time_memory_area = 13;

    /// <summary><see cref="vcpu_runstate_info.state"/>: running on a physical CPU.</summary>
    public const int RUNSTATE_running = 0;
    /// <summary>Runnable, but not scheduled.</summary>
    public const int RUNSTATE_runnable = 1;
    /// <summary>Blocked (idle): not runnable.</summary>
    public const int RUNSTATE_blocked = 2;
    /// <summary>Neither runnable nor blocked (hotplug, paused, ...).</summary>
    public const int RUNSTATE_offline = 3;

    /// <summary>[XEN] set in <see cref="vcpu_runstate_info.state_entry_time"/> while Xen updates the guest copy (<c>VMASST_TYPE_runstate_update_flag</c>).</summary>
    public const ulong XEN_RUNSTATE_UPDATE = 1UL << 63;

    public const int _VCPU_SSHOTTMR_future = 0;
    /// <summary><see cref="vcpu_set_singleshot_timer.flags"/>: fail with -ETIME if the timeout has passed (may be ignored).</summary>
    public const uint VCPU_SSHOTTMR_future = 1u << _VCPU_SSHOTTMR_future;

    /// <summary>x86: the APIC id in <see cref="vcpu_get_physid.phys_id"/> (<c>xen_vcpu_physid_to_x86_apicid</c>).</summary>
    public static uint xen_vcpu_physid_to_x86_apicid(ulong physid) => (uint)physid;

    /// <summary>x86: the ACPI id in <see cref="vcpu_get_physid.phys_id"/> (<c>xen_vcpu_physid_to_x86_acpiid</c>).</summary>
    public static uint xen_vcpu_physid_to_x86_acpiid(ulong physid) => (uint)(physid >> 32);
}

/// <summary>A vCPU's state and time spent in each state; also the layout of the registered runstate area.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct vcpu_runstate_info
{
    /// <summary>[XEN] <c>RUNSTATE_*</c>.</summary>
    public int state;
    /// <summary>[XEN] system time (ns) the state was entered; may carry <c>XEN_RUNSTATE_UPDATE</c>.</summary>
    public ulong state_entry_time;
    /// <summary>[XEN] ns spent in each <c>RUNSTATE_*</c>; the sum does not drift from system time.</summary>
    public fixed ulong time[4];
}

/// <summary>VCPUOP_register_runstate_memory_area: where Xen keeps a <see cref="vcpu_runstate_info"/> copy.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_register_runstate_memory_area
{
    /// <summary>IN: a guest virtual address on x86.</summary>
    public Addr addr;

    [StructLayout(LayoutKind.Explicit)]
    public struct Addr
    {
        /// <summary>Guest handle.</summary>
        [FieldOffset(0)] public ulong h;
        /// <summary>Guest virtual address.</summary>
        [FieldOffset(0)] public ulong v;
        /// <summary>Guest physical address (other platforms).</summary>
        [FieldOffset(0)] public ulong p;
    }
}

/// <summary>VCPUOP_set_periodic_timer.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_set_periodic_timer
{
    /// <summary>IN: period in ns (below 1 ms may not be supported).</summary>
    public ulong period_ns;
}

/// <summary>VCPUOP_set_singleshot_timer.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_set_singleshot_timer
{
    /// <summary>IN: absolute system time in ns.</summary>
    public ulong timeout_abs_ns;
    /// <summary>IN: <c>VCPU_SSHOTTMR_*</c>.</summary>
    public uint flags;
}

/// <summary>VCPUOP_register_vcpu_info: the structure must not cross a page boundary.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_register_vcpu_info
{
    /// <summary>IN: frame to place <c>vcpu_info</c> in.</summary>
    public ulong mfn;
    /// <summary>IN: offset within the frame.</summary>
    public uint offset;
    /// <summary>Unused.</summary>
    public uint rsvd;
}

/// <summary>VCPUOP_get_physid: x86 id[31:0] = APIC id, id[63:32] = ACPI id of the pinned vCPU's processor.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_get_physid
{
    /// <summary>OUT</summary>
    public ulong phys_id;
}

/// <summary>VCPUOP_register_vcpu_time_memory_area: where Xen keeps a secondary <c>vcpu_time_info</c> copy.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct vcpu_register_time_memory_area
{
    /// <summary>IN: a guest virtual address on x86.</summary>
    public Addr addr;

    [StructLayout(LayoutKind.Explicit)]
    public struct Addr
    {
        /// <summary>Guest handle.</summary>
        [FieldOffset(0)] public ulong h;
        /// <summary>Guest virtual address.</summary>
        [FieldOffset(0)] public ulong v;
        /// <summary>Guest physical address (other platforms).</summary>
        [FieldOffset(0)] public ulong p;
    }
}
