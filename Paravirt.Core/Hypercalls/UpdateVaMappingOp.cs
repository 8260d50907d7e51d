using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_update_va_mapping(va, val, flags)</c> and its <c>_otherdomain</c> form, as
/// Xen 4.17's __do_update_va_mapping (xen/arch/x86/mm.c): finds the L1 entry that maps
/// <c>va</c> through the vCPU's current tables (map_guest_l1e: present L4–L2 entries, no
/// superpage), replaces it with mod_l1_entry, then flushes as <c>flags</c> ask
/// (UVMF_TLB_FLUSH / UVMF_INVLPG with UVMF_LOCAL, UVMF_ALL, or a pointer to a vCPU bitmap; each
/// becomes a flush request, an INVLPG a full flush). -EINVAL when no validated L1 maps the
/// address; a fault reading the bitmap is -EFAULT after the entry changed, as in Xen.
/// Translated domains have neither hypercall (-ENOSYS).
/// </summary>
internal static unsafe class UpdateVaMappingOp
{
    public static long Handle(Vcpu vcpu, ulong va, ulong val, ulong flags, ulong a4, ulong a5) =>
        vcpu.Domain.IsTranslated ? Result.Err(Errno.ENOSYS) : Update(vcpu, va, val, flags);

    /// <summary>update_va_mapping_otherdomain: only DOMID_SELF is supported (another domain's pages: -EPERM by XSM).</summary>
    public static long HandleOtherDomain(Vcpu vcpu, ulong va, ulong val, ulong flags, ulong domidArg, ulong a5)
    {
        var domain = vcpu.Domain;
        if (domain.IsTranslated)
        {
            return Result.Err(Errno.ENOSYS);
        }

        var domid = (ushort)domidArg;
        if (domid == Xen.DOMID_SELF)
        {
            return Update(vcpu, va, val, flags);
        }

        if (domid == domain.Id || (domid is not (Xen.DOMID_IO or Xen.DOMID_XEN) && domain.Hypervisor.FindDomain(domid) is null))
        {
            return Result.Err(Errno.ESRCH);
        }

        return Result.Err(Errno.EPERM);
    }

    private static long Update(Vcpu vcpu, ulong va, ulong val, ulong flags)
    {
        var domain = vcpu.Domain;
        var mm = domain.PvMm;
        var frames = domain.Hypervisor.Frames;
        long rc;
        lock (mm.Lock)
        {
            if (!TryFindL1(vcpu, va, out var l1))
            {
                return Result.Err(Errno.EINVAL);
            }

            // get_page_from_mfn + page_lock + the L1 type check.
            if (!frames.TryGet(l1, domain.Id))
            {
                return Result.Err(Errno.EINVAL);
            }

            var types = frames.Types;
            rc = types.TypeOf(l1) == PageType.L1 && types.IsValidated(l1) && types.CountOf(l1) != 0
                ? PvMemory.Result(mm.ModifyEntry(l1, (int)((va >> 12) & 511), 1, val, preserveAd: false))
                : Result.Err(Errno.EINVAL);
            frames.Put(l1);
        }

        if (rc != 0)
        {
            return rc;
        }

        var target = flags & ~Xen.UVMF_FLUSHTYPE_MASK;
        if ((flags & Xen.UVMF_FLUSHTYPE_MASK) is Xen.UVMF_TLB_FLUSH or Xen.UVMF_INVLPG)
        {
            switch (target)
            {
                case Xen.UVMF_LOCAL:
                    vcpu.Pv.RequestTlbFlush();
                    break;
                case Xen.UVMF_ALL:
                    mm.FlushAllTlbs();
                    break;
                default:
                    return MmuExtOp.FlushMask(vcpu, target) ? 0 : Result.Err(Errno.EFAULT);
            }
        }

        return 0;
    }

    /// <summary>map_guest_l1e: the L1 frame mapping <paramref name="va"/> in the vCPU's current tables.</summary>
    private static bool TryFindL1(Vcpu vcpu, ulong va, out ulong l1)
    {
        l1 = 0;
        var table = vcpu.Pv.CurrentBaseMfn;
        if (table == 0 || !PvMemory.AddressOk(va))
        {
            return false;
        }

        var frames = vcpu.Domain.Hypervisor.Frames;
        for (var level = 4; level >= 2; level--)
        {
            if (!frames.IsValid(table) || frames.OwnerOf(table) != vcpu.Domain.Id)
            {
                return false;
            }

            var index = (int)((va >> (12 + (9 * (level - 1)))) & 511);
            // SAFETY: table < Frames (checked above) and index < 512.
            var entry = Volatile.Read(ref ((ulong*)frames.Memory.FramePointer(table))[index]);
            if ((entry & PvDomainMemory.P) == 0 || (level == 2 && (entry & PvDomainMemory.PSE) != 0))
            {
                return false;
            }

            table = (entry & PvDomainMemory.AddressMask) >> MachineMemory.PageShift;
        }

        l1 = table;
        return frames.IsValid(l1);
    }
}
