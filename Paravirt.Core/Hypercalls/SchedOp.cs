using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary><c>__HYPERVISOR_sched_op(cmd, arg)</c> with Xen 4.17's sub-ops.</summary>
internal static class SchedOp
{
    /// <summary>Xen's NR_DOMAIN_WATCHDOG_TIMERS.</summary>
    public const int WatchdogTimers = 2;

    /// <summary>Xen's arbitrary bound on SCHEDOP_poll's port list.</summary>
    public const int MaxPollPorts = 128;

    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        var domain = vcpu.Domain;
        switch ((int)cmd)
        {
            case Sched.SCHEDOP_yield:
                Thread.Yield();
                return Result.Ok;

            case Sched.SCHEDOP_block:
                vcpu.BlockEnablingEvents();
                vcpu.UpdateTimeInfo();
                return Result.Ok;

            case Sched.SCHEDOP_shutdown:
                {
                    if (!vcpu.TryCopyFrom(arg, out sched_shutdown s))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    Shutdown(domain, (byte)s.reason, $"the guest asked for {ReasonName((byte)s.reason)}");
                    return Result.Ok;
                }

            case Sched.SCHEDOP_shutdown_code:
                {
                    if (!vcpu.TryCopyFrom(arg, out sched_shutdown s))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    domain.PendingShutdownCode ??= (byte)s.reason;
                    return Result.Ok;
                }

            case Sched.SCHEDOP_poll:
                {
                    if (!vcpu.TryCopyFrom(arg, out sched_poll p))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return Poll(vcpu, p);
                }

            case Sched.SCHEDOP_remote_shutdown:
                {
                    if (!vcpu.TryCopyFrom(arg, out sched_remote_shutdown r))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    if (domain.Hypervisor.FindDomain(r.domain_id) is null)
                    {
                        return Result.Err(Errno.ESRCH);
                    }

                    // Only a device model or the control domain may shut another domain down.
                    return Result.Err(Errno.EPERM);
                }

            case Sched.SCHEDOP_watchdog:
                {
                    if (!vcpu.TryCopyFrom(arg, out sched_watchdog w))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return domain.Watchdog(w.id, w.timeout);
                }

            case Sched.SCHEDOP_pin_override:
                return Result.Err(Errno.EPERM); // hardware domain only

            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>Xen's domain_shutdown: SHUTDOWN_crash crashes; otherwise a code set earlier with SCHEDOP_shutdown_code wins.</summary>
    internal static void Shutdown(Domain domain, byte reason, string words)
    {
        if (reason == Sched.SHUTDOWN_crash)
        {
            domain.Crash(words);
            return;
        }

        var code = domain.PendingShutdownCode ?? reason;
        domain.Shutdown(code, words);
    }

    internal static string ReasonName(uint reason) => reason switch
    {
        Sched.SHUTDOWN_poweroff => "poweroff",
        Sched.SHUTDOWN_reboot => "reboot",
        Sched.SHUTDOWN_suspend => "suspend",
        Sched.SHUTDOWN_crash => "crash",
        Sched.SHUTDOWN_watchdog => "watchdog",
        Sched.SHUTDOWN_soft_reset => "soft_reset",
        _ => $"shutdown reason {reason}",
    };

    /// <summary>
    /// SCHEDOP_poll: block until one of the listed ports is pending, an event needs delivery, or
    /// the timeout (absolute system time, 0 = none) passes. Returns 0 in every such case.
    /// </summary>
    private static long Poll(Vcpu vcpu, in sched_poll p)
    {
        if (p.nr_ports > MaxPollPorts)
        {
            return Result.Err(Errno.EINVAL);
        }

        Span<uint> ports = stackalloc uint[(int)p.nr_ports];
        if (!vcpu.TryCopyFrom(p.ports, System.Runtime.InteropServices.MemoryMarshal.AsBytes(ports)))
        {
            return Result.Err(Errno.EFAULT);
        }

        var domain = vcpu.Domain;
        foreach (var port in ports)
        {
            if (port >= (uint)domain.Limits.MaxEventChannels)
            {
                return Result.Err(Errno.EINVAL);
            }
        }

        if (vcpu.UpcallDeliverable() || domain.AnyPortPending(ports))
        {
            return Result.Ok;
        }

        vcpu.IsPolling = true;
        try
        {
            vcpu.WaitForKick(p.timeout, ports);
        }
        finally
        {
            vcpu.IsPolling = false;
        }

        vcpu.UpdateTimeInfo();
        return Result.Ok;
    }
}
