using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_mmu_update(reqs, count, pdone, foreigndom)</c> as Xen 4.17's do_mmu_update
/// answers a 64-bit PV domU (xen/arch/x86/mm.c). Each <c>mmu_update</c> is copied out once; the
/// command is <c>ptr &amp; 7</c>. A normal update of a validated page table goes through
/// mod_lN_entry (the new entry's references taken before the old entry's are dropped); a frame that
/// is not a validated table is written as a plain word, as Xen does under a transient writable
/// type; MMU_MACHPHYS_UPDATE sets the M2P entry of one of the domain's frames. The batch stops at
/// the first failure, whose errno is returned; <c>*pdone</c> gets the number of requests done.
/// Only the caller's own tables and pages (<c>DOMID_SELF</c>) are supported: naming another
/// existing domain answers -EPERM (the dummy XSM policy for a domU), a missing one or the caller's
/// own id -ESRCH. A translated domain has no mmu_update (-ENOSYS, as HVM's table).
/// </summary>
internal static class MmuUpdateOp
{
    /// <summary>MMU_UPDATE_PREEMPTED (xen/include/xen/hypercall.h): the continuation flag in count.</summary>
    public const uint MMU_UPDATE_PREEMPTED = 0x8000_0000;

    private const int RequestSize = 16;

    public static long Handle(Vcpu vcpu, ulong reqs, ulong countArg, ulong pdone, ulong foreigndomArg, ulong a5)
    {
        var domain = vcpu.Domain;
        if (domain.IsTranslated)
        {
            return Result.Err(Errno.ENOSYS);
        }

        var count = (uint)countArg;
        var foreigndom = (uint)foreigndomArg;
        var done = 0u;
        if ((count & MMU_UPDATE_PREEMPTED) != 0)
        {
            count &= ~MMU_UPDATE_PREEMPTED;
            if (pdone != 0)
            {
                vcpu.TryCopyFrom(pdone, out done);
            }
        }

        if (!PvMemory.AddressOk(reqs))
        {
            return Result.Err(Errno.EFAULT);
        }

        // foreigndom[31:16] - 1 names the page tables' owner, [15:0] the pages' owner.
        var foreign = ForeignCheck(vcpu, foreigndom);
        if (foreign < 0 && foreign != Result.Err(Errno.EPERM))
        {
            return WriteDone(vcpu, pdone, done, 0, foreign);
        }

        var mm = domain.PvMm;
        var i = 0u;
        long rc = 0;
        var cursor = vcpu.OpenCursor();
        try
        {
            for (; i < count; i++)
            {
                if (!cursor.TryRead(reqs + (i * (ulong)RequestSize), out mmu_update req))
                {
                    rc = Result.Err(Errno.EFAULT);
                    break;
                }

                var cmd = (int)(req.ptr & 7);
                switch (cmd)
                {
                    case Xen.MMU_NORMAL_PT_UPDATE:
                    case Xen.MMU_PT_UPDATE_PRESERVE_AD:
                    case Xen.MMU_PT_UPDATE_NO_TRANSLATE:
                        // xsm_mmu_update(XSM_TARGET) refuses another domain's pages or tables.
                        rc = foreign < 0 ? foreign : NormalUpdate(mm, domain, req.ptr - (ulong)cmd, req.val, cmd == Xen.MMU_PT_UPDATE_PRESERVE_AD);
                        break;
                    case Xen.MMU_MACHPHYS_UPDATE:
                        rc = foreign < 0 ? foreign : MachPhysUpdate(domain, req.ptr >> MachineMemory.PageShift, req.val);
                        break;
                    default:
                        rc = Result.Err(Errno.ENOSYS);
                        break;
                }

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

        return WriteDone(vcpu, pdone, done, i, rc);
    }

    /// <summary>Adds the requests done to <c>*pdone</c> (when given) and returns <paramref name="rc"/>, as Xen's exit path does.</summary>
    internal static long WriteDone(Vcpu vcpu, ulong pdone, uint done, uint i, long rc)
    {
        if (pdone != 0)
        {
            vcpu.TryCopyTo(pdone, done + i);
        }

        return rc;
    }

    /// <summary>
    /// The foreign-domain argument: 0 when both owners are the caller (DOMID_SELF), -EPERM when they
    /// name another existing domain (refused per request by XSM), -ESRCH when a domain is missing
    /// or the caller names itself as foreign (get_pg_owner).
    /// </summary>
    private static long ForeignCheck(Vcpu vcpu, uint foreigndom)
    {
        var self = vcpu.Domain;
        var ptDom = foreigndom >> 16;
        var other = false;
        if (ptDom != 0)
        {
            var id = ptDom - 1;
            if (id != self.Id)
            {
                if (id > ushort.MaxValue || self.Hypervisor.FindDomain((ushort)id) is null)
                {
                    return Result.Err(Errno.ESRCH);
                }

                other = true;
            }
        }

        var pgDom = (ushort)foreigndom;
        if (pgDom != Xen.DOMID_SELF)
        {
            if (pgDom == self.Id)
            {
                return Result.Err(Errno.ESRCH); // "Cannot specify itself as foreign domain"
            }

            if (pgDom is not (Xen.DOMID_IO or Xen.DOMID_XEN) && self.Hypervisor.FindDomain(pgDom) is null)
            {
                return Result.Err(Errno.ESRCH);
            }

            other = true;
        }

        return other ? Result.Err(Errno.EPERM) : 0;
    }

    private static long NormalUpdate(PvDomainMemory mm, Domain domain, ulong ptr, ulong val, bool preserveAd)
    {
        var frames = domain.Hypervisor.Frames;
        var mfn = ptr >> MachineMemory.PageShift;
        var index = (int)((ptr & MachineMemory.PageMask) >> 3);

        // get_page_from_gfn on a PV domain: the frame must be the caller's.
        if (!frames.IsValid(mfn) || !frames.TryGet(mfn, domain.Id))
        {
            return Result.Err(Errno.EINVAL);
        }

        try
        {
            lock (mm.Lock)
            {
                var types = frames.Types;
                var type = types.TypeOf(mfn);
                if (types.CountOf(mfn) != 0 && types.IsValidated(mfn))
                {
                    // page_lock succeeded: the frame's current type decides.
                    switch (type)
                    {
                        case PageType.L1:
                        case PageType.L2:
                        case PageType.L3:
                        case PageType.L4:
                            var rc = mm.ModifyEntry(mfn, index, (int)type, val, preserveAd);
                            if (rc is null && type != PageType.L1)
                            {
                                mm.FlushAllTlbs(); // flush_linear_pt
                            }

                            return PvMemory.Result(rc);
                        case PageType.Writable:
                            mm.WriteWord(mfn, index, val);
                            return 0;
                        default:
                            return Result.Err(Errno.EINVAL); // a descriptor page
                    }
                }

                // No type reference: write under a transient writable type, which a page table in
                // the middle of (de)validation refuses.
                if (mm.GetType(mfn, PageType.Writable) is not null)
                {
                    return Result.Err(Errno.EINVAL);
                }

                mm.WriteWord(mfn, index, val);
                mm.PutType(mfn);
                return 0;
            }
        }
        finally
        {
            frames.Put(mfn);
        }
    }

    /// <summary>MMU_MACHPHYS_UPDATE: the M2P entry of one of the caller's frames (-EINVAL otherwise).</summary>
    private static long MachPhysUpdate(Domain domain, ulong mfn, ulong gpfn)
    {
        var frames = domain.Hypervisor.Frames;
        if (!frames.IsValid(mfn) || !frames.TryGet(mfn, domain.Id))
        {
            return Result.Err(Errno.EINVAL);
        }

        frames.SetMachineToPhys(mfn, gpfn);
        frames.Put(mfn);
        return 0;
    }
}
