using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_vcpu_op(cmd, vcpuid, arg)</c> as Xen 4.17 answers a 64-bit PV domU
/// (x86 do_vcpu_op, then common_vcpu_op). A vcpuid the domain does not have is -ENOENT; an
/// unknown command -ENOSYS.
/// </summary>
internal static class VcpuOp
{
    /// <summary>Xen's MILLISECS(1): the shortest periodic timer period.</summary>
    public const ulong MinPeriodNs = 1_000_000;

    /// <summary>Xen's STIME_DELTA_MAX (~0 &gt;&gt; 2): the longest periodic timer period.</summary>
    public const ulong MaxPeriodNs = ulong.MaxValue >> 2;

    private static readonly int VcpuInfoAlign = 8; // alignof(vcpu_info)

    public static long Handle(Vcpu current, ulong cmd, ulong vcpuid, ulong arg, ulong a4, ulong a5)
    {
        var domain = current.Domain;
        var id = (uint)vcpuid; // unsigned int in the C prototype
        if (id >= (uint)domain.Vcpus.Length)
        {
            return Result.Err(Errno.ENOENT); // domain_vcpu() == NULL
        }

        var v = domain.Vcpus[id];
        switch ((int)cmd)
        {
            case Abi.VcpuOp.VCPUOP_send_nmi:
                if (arg != 0)
                {
                    return Result.Err(Errno.EINVAL);
                }

                if (!v.RaiseNmi())
                {
                    v.Kick();
                }

                return Result.Ok;

            case Abi.VcpuOp.VCPUOP_register_vcpu_time_memory_area:
                {
                    if (!current.TryCopyFrom(arg, out vcpu_register_time_memory_area area) || !GuestHandleOkay(area.addr.v, 32))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    v.TimeArea = area.addr.v;
                    v.UpdateTimeInfo();
                    return Result.Ok;
                }

            case Abi.VcpuOp.VCPUOP_get_physid:
                return Result.Err(Errno.EINVAL); // only the hardware domain's pinned vCPUs have one

            case Abi.VcpuOp.VCPUOP_initialise:
                return Initialise(current, v, arg);

            case Abi.VcpuOp.VCPUOP_up:
                return domain.UpVcpu(v);

            case Abi.VcpuOp.VCPUOP_down:
                return domain.DownVcpu(v);

            case Abi.VcpuOp.VCPUOP_is_up:
                return v.IsUp ? 1 : 0;

            case Abi.VcpuOp.VCPUOP_get_runstate_info:
                return current.TryCopyTo(arg, v.RunstateInfo(upToNow: true)) ? Result.Ok : Result.Err(Errno.EFAULT);

            case Abi.VcpuOp.VCPUOP_set_periodic_timer:
                {
                    if (!current.TryCopyFrom(arg, out vcpu_set_periodic_timer set))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    if (set.period_ns < MinPeriodNs || set.period_ns > MaxPeriodNs)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    v.SetPeriodicTimer(set.period_ns);
                    return Result.Ok;
                }

            case Abi.VcpuOp.VCPUOP_stop_periodic_timer:
                v.SetPeriodicTimer(0);
                return Result.Ok;

            case Abi.VcpuOp.VCPUOP_set_singleshot_timer:
                {
                    if (v != current)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    if (!current.TryCopyFrom(arg, out vcpu_set_singleshot_timer set))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // Xen 4.17.x ignores VCPU_SSHOTTMR_future (commit "xen/vcpu: ignore VCPU_SSHOTTMR_future"):
                    // a deadline already past sends the timer event at once instead of failing with -ETIME.
                    if (set.timeout_abs_ns < domain.Hypervisor.Clock.SystemTimeNs()) // compared unsigned, as in C
                    {
                        v.FireSingleShotNow();
                    }
                    else
                    {
                        v.SetSingleShotTimer(set.timeout_abs_ns);
                    }

                    return Result.Ok;
                }

            case Abi.VcpuOp.VCPUOP_stop_singleshot_timer:
                if (v != current)
                {
                    return Result.Err(Errno.EINVAL);
                }

                v.SetSingleShotTimer(0);
                return Result.Ok;

            case Abi.VcpuOp.VCPUOP_register_vcpu_info:
                {
                    if (!current.TryCopyFrom(arg, out vcpu_register_vcpu_info info))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    long rc;
                    lock (domain.VcpuLock)
                    {
                        rc = RegisterVcpuInfo(current, v, info);
                    }

                    v.UpdateTimeInfo(); // force_update_vcpu_system_time, whatever the outcome
                    return rc;
                }

            case Abi.VcpuOp.VCPUOP_register_runstate_memory_area:
                {
                    if (!current.TryCopyFrom(arg, out vcpu_register_runstate_memory_area area) || !GuestHandleOkay(area.addr.v, 48))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // 0 is a null handle: updates stop. A wild address is accepted; copies to it just fail.
                    v.SetRunstateArea(area.addr.v);
                    return Result.Ok;
                }

            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>
    /// x86-64 guest_handle_okay for a PV guest (__addr_ok): the address lies in the guest's lower
    /// half or above Xen's reserved range. It says nothing of whether memory is there.
    /// </summary>
    internal static bool GuestHandleOkay(ulong address, int size)
    {
        _ = size;
        return address < (1UL << 47) || address >= ArchX86.__HYPERVISOR_VIRT_END;
    }

    /// <summary>
    /// VCPUOP_initialise for a PV vCPU: needs a vcpu_info (vCPUs past the legacy 32 must register one
    /// first), copies the context once, -EEXIST when already initialised, then arch_set_info_guest's
    /// checks (canonical addresses, LDT and GDT bounds, a user page table when not in kernel mode).
    /// </summary>
    private static long Initialise(Vcpu current, Vcpu v, ulong arg)
    {
        if (!v.HasVcpuInfo)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (!current.TryCopyFrom(arg, out vcpu_guest_context ctxt))
        {
            return Result.Err(Errno.EFAULT);
        }

        var domain = v.Domain;
        lock (domain.VcpuLock)
        {
            if (v.IsInitialised)
            {
                return Result.Err(Errno.EEXIST);
            }

            if (Validate(ctxt) is { } error)
            {
                return Result.Err(error);
            }

            v.EventCallback = ctxt.event_callback_eip;
            v.FailsafeCallback = ctxt.failsafe_callback_eip;
            v.SyscallCallback = ctxt.syscall_callback_eip;
            v.SetCallbackMasksEvents(Callback.CALLBACKTYPE_failsafe, (ctxt.flags & ArchX86.VGCF_failsafe_disables_events) != 0);
            v.SetCallbackMasksEvents(Callback.CALLBACKTYPE_syscall, (ctxt.flags & ArchX86.VGCF_syscall_disables_events) != 0);
            v.InitialContext = (ctxt.user_regs.rip, ctxt.user_regs.rsp);
            v.InitialGuestContext = domain.IsTranslated ? null : new(ctxt);
            v.IsInitialised = true;
        }

        // VGCF_online: the vCPU comes up with its context (Xen clears VPF_down).
        return (ctxt.flags & ArchX86.VGCF_online) != 0 ? domain.UpVcpu(v) : Result.Ok;
    }

    private static unsafe Errno? Validate(in vcpu_guest_context c)
    {
        static bool Canonical(ulong a) => CallbackOp.IsCanonical(a);

        if (!Canonical(c.user_regs.rip) || !Canonical(c.user_regs.rsp) || !Canonical(c.kernel_sp)
            || (c.ldt_ents != 0 && !Canonical(c.ldt_base))
            || !Canonical(c.fs_base) || !Canonical(c.gs_base_kernel) || !Canonical(c.gs_base_user)
            || !Canonical(c.event_callback_eip) || !Canonical(c.syscall_callback_eip) || !Canonical(c.failsafe_callback_eip))
        {
            return Errno.EINVAL;
        }

        for (var i = 0; i < 256; i++)
        {
            if (!Canonical(c.trap_ctxt[i].address))
            {
                return Errno.EINVAL;
            }
        }

        if (!GuestHandleOkay(c.ldt_base, 0) || (c.ldt_base & (MachineMemory.PageSize - 1)) != 0 || c.ldt_ents > 8192)
        {
            return Errno.EINVAL;
        }

        if ((c.gdt_ents + 511) / 512 > 16)
        {
            return Errno.EINVAL;
        }

        if ((c.flags & ArchX86.VGCF_in_kernel) == 0 && c.ctrlreg[1] == 0)
        {
            return Errno.EINVAL;
        }

        return null;
    }

    /// <summary>
    /// Xen's map_vcpu_info for a PV guest, where the "gfn" is a machine frame: the vcpu_info must
    /// fit in the page and be 8-byte aligned (-ENXIO), may be registered once (-EINVAL), only on
    /// the calling vCPU or a down one (-EINVAL), in a frame the domain owns (-EINVAL).
    /// </summary>
    private static long RegisterVcpuInfo(Vcpu current, Vcpu v, in vcpu_register_vcpu_info info)
    {
        if (info.offset > (uint)(MachineMemory.PageSize - Vcpu.VcpuInfoSize) || (info.offset & (VcpuInfoAlign - 1)) != 0)
        {
            return Result.Err(Errno.ENXIO);
        }

        if (v.VcpuInfoRegistered)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (v != current && v.IsUp)
        {
            return Result.Err(Errno.EINVAL);
        }

        var domain = v.Domain;
        // Xen's map_vcpu_info takes a GFN: the MFN itself for classic PV, a physmap entry when translated.
        if (!domain.TryResolveGuestFrame(info.mfn, out var mfn)
            || PinnedPage.TryPin(domain.Hypervisor.Frames, mfn, domain.Id) is not { } page)
        {
            return Result.Err(Errno.EINVAL);
        }

        v.MoveVcpuInfo(page, (int)info.offset);
        return Result.Ok;
    }
}
