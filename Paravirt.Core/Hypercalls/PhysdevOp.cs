using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>HYPERVISOR_physdev_op(cmd, arg)</c> as Xen 4.17 answers an unprivileged domain with no
/// passed-through device (x86 <c>do_physdev_op</c> and <c>pci_physdev_op</c> under the dummy XSM
/// policy). Every argument is copied in before it is checked, so a bad handle is -EFAULT first.
/// <list type="bullet">
/// <item>set_iopl: the vCPU's virtual IOPL (-EINVAL above 3); set_iobitmap: recorded (the bitmap
/// grants nothing: no ports are permitted to a domU).</item>
/// <item>pirq_eoi_gmfn_v1/v2: the frame is kept, with its writable type, until the domain dies.</item>
/// <item>eoi, irq_status_query, get_free_pirq, IRQ_UNMASK_NOTIFY: over the domain's PIRQs
/// (<see cref="DomainPirqs"/>), none of which is bound to a host interrupt.</item>
/// <item>Everything that programs host hardware (IO-APIC, MSI, PCI devices, GSIs, MMCFG, pirq
/// mapping of a domain): -EPERM, or -ESRCH for a domain that does not exist, -ENODEV for MSI
/// state of a device that is not there.</item>
/// </list>
/// Unknown commands are -ENOSYS.
/// </summary>
internal static class PhysdevOp
{
    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        var domain = vcpu.Domain;
        switch ((int)cmd)
        {
            case Physdev.PHYSDEVOP_eoi:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_eoi eoi))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // An allocated PIRQ that is bound to nothing has no interrupt to end.
                    return domain.Pirqs.IsAllocated(eoi.irq) ? Result.Ok : Result.Err(Errno.EINVAL);
                }

            case Physdev.PHYSDEVOP_pirq_eoi_gmfn_v1:
            case Physdev.PHYSDEVOP_pirq_eoi_gmfn_v2:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_pirq_eoi_gmfn info))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // v1 would also make PHYSDEVOP_eoi unmask the event channel: no PIRQ is ever bound, so nothing differs.
                    return domain.PvMm.RegisterPirqEoiFrame(info.gmfn);
                }

            case Physdev.PHYSDEVOP_IRQ_UNMASK_NOTIFY:
                return Result.Ok; // pirq_guest_unmask: no bound PIRQ is masked

            case Physdev.PHYSDEVOP_irq_status_query:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_irq_status_query query))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    if ((int)query.irq < 0 || query.irq >= DomainPirqs.Count)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    // A PV guest is always told to EOI (it has no pirq_eoi_map bit to look at instead); never shared.
                    query.flags = Physdev.XENIRQSTAT_needs_eoi;
                    return vcpu.TryCopyTo(arg, in query) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case Physdev.PHYSDEVOP_map_pirq:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_map_pirq map))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    if (map.type == Physdev.MAP_PIRQ_TYPE_MULTI_MSI && map.table_base != 0)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    // physdev_map_pirq: the target domain, then XSM_DM_PRIV (a domU is nobody's device model).
                    if (map.type == Physdev.MAP_PIRQ_TYPE_MSI_SEG)
                    {
                        map.type = Physdev.MAP_PIRQ_TYPE_MSI;
                    }

                    var rc = TargetDomains.Classify(vcpu, map.domid) == TargetDomain.Missing ? Result.Err(Errno.ESRCH) : Result.Err(Errno.EPERM);
                    return vcpu.TryCopyTo(arg, in map) ? rc : Result.Err(Errno.EFAULT);
                }

            case Physdev.PHYSDEVOP_unmap_pirq:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_unmap_pirq unmap))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return TargetDomains.Classify(vcpu, unmap.domid) == TargetDomain.Missing ? Result.Err(Errno.ESRCH) : Result.Err(Errno.EPERM);
                }

            case Physdev.PHYSDEVOP_apic_read:
            case Physdev.PHYSDEVOP_apic_write:
                return CopyThenRefuse<physdev_apic>(vcpu, arg, Errno.EPERM);
            case Physdev.PHYSDEVOP_alloc_irq_vector:
                return CopyThenRefuse<physdev_irq>(vcpu, arg, Errno.EPERM);

            case Physdev.PHYSDEVOP_set_iopl:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_set_iopl set))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    if (set.iopl > 3)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    if (vcpu.Pv.Engine is { } cpu)
                    {
                        cpu.Iopl = (ulong)set.iopl << 12;
                    }

                    return Result.Ok;
                }

            case Physdev.PHYSDEVOP_set_iobitmap:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_set_iobitmap set))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // guest_handle_okay(bitmap, IOBMP_BYTES): the 8 KiB must lie in guest space.
                    const ulong IobmpBytes = 8192;
                    if (!HandleOkay(vcpu, set.bitmap, IobmpBytes) || set.nr_ports > 65536)
                    {
                        return Result.Err(Errno.EINVAL);
                    }

                    vcpu.Pv.IoBitmap = (set.bitmap, set.nr_ports);
                    return Result.Ok;
                }

            case Physdev.PHYSDEVOP_manage_pci_add:
            case Physdev.PHYSDEVOP_manage_pci_remove:
                return CopyThenRefuse<physdev_manage_pci>(vcpu, arg, Errno.EPERM); // pci_add/remove_device: XSM_PRIV

            case Physdev.PHYSDEVOP_manage_pci_add_ext:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_manage_pci_ext ext))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return ext.is_extfn > 1 || ext.is_virtfn > 1 ? Result.Err(Errno.EINVAL) : Result.Err(Errno.EPERM);
                }

            case Physdev.PHYSDEVOP_prepare_msix:
            case Physdev.PHYSDEVOP_release_msix:
                return CopyThenRefuse<physdev_pci_device>(vcpu, arg, Errno.EPERM);
            case Physdev.PHYSDEVOP_pci_mmcfg_reserved:
                return Result.Err(Errno.EPERM); // XSM_PRIV is checked before the argument is read
            case Physdev.PHYSDEVOP_restore_msi:
                return CopyThenRefuse<physdev_restore_msi>(vcpu, arg, Errno.ENODEV); // no such device here
            case Physdev.PHYSDEVOP_restore_msi_ext:
                return CopyThenRefuse<physdev_pci_device>(vcpu, arg, Errno.ENODEV);

            case Physdev.PHYSDEVOP_setup_gsi:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_setup_gsi gsi))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return gsi.gsi < 0 || gsi.gsi >= DomainPirqs.NrIrqsGsi ? Result.Err(Errno.EINVAL) : Result.Err(Errno.EPERM);
                }

            case Physdev.PHYSDEVOP_get_free_pirq:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_get_free_pirq free))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    var pirq = domain.Pirqs.AllocateFree(free.type);
                    if (pirq < 0)
                    {
                        return pirq;
                    }

                    free.pirq = (uint)pirq;
                    return vcpu.TryCopyTo(arg, in free) ? Result.Ok : Result.Err(Errno.EFAULT);
                }

            case Physdev.PHYSDEVOP_dbgp_op:
                return Result.Err(Errno.EPERM); // hardware domain only, refused before the copy

            case Physdev.PHYSDEVOP_pci_device_add:
                {
                    if (!vcpu.TryCopyFrom(arg, out physdev_pci_device_add add))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    // With XEN_PCI_DEV_PXM the proximity domain follows in optarr[0] and is read too.
                    var optarr = (ulong)Marshal.SizeOf<physdev_pci_device_add>();
                    if ((add.flags & Physdev.XEN_PCI_DEV_PXM) != 0 && !vcpu.TryCopyFrom(arg + optarr, out uint _))
                    {
                        return Result.Err(Errno.EFAULT);
                    }

                    return Result.Err(Errno.EPERM);
                }

            case Physdev.PHYSDEVOP_pci_device_remove:
                return CopyThenRefuse<physdev_pci_device>(vcpu, arg, Errno.EPERM);
            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>copy_from_guest, then the refusal every further check ends in for a domU.</summary>
    private static long CopyThenRefuse<T>(Vcpu vcpu, ulong arg, Errno refusal)
        where T : unmanaged => vcpu.TryCopyFrom(arg, out T _) ? Result.Err(refusal) : Result.Err(Errno.EFAULT);

    /// <summary>guest_handle_okay: for a 64-bit PV guest the range lies below Xen's hole or above it (access_ok).</summary>
    private static bool HandleOkay(Vcpu vcpu, ulong address, ulong bytes)
    {
        if (!vcpu.Pv.IsPaged)
        {
            return true; // a translated guest's handles are checked when they are used
        }

        var end = address + bytes;
        return end >= address && (end <= 1UL << 47 || address >= ArchX86.HYPERVISOR_VIRT_END);
    }
}
