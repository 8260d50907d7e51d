using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_callback_op(cmd, arg)</c> and the older <c>__HYPERVISOR_set_callbacks(event,
/// failsafe, syscall)</c>, as Xen 4.17 implements them for 64-bit PV vCPUs: addresses must be
/// canonical; only the NMI callback can be unregistered.
/// </summary>
internal static class CallbackOp
{
    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        switch ((int)cmd)
        {
            case Callback.CALLBACKOP_register:
                return vcpu.TryCopyFrom(arg, out callback_register reg) ? Register(vcpu, reg) : Result.Err(Errno.EFAULT);
            case Callback.CALLBACKOP_unregister:
                if (!vcpu.TryCopyFrom(arg, out callback_unregister unreg))
                {
                    return Result.Err(Errno.EFAULT);
                }

                switch (unreg.type)
                {
                    case Callback.CALLBACKTYPE_event or Callback.CALLBACKTYPE_failsafe or Callback.CALLBACKTYPE_syscall
                        or Callback.CALLBACKTYPE_syscall32 or Callback.CALLBACKTYPE_sysenter:
                        return Result.Err(Errno.EINVAL);
                    case Callback.CALLBACKTYPE_nmi:
                        vcpu.NmiCallback = 0;
                        return Result.Ok;
                    default:
                        return Result.Err(Errno.ENOSYS);
                }

            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>set_callbacks: registers event, failsafe and syscall; Xen ignores each registration's result and returns 0.</summary>
    public static long SetCallbacks(Vcpu vcpu, ulong eventAddress, ulong failsafeAddress, ulong syscallAddress, ulong a4, ulong a5)
    {
        Register(vcpu, new callback_register { type = Callback.CALLBACKTYPE_event, address = eventAddress });
        Register(vcpu, new callback_register { type = Callback.CALLBACKTYPE_failsafe, address = failsafeAddress });
        Register(vcpu, new callback_register { type = Callback.CALLBACKTYPE_syscall, address = syscallAddress });
        return Result.Ok;
    }

    /// <summary>x86-64 canonical: bits 63..47 all equal.</summary>
    internal static bool IsCanonical(ulong address) => (long)address >> 47 is 0 or -1;

    private static long Register(Vcpu vcpu, in callback_register reg)
    {
        if (!IsCanonical(reg.address))
        {
            return Result.Err(Errno.EINVAL);
        }

        var masks = (reg.flags & Callback.CALLBACKF_mask_events) != 0;
        switch (reg.type)
        {
            case Callback.CALLBACKTYPE_event:
                vcpu.EventCallback = reg.address;
                return Result.Ok;
            case Callback.CALLBACKTYPE_failsafe:
                vcpu.FailsafeCallback = reg.address;
                vcpu.SetCallbackMasksEvents(Callback.CALLBACKTYPE_failsafe, masks);
                return Result.Ok;
            case Callback.CALLBACKTYPE_syscall:
                vcpu.SyscallCallback = reg.address;
                vcpu.SetCallbackMasksEvents(Callback.CALLBACKTYPE_syscall, masks);
                return Result.Ok;
            case Callback.CALLBACKTYPE_syscall32:
            case Callback.CALLBACKTYPE_sysenter:
                // Recorded for completeness; a 64-bit PV guest's 32-bit user mode is not run by the managed engine.
                vcpu.SetCallbackMasksEvents(reg.type, masks);
                return Result.Ok;
            case Callback.CALLBACKTYPE_nmi:
                vcpu.NmiCallback = reg.address;
                return Result.Ok;
            default:
                return Result.Err(Errno.ENOSYS);
        }
    }
}

/// <summary><c>__HYPERVISOR_vm_assist(cmd, type)</c>: the VMASST_TYPE_* bits a 64-bit PV guest may set (Xen's PV64_VM_ASSIST_MASK).</summary>
internal static class VmAssistOp
{
    public const ulong ValidMask =
        (1UL << Xen.VMASST_TYPE_4gb_segments) | (1UL << Xen.VMASST_TYPE_4gb_segments_notify)
        | (1UL << Xen.VMASST_TYPE_writable_pagetables) | (1UL << Xen.VMASST_TYPE_pae_extended_cr3)
        | (1UL << Xen.VMASST_TYPE_architectural_iopl) | (1UL << Xen.VMASST_TYPE_runstate_update_flag)
        | (1UL << Xen.VMASST_TYPE_m2p_strict);

    public static long Handle(Vcpu vcpu, ulong cmd, ulong type, ulong a3, ulong a4, ulong a5)
    {
        var t = (uint)type;
        if (t >= 64 || (ValidMask & (1UL << (int)t)) == 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        var domain = vcpu.Domain;
        switch ((uint)cmd)
        {
            case Xen.VMASST_CMD_enable:
                domain.SetVmAssist(t, true);
                return Result.Ok;
            case Xen.VMASST_CMD_disable:
                domain.SetVmAssist(t, false);
                return Result.Ok;
            default:
                return Result.Err(Errno.ENOSYS);
        }
    }
}
