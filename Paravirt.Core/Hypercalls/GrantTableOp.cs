using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_grant_table_op(cmd, uop, count)</c> as Xen 4.17 answers a domU
/// (xen/common/grant_table.c: do_grant_table_op). Batched ops are copied in one at a time, handled,
/// and their status (a GNTST_* value) written back; a fault on the array ends the call with
/// -EFAULT. Hypercall-level refusals are errnos: a negative count or continuation bits in
/// <c>cmd</c> are -EINVAL, an unknown sub-op (GNTTABOP_dump_table is not dispatched by 4.17)
/// -ENOSYS. Xen preempts long batches with a continuation; a managed vCPU needs none, and every
/// loop here ends at the first op it cannot read, so it is bounded by the caller's memory.
/// GNTTABOP_transfer answers -EOPNOTSUPP, as Xen does when built or booted without grant transfer.
/// </summary>
internal static class GrantTableOp
{
    /// <summary>GNTTABOP_CONTINUATION_ARG_SHIFT: bits above it in cmd are the cache_flush continuation.</summary>
    public const int ContinuationShift = 12;

    private const uint CmdMask = (1u << ContinuationShift) - 1;

    private static readonly ulong UnmapStatusOffset = (ulong)Marshal.OffsetOf<gnttab_unmap_grant_ref>(nameof(gnttab_unmap_grant_ref.status));
    private static readonly ulong ReplaceStatusOffset = (ulong)Marshal.OffsetOf<gnttab_unmap_and_replace>(nameof(gnttab_unmap_and_replace.status));
    private static readonly ulong SetupStatusOffset = (ulong)Marshal.OffsetOf<gnttab_setup_table>(nameof(gnttab_setup_table.status));
    private static readonly ulong StatusFramesStatusOffset = (ulong)Marshal.OffsetOf<gnttab_get_status_frames>(nameof(gnttab_get_status_frames.status));
    private static readonly ulong VersionOffset = (ulong)Marshal.OffsetOf<gnttab_get_version>(nameof(gnttab_get_version.version));
    private static readonly ulong SwapStatusOffset = (ulong)Marshal.OffsetOf<gnttab_swap_grant_ref>(nameof(gnttab_swap_grant_ref.status));
    private static readonly ulong CopyStatusOffset = (ulong)Marshal.OffsetOf<gnttab_copy>(nameof(gnttab_copy.status));

    public static long Handle(Vcpu vcpu, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5)
    {
        // cmd and count are unsigned ints in Xen's prototype: the upper halves of the registers are not looked at.
        var rawCmd = (uint)a1;
        var count = (uint)a3;
        var uop = a2;
        if ((int)count < 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        var cmd = rawCmd & CmdMask;
        var opaque = rawCmd & ~CmdMask;
        if (cmd != GrantTable.GNTTABOP_cache_flush && opaque != 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        return (int)cmd switch
        {
            GrantTable.GNTTABOP_map_grant_ref => MapGrantRef(vcpu, uop, count),
            GrantTable.GNTTABOP_unmap_grant_ref => UnmapGrantRef(vcpu, uop, count),
            GrantTable.GNTTABOP_unmap_and_replace => UnmapAndReplace(vcpu, uop, count),
            GrantTable.GNTTABOP_setup_table => SetupTable(vcpu, uop, count),
            GrantTable.GNTTABOP_transfer => Result.Err(Errno.EOPNOTSUPP),
            GrantTable.GNTTABOP_copy => Copy(vcpu, uop, count),
            GrantTable.GNTTABOP_query_size => QuerySize(vcpu, uop, count),
            GrantTable.GNTTABOP_set_version => SetVersion(vcpu, uop),
            GrantTable.GNTTABOP_get_status_frames => GetStatusFrames(vcpu, uop, count),
            GrantTable.GNTTABOP_get_version => GetVersion(vcpu, uop),
            GrantTable.GNTTABOP_swap_grant_ref => SwapGrantRef(vcpu, uop, count),
            GrantTable.GNTTABOP_cache_flush => CacheFlush(vcpu, uop, count, opaque >> ContinuationShift),
            _ => Result.Err(Errno.ENOSYS),
        };
    }

    private static ulong Element<T>(ulong array, uint i)
        where T : unmanaged => array + ((ulong)i * (ulong)Unsafe.SizeOf<T>());

    /// <summary>rcu_lock_domain_by_any_id plus the dummy XSM's XSM_TARGET: only the caller itself passes.</summary>
    private delegate GrantStatus GrantAction<T>(Vcpu vcpu, in T op)
        where T : unmanaged;

    /// <summary>
    /// The shape most batched grant ops share: copy each op out of the guest once, act on the copy,
    /// write the op's GNTST_* status back; a fault on the array ends the batch with -EFAULT. The
    /// array is read through a page cursor (no frame reference per access; see GuestPageCursor).
    /// </summary>
    private static long ForEachOp<T>(Vcpu vcpu, ulong uop, uint count, ulong statusOffset, GrantAction<T> action)
        where T : unmanaged
    {
        var ops = vcpu.OpenCursor();
        try
        {
            for (var i = 0u; i < count; i++)
            {
                var at = Element<T>(uop, i);
                if (!ops.TryRead(at, out T op))
                {
                    return Result.Err(Errno.EFAULT);
                }

                if (!ops.TryWrite(at + statusOffset, (short)action(vcpu, in op)))
                {
                    return Result.Err(Errno.EFAULT);
                }
            }

            return Result.Ok;
        }
        finally
        {
            ops.Dispose();
        }
    }

    private static long MapGrantRef(Vcpu vcpu, ulong uop, uint count)
    {
        var domain = vcpu.Domain;
        for (var i = 0u; i < count; i++)
        {
            var at = Element<gnttab_map_grant_ref>(uop, i);
            if (!vcpu.TryCopyFrom(at, out gnttab_map_grant_ref op))
            {
                return Result.Err(Errno.EFAULT);
            }

            // rcu_lock_domain_by_id: DOMID_SELF is not an id.
            var granter = op.dom == domain.Id ? domain : domain.Hypervisor.FindDomain(op.dom);
            var rc = GrantOps.Map(domain, granter, op.@ref, op.flags, op.host_addr, out var handle, out var mfn);
            op.status = (short)rc;
            if (rc == GrantStatus.Okay)
            {
                op.handle = handle;
                op.dev_bus_addr = mfn << MachineMemory.PageShift;
            }

            if (!vcpu.TryCopyTo(at, op))
            {
                return Result.Err(Errno.EFAULT);
            }
        }

        return Result.Ok;
    }

    private static long UnmapGrantRef(Vcpu vcpu, ulong uop, uint count) =>
        ForEachOp(vcpu, uop, count, UnmapStatusOffset,
            static (Vcpu v, in gnttab_unmap_grant_ref op) => GrantOps.Unmap(v.Domain, op.handle, op.host_addr, op.dev_bus_addr));

    /// <summary>
    /// unmap_and_replace: a translated mapper's replace_grant_p2m_mapping refuses a non-zero
    /// new_addr (GNTST_general_error); with new_addr 0 it is a plain host unmap.
    /// </summary>
    private static long UnmapAndReplace(Vcpu vcpu, ulong uop, uint count) =>
        ForEachOp(vcpu, uop, count, ReplaceStatusOffset,
            static (Vcpu v, in gnttab_unmap_and_replace op) => op.new_addr != 0 && op.host_addr != 0 && v.Domain.IsTranslated
                ? GrantStatus.GeneralError
                : GrantOps.Unmap(v.Domain, op.handle, op.host_addr, 0));

    private delegate GrantStatus FrameSource(Grants.DomainGrantTable table, uint nrFrames, out ulong[] frames);

    /// <summary>
    /// What setup_table and get_status_frames share: the caller may only ask about itself
    /// (bad_domain / permission_denied otherwise), the frame numbers go to frame_list (a fault there
    /// is bad_virt_addr), and the status goes back into the op.
    /// </summary>
    private static long ReplyWithFrames(Vcpu vcpu, ulong uop, ushort dom, uint nrFrames, ulong frameList, ulong statusOffset, FrameSource source)
    {
        GrantStatus status;
        switch (TargetDomains.Classify(vcpu, dom))
        {
            case TargetDomain.Missing:
                status = GrantStatus.BadDomain;
                break;
            case TargetDomain.Other:
                status = GrantStatus.PermissionDenied;
                break;
            default:
                status = source(vcpu.Domain.Grants, nrFrames, out var frames);
                for (var i = 0u; status == GrantStatus.Okay && i < frames.Length; i++)
                {
                    if (!vcpu.TryCopyTo(frameList + (i * 8UL), frames[i]))
                    {
                        status = GrantStatus.BadVirtAddr;
                    }
                }

                break;
        }

        return vcpu.TryCopyTo(uop + statusOffset, (short)status) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    private static long SetupTable(Vcpu vcpu, ulong uop, uint count)
    {
        if (count != 1)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (!vcpu.TryCopyFrom(uop, out gnttab_setup_table op))
        {
            return Result.Err(Errno.EFAULT);
        }

        return ReplyWithFrames(vcpu, uop, op.dom, op.nr_frames, op.frame_list, SetupStatusOffset, static (t, n, out f) => t.SetupTable(n, out f));
    }

    private static long QuerySize(Vcpu vcpu, ulong uop, uint count)
    {
        if (count != 1)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (!vcpu.TryCopyFrom(uop, out gnttab_query_size op))
        {
            return Result.Err(Errno.EFAULT);
        }

        switch (TargetDomains.Classify(vcpu, op.dom))
        {
            case TargetDomain.Missing:
                op.status = GrantTable.GNTST_bad_domain;
                break;
            case TargetDomain.Other:
                op.status = GrantTable.GNTST_permission_denied;
                break;
            default:
                var grants = vcpu.Domain.Grants;
                op.nr_frames = (uint)grants.FrameCount;
                op.max_nr_frames = (uint)grants.MaxFrames;
                op.status = GrantTable.GNTST_okay;
                break;
        }

        return vcpu.TryCopyTo(uop, op) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    private static long SetVersion(Vcpu vcpu, ulong uop)
    {
        if (!vcpu.TryCopyFrom(uop, out gnttab_set_version op))
        {
            return Result.Err(Errno.EFAULT);
        }

        var error = vcpu.Domain.Grants.SetVersion(op.version, out var current);
        op.version = current;
        if (!vcpu.TryCopyTo(uop, op))
        {
            return Result.Err(Errno.EFAULT);
        }

        return error is { } e ? Result.Err(e) : Result.Ok;
    }

    private static long GetStatusFrames(Vcpu vcpu, ulong uop, uint count)
    {
        if (count != 1)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (!vcpu.TryCopyFrom(uop, out gnttab_get_status_frames op))
        {
            return Result.Err(Errno.EFAULT);
        }

        return ReplyWithFrames(vcpu, uop, op.dom, op.nr_frames, op.frame_list, StatusFramesStatusOffset, static (t, n, out f) => t.GetStatusFrames(n, out f));
    }

    private static long GetVersion(Vcpu vcpu, ulong uop)
    {
        if (!vcpu.TryCopyFrom(uop, out gnttab_get_version op))
        {
            return Result.Err(Errno.EFAULT);
        }

        return TargetDomains.Classify(vcpu, op.dom) switch
        {
            TargetDomain.Missing => Result.Err(Errno.ESRCH),
            TargetDomain.Other => Result.Err(Errno.EPERM),
            _ => vcpu.TryCopyTo(uop + VersionOffset, (uint)vcpu.Domain.Grants.Version) ? Result.Ok : Result.Err(Errno.EFAULT),
        };
    }

    private static long SwapGrantRef(Vcpu vcpu, ulong uop, uint count) =>
        ForEachOp(vcpu, uop, count, SwapStatusOffset,
            static (Vcpu v, in gnttab_swap_grant_ref op) => v.Domain.Grants.Swap(op.ref_a, op.ref_b));

    private static long Copy(Vcpu vcpu, ulong uop, uint count) =>
        ForEachOp(vcpu, uop, count, CopyStatusOffset, static (Vcpu v, in gnttab_copy op) =>
        {
            var source = new GrantOps.CopyEnd(op.source.domid, (op.flags & GrantTable.GNTCOPY_source_gref) != 0, op.source.u.@ref, op.source.u.gmfn, op.source.offset);
            var dest = new GrantOps.CopyEnd(op.dest.domid, (op.flags & GrantTable.GNTCOPY_dest_gref) != 0, op.dest.u.@ref, op.dest.u.gmfn, op.dest.offset);
            return GrantOps.Copy(v.Domain, source, dest, op.len);
        });

    /// <summary>
    /// gnttab_cache_flush on x86: arguments checked as _cache_flush does; the frame (a machine
    /// address) must be the caller's or one of a grant it has mapped; a clean (with or without
    /// invalidate) succeeds, an invalidate alone is -EOPNOTSUPP (x86's invalidate_dcache_va_range).
    /// </summary>
    private static long CacheFlush(Vcpu vcpu, ulong uop, uint count, uint continuation)
    {
        var domain = vcpu.Domain;
        var frames = domain.Hypervisor.Frames;
        for (var i = 0u; i < count; i++)
        {
            if (!vcpu.TryCopyFrom(Element<gnttab_cache_flush>(uop, i), out gnttab_cache_flush op))
            {
                return Result.Err(Errno.EFAULT);
            }

            if (op.offset >= MachineMemory.PageSize || op.length > MachineMemory.PageSize || op.offset + op.length > MachineMemory.PageSize
                || (op.op & ~(GrantTable.GNTTAB_CACHE_INVAL | GrantTable.GNTTAB_CACHE_CLEAN)) != 0)
            {
                return Result.Err(Errno.EINVAL);
            }

            if (op.length == 0 || op.op == 0)
            {
                if (continuation != 0)
                {
                    return Result.Err(Errno.EILSEQ);
                }

                continue;
            }

            var mfn = op.a.dev_bus_addr >> MachineMemory.PageShift;
            if (!frames.IsValid(mfn))
            {
                return Result.Err(Errno.EINVAL);
            }

            var owner = frames.OwnerOf(mfn);
            var ownerDomain = owner == FrameTable.NoOwner ? null : domain.Hypervisor.FindDomain(owner);
            if (ownerDomain is null)
            {
                return Result.Err(Errno.EPERM);
            }

            if (ownerDomain != domain && !ownerDomain.Grants.IsPinnedBy(domain.Id, mfn))
            {
                return Result.Err(Errno.EINVAL);
            }

            if (op.op == GrantTable.GNTTAB_CACHE_INVAL)
            {
                return Result.Err(Errno.EOPNOTSUPP);
            }

            continuation = 0;
        }

        return Result.Ok;
    }
}
