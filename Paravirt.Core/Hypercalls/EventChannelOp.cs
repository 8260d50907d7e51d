using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_event_channel_op(cmd, arg)</c> with Xen 4.17's sub-ops and errnos for a domU
/// (xen/common/event_channel.c: do_event_channel_op). Operations on another domain's table
/// (alloc_unbound, status, reset with a foreign <c>dom</c>) need privilege over it: -EPERM; an
/// unknown domain is -ESRCH. init_control, expand_array and set_priority are the FIFO ABI
/// (<see cref="FifoEvents"/>); reset also takes a FIFO domain back to 2-level.
/// </summary>
internal static class EventChannelOp
{
    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        var domain = vcpu.Domain;
        switch ((int)cmd)
        {
            case EventChannel.EVTCHNOP_alloc_unbound:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_alloc_unbound a))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var target = Resolve(domain, a.dom, out var rc);
                    if (target is null)
                    {
                        return rc;
                    }

                    if (target != domain)
                    {
                        return Result.Err(Errno.EPERM);
                    }

                    var remote = a.remote_dom == Xen.DOMID_SELF ? domain.Id : a.remote_dom;
                    var port = target.Events.AllocUnbound(remote);
                    if (port < 0)
                    {
                        return port;
                    }

                    a.port = (uint)port;
                    return vcpu.TryCopyTo(arg, a) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_bind_interdomain:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_bind_interdomain b))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var remote = Resolve(domain, b.remote_dom, out var rc);
                    if (remote is null)
                    {
                        return rc;
                    }

                    var port = EventChannelTable.BindInterdomain(domain, remote, b.remote_port);
                    if (port < 0)
                    {
                        return port;
                    }

                    b.local_port = (uint)port;
                    return vcpu.TryCopyTo(arg, b) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_bind_virq:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_bind_virq b))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var port = domain.Events.BindVirq((int)Math.Min(b.virq, int.MaxValue), b.vcpu);
                    if (port < 0)
                    {
                        return port;
                    }

                    b.port = (uint)port;
                    return vcpu.TryCopyTo(arg, b) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_bind_ipi:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_bind_ipi b))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var port = domain.Events.BindIpi(b.vcpu);
                    if (port < 0)
                    {
                        return port;
                    }

                    b.port = (uint)port;
                    return vcpu.TryCopyTo(arg, b) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_bind_pirq:
                return Result.Err(Errno.EPERM); // no physical IRQs are ever granted to a guest here

            case EventChannel.EVTCHNOP_close:
                return vcpu.TryCopyFrom(arg, out evtchn_close close) ? domain.Events.Close(close.port) : Result.Err(Errno.EFAULT);

            case EventChannel.EVTCHNOP_send:
                return vcpu.TryCopyFrom(arg, out evtchn_send send) ? domain.Events.Send(send.port) : Result.Err(Errno.EFAULT);

            case EventChannel.EVTCHNOP_status:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_status s))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var target = Resolve(domain, s.dom, out var rc);
                    if (target is null)
                    {
                        return rc;
                    }

                    if (target != domain)
                    {
                        return Result.Err(Errno.EPERM);
                    }

                    rc = target.Events.Status(s.port, ref s);
                    if (rc < 0)
                    {
                        return rc;
                    }

                    return vcpu.TryCopyTo(arg, s) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_bind_vcpu:
                return vcpu.TryCopyFrom(arg, out evtchn_bind_vcpu bv) ? domain.Events.BindVcpu(bv.port, bv.vcpu) : Result.Err(Errno.EFAULT);

            case EventChannel.EVTCHNOP_unmask:
                return vcpu.TryCopyFrom(arg, out evtchn_unmask u) ? domain.Events.Unmask(u.port) : Result.Err(Errno.EFAULT);

            case EventChannel.EVTCHNOP_reset:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_reset r))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var target = Resolve(domain, r.dom, out var rc);
                    if (target is null)
                    {
                        return rc;
                    }

                    if (target != domain)
                    {
                        return Result.Err(Errno.EPERM);
                    }

                    return target.Events.Reset();
                }

            case EventChannel.EVTCHNOP_init_control:
                {
                    if (!vcpu.TryCopyFrom(arg, out evtchn_init_control ic))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    ic.link_bits = EventChannel.EVTCHN_FIFO_LINK_BITS;
                    var rc = domain.Events.InitControl(ic.vcpu, ic.control_gfn, ic.offset);
                    if (rc < 0)
                    {
                        return rc;
                    }

                    return vcpu.TryCopyTo(arg, ic) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case EventChannel.EVTCHNOP_expand_array:
                return vcpu.TryCopyFrom(arg, out evtchn_expand_array ea) ? domain.Events.ExpandArray(ea.array_gfn) : Result.Err(Errno.EFAULT);

            case EventChannel.EVTCHNOP_set_priority:
                return vcpu.TryCopyFrom(arg, out evtchn_set_priority sp) ? domain.Events.SetPriority(sp.port, sp.priority) : Result.Err(Errno.EFAULT);

            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>Xen's rcu_lock_domain_by_any_id: DOMID_SELF is the caller; an unknown id is -ESRCH.</summary>
    private static Domain? Resolve(Domain caller, ushort domid, out long rc)
    {
        rc = 0;
        if (domid == Xen.DOMID_SELF || domid == caller.Id)
        {
            return caller;
        }

        var d = caller.Hypervisor.FindDomain(domid);
        if (d is null)
        {
            rc = Result.Err(Errno.ESRCH);
        }

        return d;
    }
}
