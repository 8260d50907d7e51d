using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_mmuext_op(ops, count, pdone, foreigndom)</c> as Xen 4.17's do_mmuext_op answers
/// a 64-bit PV domU (xen/arch/x86/mm.c): pins and unpins, base pointers, TLB flushes (turned into
/// flush requests to the vCPUs concerned; a full flush stands in for every INVLPG), the LDT, and
/// page clear/copy. Each <c>mmuext_op</c> is copied out once; the batch stops at the first
/// failure, whose errno is returned, and <c>*pdone</c> gets the number of ops done. A foreign
/// domain answers -ESRCH when missing (or the caller's own id) and -EPERM otherwise; a translated
/// caller gets -EINVAL (is_pv_domain fails for its own domain).
/// </summary>
internal static class MmuExtOp
{
    private static readonly int OpSize = Marshal.SizeOf<mmuext_op>();

    /// <summary>The most LDT entries (8192 descriptors, 64 KiB).</summary>
    private const uint MaxLdtEntries = 8192;

    public static long Handle(Vcpu vcpu, ulong ops, ulong countArg, ulong pdone, ulong foreigndomArg, ulong a5)
    {
        var domain = vcpu.Domain;
        var count = (uint)countArg;
        var done = 0u;
        if ((count & MmuUpdateOp.MMU_UPDATE_PREEMPTED) != 0)
        {
            count &= ~MmuUpdateOp.MMU_UPDATE_PREEMPTED;
            if (pdone != 0)
            {
                vcpu.TryCopyFrom(pdone, out done);
            }
        }

        if (!domain.IsTranslated && !PvMemory.AddressOk(ops))
        {
            return Result.Err(Errno.EFAULT);
        }

        // get_pg_owner, is_pv_domain, xsm_mmuext_op(XSM_TARGET).
        var foreigndom = (ushort)foreigndomArg;
        if (foreigndom != Xen.DOMID_SELF)
        {
            if (foreigndom == domain.Id
                || (foreigndom is not (Xen.DOMID_IO or Xen.DOMID_XEN) && domain.Hypervisor.FindDomain(foreigndom) is null))
            {
                return Result.Err(Errno.ESRCH);
            }

            return Result.Err(foreigndom is Xen.DOMID_IO or Xen.DOMID_XEN || domain.Hypervisor.FindDomain(foreigndom) is { IsTranslated: false }
                ? Errno.EPERM : Errno.EINVAL);
        }

        if (domain.IsTranslated)
        {
            return Result.Err(Errno.EINVAL);
        }

        var i = 0u;
        long rc = 0;
        var cursor = vcpu.OpenCursor();
        try
        {
            for (; i < count; i++)
            {
                if (!cursor.TryRead(ops + (i * (ulong)OpSize), out mmuext_op op))
                {
                    rc = Result.Err(Errno.EFAULT);
                    break;
                }

                rc = One(vcpu, in op);
                if (rc != 0)
                {
                    break;
                }
            }
        }
        finally
        {
            cursor.Dispose();
        }

        return MmuUpdateOp.WriteDone(vcpu, pdone, done, i, rc);
    }

    private static long One(Vcpu vcpu, in mmuext_op op)
    {
        var domain = vcpu.Domain;
        var mm = domain.PvMm;
        switch ((int)op.cmd)
        {
            case Xen.MMUEXT_PIN_L1_TABLE:
            case Xen.MMUEXT_PIN_L2_TABLE:
            case Xen.MMUEXT_PIN_L3_TABLE:
            case Xen.MMUEXT_PIN_L4_TABLE:
                return PvMemory.PinTable(domain, op.arg1.mfn, (int)op.cmd - Xen.MMUEXT_PIN_L1_TABLE + 1);

            case Xen.MMUEXT_UNPIN_TABLE:
                return PvMemory.UnpinTable(domain, op.arg1.mfn);

            case Xen.MMUEXT_NEW_BASEPTR:
                return PvMemory.SetKernelBase(vcpu, op.arg1.mfn);

            case Xen.MMUEXT_NEW_USER_BASEPTR:
                return PvMemory.SetUserBase(vcpu, op.arg1.mfn);

            case Xen.MMUEXT_TLB_FLUSH_LOCAL:
            case Xen.MMUEXT_INVLPG_LOCAL:
                vcpu.Pv.RequestTlbFlush();
                return 0;

            case Xen.MMUEXT_TLB_FLUSH_MULTI:
            case Xen.MMUEXT_INVLPG_MULTI:
                // vcpumask_to_pcpumask: a fault reading the bitmap is -EINVAL here.
                return FlushMask(vcpu, op.arg2.vcpumask) ? 0 : Result.Err(Errno.EINVAL);

            case Xen.MMUEXT_TLB_FLUSH_ALL:
            case Xen.MMUEXT_INVLPG_ALL:
                mm.FlushAllTlbs();
                return 0;

            case Xen.MMUEXT_FLUSH_CACHE:
                return Result.Err(Errno.EACCES); // cache_flush_permitted: no I/O memory or ports

            case Xen.MMUEXT_FLUSH_CACHE_GLOBAL:
                return Result.Err(Errno.EINVAL);

            case Xen.MMUEXT_SET_LDT:
                {
                    var entries = op.arg2.nr_ents;
                    var linear = entries != 0 ? op.arg1.linear_addr : 0;
                    if (entries > MaxLdtEntries || (entries != 0 && ((linear & MachineMemory.PageMask) != 0 || !PvMemory.AddressOk(linear))))
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    var (oldBase, oldEntries) = mm.Ldt(vcpu.Id);
                    if (oldBase != linear || oldEntries != entries)
                    {
                        mm.SetLdt(vcpu.Id, linear, entries);
                        vcpu.Pv.RequestTlbFlush();
                    }

                    return 0;
                }

            case Xen.MMUEXT_CLEAR_PAGE:
                return WithWritablePage(domain, op.arg1.mfn, static (memory, mfn, _) => memory.Frame(mfn).Clear(), 0);

            case Xen.MMUEXT_COPY_PAGE:
                {
                    var frames = domain.Hypervisor.Frames;
                    var src = op.arg2.src_mfn;
                    if (!frames.IsValid(src) || !frames.TryGet(src, domain.Id))
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    try
                    {
                        return WithWritablePage(domain, op.arg1.mfn, static (memory, mfn, from) => memory.Frame(from).CopyTo(memory.Frame(mfn)), src);
                    }
                    finally
                    {
                        frames.Put(src);
                    }
                }

            case Xen.MMUEXT_MARK_SUPER:
            case Xen.MMUEXT_UNMARK_SUPER:
                return Result.Err(Errno.EOPNOTSUPP);

            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>Runs <paramref name="action"/> on one of the domain's frames under a writable type (-EINVAL if it is not the domain's or is a page table).</summary>
    private static long WithWritablePage(Domain domain, ulong mfn, Action<MachineMemory, ulong, ulong> action, ulong arg)
    {
        var mm = domain.PvMm;
        lock (mm.Lock)
        {
            if (mm.GetPageAndType(mfn, PageType.Writable) is not null)
            {
                return Result.Err(Errno.EINVAL);
            }

            action(domain.Hypervisor.Frames.Memory, mfn, arg);
            mm.PutPageAndType(mfn);
            return 0;
        }
    }

    /// <summary>Reads a vCPU bitmap (64 vCPUs a word) and asks each named vCPU to flush; false on a fault.</summary>
    internal static bool FlushMask(Vcpu vcpu, ulong bitmap)
    {
        var vcpus = vcpu.Domain.Vcpus;
        for (var word = 0; word * 64 < vcpus.Length; word++)
        {
            if (!vcpu.TryCopyFrom(bitmap + ((ulong)word * 8), out ulong mask))
            {
                return false;
            }

            for (var bit = 0; bit < 64 && (word * 64) + bit < vcpus.Length; bit++)
            {
                if ((mask & (1UL << bit)) != 0)
                {
                    vcpus[(word * 64) + bit].Pv.RequestTlbFlush();
                }
            }
        }

        return true;
    }
}
