/* xen/physdev.h */
#include "probe.h"

#include <xen/xen.h>
#include <xen/physdev.h>

void probe_physdev(void)
{
    probe_header("physdev.h");

    /* PHYSDEVOP_* commands, in number order. */
    CONST(PHYSDEVOP_IRQ_UNMASK_NOTIFY);
    CONST(PHYSDEVOP_irq_status_query);
    CONST(PHYSDEVOP_set_iopl);
    CONST(PHYSDEVOP_set_iobitmap);
    CONST(PHYSDEVOP_apic_read);
    CONST(PHYSDEVOP_apic_write);
    CONST(PHYSDEVOP_alloc_irq_vector);
    CONST(PHYSDEVOP_free_irq_vector);
    CONST(PHYSDEVOP_eoi);
    CONST(PHYSDEVOP_map_pirq);
    CONST(PHYSDEVOP_unmap_pirq);
    CONST(PHYSDEVOP_manage_pci_add);
    CONST(PHYSDEVOP_manage_pci_remove);
    CONST(PHYSDEVOP_pirq_eoi_gmfn_v1);
    CONST(PHYSDEVOP_restore_msi);
    CONST(PHYSDEVOP_manage_pci_add_ext);
    CONST(PHYSDEVOP_setup_gsi);
    CONST(PHYSDEVOP_get_free_pirq);
    CONST(PHYSDEVOP_pci_mmcfg_reserved);
    CONST(PHYSDEVOP_pci_device_add);
    CONST(PHYSDEVOP_pci_device_remove);
    CONST(PHYSDEVOP_restore_msi_ext);
    CONST(PHYSDEVOP_pirq_eoi_gmfn_v2);
    CONST(PHYSDEVOP_dbgp_op);
    CONST(PHYSDEVOP_prepare_msix);
    CONST(PHYSDEVOP_release_msix);
    CONST(PHYSDEVOP_pirq_eoi_gmfn);

    /* physdev_irq_status_query.flags */
    CONST(_XENIRQSTAT_needs_eoi);
    CONST(XENIRQSTAT_needs_eoi);
    CONST(_XENIRQSTAT_shared);
    CONST(XENIRQSTAT_shared);

    /* physdev_map_pirq.type */
    CONST(MAP_PIRQ_TYPE_MSI);
    CONST(MAP_PIRQ_TYPE_GSI);
    CONST(MAP_PIRQ_TYPE_UNKNOWN);
    CONST(MAP_PIRQ_TYPE_MSI_SEG);
    CONST(MAP_PIRQ_TYPE_MULTI_MSI);

    /* physdev_pci_mmcfg_reserved.flags, physdev_pci_device_add.flags */
    CONST(XEN_PCI_MMCFG_RESERVED);
    CONST(XEN_PCI_DEV_EXTFN);
    CONST(XEN_PCI_DEV_VIRTFN);
    CONST(XEN_PCI_DEV_PXM);

    /* physdev_dbgp_op.op and .bus */
    CONST(PHYSDEVOP_DBGP_RESET_PREPARE);
    CONST(PHYSDEVOP_DBGP_RESET_DONE);
    CONST(PHYSDEVOP_DBGP_BUS_UNKNOWN);
    CONST(PHYSDEVOP_DBGP_BUS_PCI);

    STRUCT(physdev_eoi) FIELD(irq) END();
    STRUCT(physdev_pirq_eoi_gmfn) FIELD(gmfn) END();
    STRUCT(physdev_irq_status_query) FIELD(irq) FIELD(flags) END();
    STRUCT(physdev_set_iopl) FIELD(iopl) END();
    STRUCT(physdev_set_iobitmap) FIELD(bitmap) FIELD(nr_ports) END();
    STRUCT(physdev_apic) FIELD(apic_physbase) FIELD(reg) FIELD(value) END();
    STRUCT(physdev_irq) FIELD(irq) FIELD(vector) END();
    STRUCT(physdev_map_pirq)
        FIELD(domid) FIELD(type) FIELD(index) FIELD(pirq) FIELD(bus) FIELD(devfn) FIELD(entry_nr)
        FIELD(table_base)
    END();
    STRUCT(physdev_unmap_pirq) FIELD(domid) FIELD(pirq) END();
    STRUCT(physdev_manage_pci) FIELD(bus) FIELD(devfn) END();
    STRUCT(physdev_restore_msi) FIELD(bus) FIELD(devfn) END();
    STRUCT(physdev_manage_pci_ext)
        FIELD(bus) FIELD(devfn) FIELD(is_extfn) FIELD(is_virtfn) FIELD(physfn)
        FIELD(physfn.bus) FIELD(physfn.devfn)
    END();
    STRUCT(physdev_op)
        FIELD(cmd) FIELD(u)
        FIELD(u.irq_status_query) FIELD(u.set_iopl) FIELD(u.set_iobitmap) FIELD(u.apic_op)
        FIELD(u.irq_op)
    END();
    STRUCT(physdev_setup_gsi) FIELD(gsi) FIELD(triggering) FIELD(polarity) END();
    STRUCT(physdev_get_free_pirq) FIELD(type) FIELD(pirq) END();
    STRUCT(physdev_pci_mmcfg_reserved)
        FIELD(address) FIELD(segment) FIELD(start_bus) FIELD(end_bus) FIELD(flags)
    END();
    /*
     * optarr is a flexible array member (XEN_FLEX_ARRAY_DIM is empty in C99 and later): it has
     * no sizeof, so it cannot be listed. It starts at sizeof(struct physdev_pci_device_add);
     * the tiling check still proves the fixed part complete.
     */
    STRUCT(physdev_pci_device_add)
        FIELD(seg) FIELD(bus) FIELD(devfn) FIELD(flags) FIELD(physfn)
        FIELD(physfn.bus) FIELD(physfn.devfn)
    END();
    STRUCT(physdev_pci_device) FIELD(seg) FIELD(bus) FIELD(devfn) END();
    STRUCT(physdev_dbgp_op) FIELD(op) FIELD(bus) FIELD(u) FIELD(u.pci) END();
}
