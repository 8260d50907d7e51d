using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/sched.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/sched.h</c>: <c>SCHEDOP_*</c> commands and <c>SHUTDOWN_*</c> reasons.</summary>
public static class Sched
{
    // enum sched_op: HYPERVISOR_sched_op(cmd, arg).
    /// <summary>Voluntarily yield the CPU. arg: NULL.</summary>
    public const int SCHEDOP_yield = 0;
    /// <summary>Block until an event arrives; re-enables event delivery atomically. arg: NULL.</summary>
    public const int SCHEDOP_block = 1;
    /// <summary>Halt the whole domain. arg: <see cref="sched_shutdown"/>; for suspend, RDX holds the start info MFN.</summary>
    public const int SCHEDOP_shutdown = 2;
    /// <summary>Poll event channel ports with an optional timeout. arg: <see cref="sched_poll"/>.</summary>
    public const int SCHEDOP_poll = 3;
    /// <summary>Declare a shutdown for another domain. arg: <see cref="sched_remote_shutdown"/>.</summary>
    public const int SCHEDOP_remote_shutdown = 4;
    /// <summary>Latch the code reported when the domain later shuts down. arg: <see cref="sched_shutdown"/>.</summary>
    public const int SCHEDOP_shutdown_code = 5;
    /// <summary>Set up, poke or destroy a domain watchdog. arg: <see cref="sched_watchdog"/>.</summary>
    public const int SCHEDOP_watchdog = 6;
    /// <summary>Pin the vCPU to one physical CPU, or undo (hardware domain only). arg: <see cref="sched_pin_override"/>.</summary>
    public const int SCHEDOP_pin_override = 7;

    // enum sched_shutdown_reason
    /// <summary>Domain exited normally: clean up and kill.</summary>
    public const int SHUTDOWN_poweroff = 0;
    /// <summary>Clean up, kill, and restart.</summary>
    public const int SHUTDOWN_reboot = 1;
    /// <summary>Clean up, save suspend info, kill.</summary>
    public const int SHUTDOWN_suspend = 2;
    /// <summary>The domain crashed.</summary>
    public const int SHUTDOWN_crash = 3;
    /// <summary>Restart because the watchdog expired.</summary>
    public const int SHUTDOWN_watchdog = 4;
    /// <summary>Reset Xen state for the domain, keeping its memory and vCPU contexts.</summary>
    public const int SHUTDOWN_soft_reset = 5;
    /// <summary>The highest valid reason.</summary>
    public const int SHUTDOWN_MAX = 5;
}

/// <summary>SCHEDOP_shutdown and SCHEDOP_shutdown_code.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct sched_shutdown
{
    /// <summary>IN: <c>SHUTDOWN_*</c>.</summary>
    public uint reason;
}

/// <summary>SCHEDOP_poll: return when one of the ports is pending or at <c>timeout</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct sched_poll
{
    /// <summary>IN: guest handle to <c>evtchn_port_t[nr_ports]</c>.</summary>
    public ulong ports;
    /// <summary>IN</summary>
    public uint nr_ports;
    /// <summary>IN: absolute system time (ns), 0 for none.</summary>
    public ulong timeout;
}

/// <summary>SCHEDOP_remote_shutdown.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct sched_remote_shutdown
{
    /// <summary>IN: the remote domain.</summary>
    public ushort domain_id;
    /// <summary>IN: <c>SHUTDOWN_*</c>.</summary>
    public uint reason;
}

/// <summary>SCHEDOP_watchdog: id 0 creates (returns the id); timeout 0 destroys; else pokes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct sched_watchdog
{
    /// <summary>IN: watchdog id.</summary>
    public uint id;
    /// <summary>IN: timeout (seconds).</summary>
    public uint timeout;
}

/// <summary>SCHEDOP_pin_override.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct sched_pin_override
{
    /// <summary>IN: the physical CPU; negative undoes a previous override.</summary>
    public int pcpu;
}
