using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_memory_op(cmd, arg)</c> as Xen 4.17 answers a 64-bit PV domU (not
/// auto-translated): see xen/common/memory.c do_memory_op, xen/arch/x86/mm.c arch_memory_op and
/// xen/arch/x86/x86_64/mm.c subarch_memory_op.
/// <list type="bullet">
/// <item>The reservation sub-ops carry a continuation start extent in <c>cmd</c>'s upper bits
/// (<c>cmd &gt;&gt; MEMOP_EXTENT_SHIFT</c>) and return the number of extents done; every refusal
/// before the loop returns that start extent, not an errno.</item>
/// <item>A PV guest names pages by MFN: increase_reservation writes MFNs back,
/// populate_physmap takes GPFNs and writes MFNs back, decrease_reservation takes MFNs.</item>
/// <item>add_to_physmap, add_to_physmap_batch and remove_from_physmap are for translated guests:
/// xatp_permission_check refuses a PV target with -EACCES.</item>
/// <item>The arch sub-ops match the whole <c>cmd</c>, so start-extent bits there give -ENOSYS.</item>
/// </list>
/// Xen preempts long loops with a continuation; a managed vCPU needs none, and every loop here
/// ends at the first extent that fails, so its length is bounded by what the domain owns.
/// </summary>
internal static class MemoryOp
{
    /// <summary>xen/include/xen/hypercall.h: <c>cmd[:6]</c> is the start extent.</summary>
    public const int MEMOP_EXTENT_SHIFT = 6;

    public const ulong MEMOP_CMD_MASK = (1UL << MEMOP_EXTENT_SHIFT) - 1;

    /// <summary>Xen's extent-order limit for a domU on x86 (CONFIG_DOMU_MAX_ORDER = PAGETABLE_ORDER).</summary>
    public const uint DomUMaxOrder = 9;

    /// <summary>Xen's MAX_ORDER (CONFIG_PAGEALLOC_MAX_ORDER on x86): the populate-on-demand limit.</summary>
    public const uint MaxOrder = 20;

    /// <summary>XENMEMF_get_node's "no node" (NUMA_NO_NODE).</summary>
    private const uint NumaNoNode = 0xFF;

    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        var startExtent = cmd >> MEMOP_EXTENT_SHIFT;
        var op = (int)(cmd & MEMOP_CMD_MASK);
        switch (op)
        {
            case XenMem.XENMEM_increase_reservation:
            case XenMem.XENMEM_decrease_reservation:
            case XenMem.XENMEM_populate_physmap:
                return Reservation(vcpu, op, startExtent, arg);

            case XenMem.XENMEM_exchange:
                // memory_exchange is not implemented (see the report of this hypercall's issue).
                return startExtent != 0 ? Result.Err(Errno.EINVAL) : Result.Err(Errno.ENOSYS);

            case XenMem.XENMEM_maximum_ram_page:
                // Xen's max_page: one past the highest machine frame.
                return startExtent != 0 ? Result.Err(Errno.EINVAL) : vcpu.Domain.Hypervisor.Frames.TotalFrames;

            case XenMem.XENMEM_current_reservation:
            case XenMem.XENMEM_maximum_reservation:
            case XenMem.XENMEM_maximum_gpfn:
                return startExtent != 0 ? Result.Err(Errno.EINVAL) : DomainStat(vcpu, op, arg);

            case XenMem.XENMEM_add_to_physmap:
                return AddToPhysmap(vcpu, startExtent, arg);

            case XenMem.XENMEM_add_to_physmap_batch:
                return AddToPhysmapBatch(vcpu, startExtent, arg);

            case XenMem.XENMEM_remove_from_physmap:
                return startExtent != 0 ? Result.Err(Errno.EINVAL) : RemoveFromPhysmap(vcpu, arg);

            case XenMem.XENMEM_get_vnumainfo:
                return startExtent != 0 ? Result.Err(Errno.EINVAL) : GetVnumaInfo(vcpu, arg);
        }

        // arch_memory_op / subarch_memory_op switch on the whole cmd.
        switch (cmd)
        {
            case XenMem.XENMEM_memory_map:
                return MemoryMap(vcpu, arg);
            case XenMem.XENMEM_set_memory_map:
                return SetMemoryMap(vcpu, arg);
            case XenMem.XENMEM_machine_memory_map:
                return Result.Err(Errno.EPERM); // xsm_machine_memory_map(XSM_PRIV): privileged domains only
            case XenMem.XENMEM_machphys_mapping:
                var mapping = new xen_machphys_mapping
                {
                    v_start = ArchX86.MACH2PHYS_VIRT_START,
                    v_end = ArchX86.MACH2PHYS_VIRT_END,
                    max_mfn = ArchX86.MACH2PHYS_NR_ENTRIES - 1,
                };
                return vcpu.TryCopyTo(arg, mapping) ? Result.Ok : Result.Err(Errno.EFAULT);
            case XenMem.XENMEM_set_pod_target:
            case XenMem.XENMEM_get_pod_target:
                return PodTarget(vcpu, arg);
            default:
                // Includes XENMEM_machphys_mfn_list and _compat_mfn_list: the m2p here is not
                // kept in machine frames a guest could map, so there is no list to give.
                return Result.Err(Errno.ENOSYS);
        }
    }

    private static long LookupError(TargetDomain a) => a == TargetDomain.Missing ? Result.Err(Errno.ESRCH) : Result.Err(Errno.EPERM);

    private static long Reservation(Vcpu vcpu, int op, ulong startExtent, ulong arg)
    {
        var start = (long)startExtent;
        if (!vcpu.TryCopyFrom(arg, out xen_memory_reservation r))
        {
            return start;
        }

        // "Is size too large for us to encode a continuation?"
        if (r.nr_extents > (uint.MaxValue >> MEMOP_EXTENT_SHIFT) || startExtent >= r.nr_extents)
        {
            return start;
        }

        // A missing domain and another domain (xsm_memory_adjust_reservation) both return start_extent.
        if (TargetDomains.Classify(vcpu, r.domid) != TargetDomain.Self || !FlagsValid(vcpu, r.mem_flags))
        {
            return start;
        }

        var domain = vcpu.Domain;
        var nr = (uint)r.nr_extents;
        var i = (uint)startExtent;
        switch (op)
        {
            case XenMem.XENMEM_increase_reservation:
                if ((r.extent_start != 0 && !SubrangeOkay(vcpu, r.extent_start, i, nr)) || r.extent_order > DomUMaxOrder)
                {
                    return start;
                }

                for (; i < nr; i++)
                {
                    // Only order-0 extents: the frame allocator does not hand out contiguous runs, which
                    // is what an order > 0 extent's single MFN promises a PV guest.
                    if (r.extent_order != 0 || !domain.TryIncreaseReservation(out var mfn))
                    {
                        break;
                    }

                    // The page stays the domain's if this write faults, as in Xen. A translated
                    // guest is not told machine frames.
                    if (!domain.IsTranslated && r.extent_start != 0 && !vcpu.TryCopyTo(r.extent_start + (i * 8UL), mfn))
                    {
                        break;
                    }
                }

                return i;

            case XenMem.XENMEM_populate_physmap:
                var pod = (r.mem_flags & XenMem.XENMEMF_populate_on_demand) != 0;
                if (!SubrangeOkay(vcpu, r.extent_start, i, nr) || r.extent_order > (pod ? MaxOrder : DomUMaxOrder))
                {
                    return start;
                }

                for (; i < nr; i++)
                {
                    var slot = r.extent_start + (i * 8UL);
                    if (!vcpu.TryCopyFrom(slot, out ulong gpfn))
                    {
                        break;
                    }

                    // Populate-on-demand on oneself is refused; order > 0 needs contiguous frames (as above).
                    if (pod || r.extent_order != 0 || !domain.TryPopulate(gpfn, out var mfn))
                    {
                        break;
                    }

                    if (!domain.IsTranslated && !vcpu.TryCopyTo(slot, mfn))
                    {
                        break;
                    }
                }

                return i;

            default: // XENMEM_decrease_reservation
                if (!SubrangeOkay(vcpu, r.extent_start, i, nr) || r.extent_order > DomUMaxOrder)
                {
                    return start;
                }

                for (; i < nr; i++)
                {
                    if (!vcpu.TryCopyFrom(r.extent_start + (i * 8UL), out ulong gmfn))
                    {
                        return i;
                    }

                    for (var j = 0UL; j < 1UL << (int)r.extent_order; j++)
                    {
                        // A translated guest names pages by GFN, a classic PV guest by MFN.
                        if ((domain.IsTranslated ? domain.RemoveGfn(gmfn + j) : domain.RemovePage(gmfn + j)) is not null)
                        {
                            return i;
                        }
                    }
                }

                return i;
        }
    }

    /// <summary>construct_memop_from_reservation's checks of mem_flags for an unprivileged caller.</summary>
    private static bool FlagsValid(Vcpu vcpu, uint memFlags)
    {
        var addressBits = XenMem.XENMEMF_get_address_bits(memFlags);
        var maxPage = (ulong)vcpu.Domain.Hypervisor.Frames.TotalFrames;
        if (addressBits != 0 && addressBits < OrderFromPages(maxPage) + MachineMemory.PageShift && addressBits <= MachineMemory.PageShift)
        {
            return false;
        }

        // XENMEMF_vnode with no vNUMA topology is ignored; otherwise a domU may name a node but not insist on it.
        if ((memFlags & XenMem.XENMEMF_vnode) != 0)
        {
            return true;
        }

        return XenMem.XENMEMF_get_node(memFlags) == NumaNoNode || (memFlags & XenMem.XENMEMF_exact_node_request) == 0;
    }

    /// <summary>Xen's get_order_from_pages.</summary>
    private static uint OrderFromPages(ulong pages)
    {
        var order = 0u;
        for (pages--; pages != 0; pages >>= 1)
        {
            order++;
        }

        return order;
    }

    /// <summary>
    /// guest_handle_subrange_okay(handle, first, last = nr - 1): the array elements first..last lie in
    /// the guest's address space without wrapping. A managed guest's addresses are guest-physical,
    /// so the bound is the highest guest frame; a paged classic PV vCPU's are virtual, and Xen's
    /// array_access_ok asks __addr_ok of the first element (a kernel's handles live above Xen's range).
    /// </summary>
    private static bool SubrangeOkay(Vcpu vcpu, ulong handle, uint first, uint nr)
    {
        const ulong limit = (PhysMap.MaxGfn + 1) << MachineMemory.PageShift;
        var begin = handle + (first * 8UL);
        var end = handle + (nr * 8UL);
        if (vcpu.Pv.IsPaged)
        {
            return begin >= handle && end >= begin && Memory.Pv.PvMemory.AddressOk(begin);
        }

        return begin >= handle && end >= begin && end <= limit;
    }

    private static long DomainStat(Vcpu vcpu, int op, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_memory_domain md))
        {
            return Result.Err(Errno.EFAULT);
        }

        var access = TargetDomains.Classify(vcpu, md.domid);
        if (access != TargetDomain.Self)
        {
            return LookupError(access);
        }

        var domain = vcpu.Domain;
        switch (op)
        {
            case XenMem.XENMEM_current_reservation:
                return domain.TotalPages;
            case XenMem.XENMEM_maximum_reservation:
                return domain.MaxPages;
            default:
                // domain_get_maximum_gpfn for PV: the guest states nr_pfns in shared_info.arch.max_pfn.
                var maxPfn = domain.SharedInfo is { } page ? Volatile.Read(ref page.At<shared_info>(0).arch.max_pfn) : 0;
                return (long)((maxPfn == 0 ? 1 : maxPfn) - 1);
        }
    }

    private static long AddToPhysmap(Vcpu vcpu, ulong startExtent, ulong arg)
    {
        if (startExtent != (ushort)startExtent)
        {
            return Result.Err(Errno.EDOM);
        }

        if (!vcpu.TryCopyFrom(arg, out xen_add_to_physmap xatp))
        {
            return Result.Err(Errno.EFAULT);
        }

        // Foreign mapping is only possible through add_to_physmap_batch.
        if (xatp.space == XenMem.XENMAPSPACE_gmfn_foreign)
        {
            return Result.Err(Errno.ENOSYS);
        }

        var permission = PhysmapPermission(vcpu, xatp.domid);
        if (permission != Result.Ok)
        {
            return permission;
        }

        var domain = vcpu.Domain;
        if (xatp.space != XenMem.XENMAPSPACE_gmfn_range)
        {
            return domain.AddToPhysmap(xatp.space, xatp.idx, xatp.gpfn) is { } e ? Result.Err(e) : Result.Ok;
        }

        // gmfn_range: size pages from idx to gpfn, resumable from start_extent as Xen's continuation is.
        for (var done = (ulong)startExtent; done < xatp.size; done++)
        {
            if (domain.AddToPhysmap(XenMem.XENMAPSPACE_gmfn, xatp.idx + done, xatp.gpfn + done) is { } e)
            {
                return Result.Err(e);
            }
        }

        return Result.Ok;
    }

    private static long AddToPhysmapBatch(Vcpu vcpu, ulong startExtent, ulong arg)
    {
        if (startExtent != (ushort)startExtent)
        {
            return Result.Err(Errno.EDOM);
        }

        if (!vcpu.TryCopyFrom(arg, out xen_add_to_physmap_batch xatpb))
        {
            return Result.Err(Errno.EFAULT);
        }

        if (xatpb.space == XenMem.XENMAPSPACE_gmfn_range)
        {
            return Result.Err(Errno.EOPNOTSUPP);
        }

        var permission = PhysmapPermission(vcpu, xatpb.domid);
        if (permission != Result.Ok)
        {
            return permission;
        }

        // Each entry's outcome goes to errs[i]; a fault on the arrays ends the batch with -EFAULT.
        var domain = vcpu.Domain;
        for (var i = startExtent; i < xatpb.size; i++)
        {
            if (!vcpu.TryCopyFrom(xatpb.idxs + (i * 8), out ulong idx) || !vcpu.TryCopyFrom(xatpb.gpfns + (i * 8), out ulong gpfn))
            {
                return Result.Err(Errno.EFAULT);
            }

            // A foreign mapping needs privilege over the other domain (xsm_map_gmfn_foreign).
            var rc = xatpb.space == XenMem.XENMAPSPACE_gmfn_foreign ? -(int)Errno.EPERM
                : domain.AddToPhysmap(xatpb.space, idx, gpfn) is { } e ? -(int)e : 0;
            if (!vcpu.TryCopyTo(xatpb.errs + (i * 4), rc))
            {
                return Result.Err(Errno.EFAULT);
            }
        }

        return Result.Ok;
    }

    private static long RemoveFromPhysmap(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_remove_from_physmap xrfp))
        {
            return Result.Err(Errno.EFAULT);
        }

        var permission = PhysmapPermission(vcpu, xrfp.domid);
        return permission != Result.Ok ? permission
            : vcpu.Domain.UnmapGfn(xrfp.gpfn) is { } e ? Result.Err(e) : Result.Ok;
    }

    /// <summary>
    /// The target lookup, then xatp_permission_check (and remove_from_physmap's equivalent): a
    /// missing domain is -ESRCH; a classic PV target (not paging_mode_translate) is -EACCES; another
    /// domain needs privilege (-EPERM); a translated caller acting on itself may go on (0).
    /// </summary>
    private static long PhysmapPermission(Vcpu vcpu, ushort domid) => TargetDomains.Classify(vcpu, domid) switch
    {
        TargetDomain.Missing => Result.Err(Errno.ESRCH),
        TargetDomain.Self when vcpu.Domain.IsTranslated => Result.Ok,
        TargetDomain.Self => Result.Err(Errno.EACCES),
        _ => vcpu.Domain.Hypervisor.FindDomain(domid) is { IsTranslated: true } ? Result.Err(Errno.EPERM) : Result.Err(Errno.EACCES),
    };

    private static long GetVnumaInfo(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_vnuma_topology_info topology))
        {
            return Result.Err(Errno.EFAULT);
        }

        if (topology.pad != 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        var access = TargetDomains.Classify(vcpu, topology.domid);
        if (access != TargetDomain.Self)
        {
            return LookupError(access);
        }

        return Result.Err(Errno.EOPNOTSUPP); // no vNUMA topology is ever set
    }

    private static long PodTarget(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_pod_target target))
        {
            return Result.Err(Errno.EFAULT);
        }

        // Xen looks the domain up, then refuses any domain that is not HVM before checking privilege.
        return TargetDomains.Classify(vcpu, target.domid) == TargetDomain.Missing ? Result.Err(Errno.ESRCH) : Result.Err(Errno.EINVAL);
    }

    /// <summary>XENMEM_memory_map: the caller's own map, truncated to the buffer; -ENOSYS when none was set.</summary>
    private static long MemoryMap(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_memory_map map))
        {
            return Result.Err(Errno.EFAULT);
        }

        var entries = vcpu.Domain.MemoryMap;
        if (entries is null || entries.Length == 0)
        {
            return Result.Err(Errno.ENOSYS);
        }

        map.nr_entries = Math.Min(map.nr_entries, (uint)entries.Length);
        var bytes = MemoryMarshal.AsBytes(entries.AsSpan(0, (int)map.nr_entries));
        return vcpu.TryCopyTo(map.buffer, bytes) && vcpu.TryCopyTo(arg, map) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    /// <summary>XENMEM_set_memory_map: the dummy XSM lets a domain set its own map; entries are not checked, as in Xen.</summary>
    private static long SetMemoryMap(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_foreign_memory_map fmap))
        {
            return Result.Err(Errno.EFAULT);
        }

        if (fmap.map.nr_entries > E820Entry.E820MAX)
        {
            return Result.Err(Errno.EINVAL);
        }

        var access = TargetDomains.Classify(vcpu, fmap.domid);
        if (access != TargetDomain.Self)
        {
            return LookupError(access);
        }

        var entries = new E820Entry[fmap.map.nr_entries];
        if (!vcpu.TryCopyFrom(fmap.map.buffer, MemoryMarshal.AsBytes(entries.AsSpan())))
        {
            return Result.Err(Errno.EFAULT);
        }

        vcpu.Domain.MemoryMap = entries;
        return Result.Ok;
    }
}
