using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/callback.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/callback.h</c>: callback types, flags and <c>CALLBACKOP_*</c> commands.</summary>
public static class Callback
{
    /// <summary>x86: event delivery.</summary>
    public const int CALLBACKTYPE_event = 0;
    /// <summary>x86: Xen could not restore guest state.</summary>
    public const int CALLBACKTYPE_failsafe = 1;
    /// <summary>x86-64: syscall by a 64-bit guest application.</summary>
    public const int CALLBACKTYPE_syscall = 2;
    /// <summary>x86-32 with supervisor_mode_kernel only; not for new code.</summary>
    public const int CALLBACKTYPE_sysenter_deprecated = 3;
    /// <summary>x86: NMI delivery.</summary>
    public const int CALLBACKTYPE_nmi = 4;
    /// <summary>x86-64: sysenter by 32-bit guest applications on Intel CPUs.</summary>
    public const int CALLBACKTYPE_sysenter = 5;
    /// <summary>x86-64: syscall by 32-bit guest applications on AMD CPUs.</summary>
    public const int CALLBACKTYPE_syscall32 = 7;

    public const int _CALLBACKF_mask_events = 0;
    /// <summary><see cref="callback_register.flags"/>: disable event delivery during the callback (implied for event and NMI).</summary>
    public const uint CALLBACKF_mask_events = 1u << _CALLBACKF_mask_events;

    /// <summary>arg: <see cref="callback_register"/>.</summary>
    public const int CALLBACKOP_register = 0;
    /// <summary>arg: <see cref="callback_unregister"/>; -EINVAL for callbacks that cannot be unregistered.</summary>
    public const int CALLBACKOP_unregister = 1;
}

/// <summary>CALLBACKOP_register.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct callback_register
{
    /// <summary>IN: <c>CALLBACKTYPE_*</c>.</summary>
    public ushort type;
    /// <summary>IN: <c>CALLBACKF_*</c>.</summary>
    public ushort flags;
    /// <summary>IN: <c>xen_callback_t</c>, on x86-64 the guest virtual address of the handler.</summary>
    public ulong address;
}

/// <summary>CALLBACKOP_unregister.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct callback_unregister
{
    /// <summary>IN: <c>CALLBACKTYPE_*</c>.</summary>
    public ushort type;
    public ushort _unused;
}
