using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/physdev.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/physdev.h</c>: <c>PHYSDEVOP_*</c> commands and their flags.</summary>
public static class Physdev
{
    // HYPERVISOR_physdev_op(cmd, args), in number order.
    /// <summary>Obsolete since interface 0x00030202 and unsupported by current Xen.</summary>
    public const int PHYSDEVOP_IRQ_UNMASK_NOTIFY = 4;
    /// <summary>arg: <see cref="physdev_irq_status_query"/>.</summary>
    public const int PHYSDEVOP_irq_status_query = 5;
    /// <summary>arg: <see cref="physdev_set_iopl"/>.</summary>
    public const int PHYSDEVOP_set_iopl = 6;
    /// <summary>arg: <see cref="physdev_set_iobitmap"/>.</summary>
    public const int PHYSDEVOP_set_iobitmap = 7;
    /// <summary>Read an IO-APIC register. arg: <see cref="physdev_apic"/>.</summary>
    public const int PHYSDEVOP_apic_read = 8;
    /// <summary>Write an IO-APIC register. arg: <see cref="physdev_apic"/>.</summary>
    public const int PHYSDEVOP_apic_write = 9;
    /// <summary>arg: <see cref="physdev_irq"/>.</summary>
    public const int PHYSDEVOP_alloc_irq_vector = 10;
    /// <summary>arg: <see cref="physdev_irq"/>.</summary>
    public const int PHYSDEVOP_free_irq_vector = 11;
    /// <summary>End of interrupt. arg: <see cref="physdev_eoi"/>.</summary>
    public const int PHYSDEVOP_eoi = 12;
    /// <summary>arg: <see cref="physdev_map_pirq"/>.</summary>
    public const int PHYSDEVOP_map_pirq = 13;
    /// <summary>arg: <see cref="physdev_unmap_pirq"/>.</summary>
    public const int PHYSDEVOP_unmap_pirq = 14;
    /// <summary>arg: <see cref="physdev_manage_pci"/>.</summary>
    public const int PHYSDEVOP_manage_pci_add = 15;
    /// <summary>arg: <see cref="physdev_manage_pci"/>.</summary>
    public const int PHYSDEVOP_manage_pci_remove = 16;
    /// <summary>Register the PIRQ needs-EOI bitmap page; PHYSDEVOP_eoi then also unmasks. arg: <see cref="physdev_pirq_eoi_gmfn"/>.</summary>
    public const int PHYSDEVOP_pirq_eoi_gmfn_v1 = 17;
    /// <summary>arg: <see cref="physdev_restore_msi"/>.</summary>
    public const int PHYSDEVOP_restore_msi = 19;
    /// <summary>arg: <see cref="physdev_manage_pci_ext"/>.</summary>
    public const int PHYSDEVOP_manage_pci_add_ext = 20;
    /// <summary>arg: <see cref="physdev_setup_gsi"/>.</summary>
    public const int PHYSDEVOP_setup_gsi = 21;
    /// <summary>arg: <see cref="physdev_get_free_pirq"/>.</summary>
    public const int PHYSDEVOP_get_free_pirq = 23;
    /// <summary>arg: <see cref="physdev_pci_mmcfg_reserved"/>.</summary>
    public const int PHYSDEVOP_pci_mmcfg_reserved = 24;
    /// <summary>arg: <see cref="physdev_pci_device_add"/>.</summary>
    public const int PHYSDEVOP_pci_device_add = 25;
    /// <summary>arg: <see cref="physdev_pci_device"/>.</summary>
    public const int PHYSDEVOP_pci_device_remove = 26;
    /// <summary>arg: <see cref="physdev_pci_device"/>.</summary>
    public const int PHYSDEVOP_restore_msi_ext = 27;
    /// <summary>As v1, but PHYSDEVOP_eoi keeps its meaning. arg: <see cref="physdev_pirq_eoi_gmfn"/>.</summary>
    public const int PHYSDEVOP_pirq_eoi_gmfn_v2 = 28;
    /// <summary>arg: <see cref="physdev_dbgp_op"/>.</summary>
    public const int PHYSDEVOP_dbgp_op = 29;
    /// <summary>MSI-X MMIO resources of a device won't change. arg: <see cref="physdev_pci_device"/>.</summary>
    public const int PHYSDEVOP_prepare_msix = 30;
    /// <summary>MSI-X MMIO resources of a device may change. arg: <see cref="physdev_pci_device"/>.</summary>
    public const int PHYSDEVOP_release_msix = 31;
    /// <summary>The current name of <see cref="PHYSDEVOP_pirq_eoi_gmfn_v2"/> (interface 0x00040200 and later).</summary>
    public const int PHYSDEVOP_pirq_eoi_gmfn = PHYSDEVOP_pirq_eoi_gmfn_v2;

    public const int _XENIRQSTAT_needs_eoi = 0;
    /// <summary><see cref="physdev_irq_status_query.flags"/>: call PHYSDEVOP_eoi once the IRQ is serviced.</summary>
    public const uint XENIRQSTAT_needs_eoi = 1u << _XENIRQSTAT_needs_eoi;
    public const int _XENIRQSTAT_shared = 1;
    /// <summary><see cref="physdev_irq_status_query.flags"/>: the IRQ is shared by several guests.</summary>
    public const uint XENIRQSTAT_shared = 1u << _XENIRQSTAT_shared;

    /// <summary><see cref="physdev_map_pirq.type"/>.</summary>
    public const int MAP_PIRQ_TYPE_MSI = 0x0;
    public const int MAP_PIRQ_TYPE_GSI = 0x1;
    public const int MAP_PIRQ_TYPE_UNKNOWN = 0x2;
    /// <summary>MSI with the PCI segment in the high 16 bits of <c>bus</c>.</summary>
    public const int MAP_PIRQ_TYPE_MSI_SEG = 0x3;
    /// <summary>Multi-vector MSI; <c>entry_nr</c> is IN and OUT.</summary>
    public const int MAP_PIRQ_TYPE_MULTI_MSI = 0x4;

    /// <summary><see cref="physdev_pci_mmcfg_reserved.flags"/>: the MMCFG area is reserved in E820.</summary>
    public const int XEN_PCI_MMCFG_RESERVED = 0x1;

    /// <summary><see cref="physdev_pci_device_add.flags"/>: an extended function.</summary>
    public const int XEN_PCI_DEV_EXTFN = 0x1;
    /// <summary>A virtual function; <c>physfn</c> names its physical function.</summary>
    public const int XEN_PCI_DEV_VIRTFN = 0x2;
    /// <summary><c>optarr[0]</c> is the device's PXM domain.</summary>
    public const int XEN_PCI_DEV_PXM = 0x4;

    /// <summary><see cref="physdev_dbgp_op.op"/>.</summary>
    public const int PHYSDEVOP_DBGP_RESET_PREPARE = 1;
    public const int PHYSDEVOP_DBGP_RESET_DONE = 2;
    /// <summary><see cref="physdev_dbgp_op.bus"/>.</summary>
    public const int PHYSDEVOP_DBGP_BUS_UNKNOWN = 0;
    public const int PHYSDEVOP_DBGP_BUS_PCI = 1;
}

/// <summary>PHYSDEVOP_eoi.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_eoi
{
    /// <summary>IN</summary>
    public uint irq;
}

/// <summary>PHYSDEVOP_pirq_eoi_gmfn_v1 and _v2: a page used as a bit array indexed by PIRQ.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_pirq_eoi_gmfn
{
    /// <summary>IN</summary>
    public ulong gmfn;
}

/// <summary>PHYSDEVOP_irq_status_query.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_irq_status_query
{
    /// <summary>IN</summary>
    public uint irq;
    /// <summary>OUT: <c>XENIRQSTAT_*</c>.</summary>
    public uint flags;
}

/// <summary>PHYSDEVOP_set_iopl: the current vCPU's I/O privilege level.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_set_iopl
{
    /// <summary>IN</summary>
    public uint iopl;
}

/// <summary>PHYSDEVOP_set_iobitmap: the current vCPU's I/O port permission bitmap.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_set_iobitmap
{
    /// <summary>IN: guest handle to the bitmap bytes.</summary>
    public ulong bitmap;
    /// <summary>IN</summary>
    public uint nr_ports;
}

/// <summary>PHYSDEVOP_apic_read and PHYSDEVOP_apic_write.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_apic
{
    /// <summary>IN</summary>
    public ulong apic_physbase;
    /// <summary>IN</summary>
    public uint reg;
    /// <summary>IN (write) or OUT (read).</summary>
    public uint value;
}

/// <summary>PHYSDEVOP_alloc_irq_vector and PHYSDEVOP_free_irq_vector.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_irq
{
    /// <summary>IN</summary>
    public uint irq;
    /// <summary>IN or OUT</summary>
    public uint vector;
}

/// <summary>PHYSDEVOP_map_pirq.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_map_pirq
{
    public ushort domid;
    /// <summary>IN: <c>MAP_PIRQ_TYPE_*</c>.</summary>
    public int type;
    /// <summary>IN (ignored for MULTI_MSI).</summary>
    public int index;
    /// <summary>IN or OUT</summary>
    public int pirq;
    /// <summary>IN: high 16 bits hold the segment for MSI_SEG and MULTI_MSI.</summary>
    public int bus;
    /// <summary>IN</summary>
    public int devfn;
    /// <summary>IN (also OUT for MULTI_MSI).</summary>
    public int entry_nr;
    /// <summary>IN</summary>
    public ulong table_base;
}

/// <summary>PHYSDEVOP_unmap_pirq.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_unmap_pirq
{
    public ushort domid;
    /// <summary>IN</summary>
    public int pirq;
}

/// <summary>PHYSDEVOP_manage_pci_add and PHYSDEVOP_manage_pci_remove.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_manage_pci
{
    /// <summary>IN</summary>
    public byte bus;
    /// <summary>IN</summary>
    public byte devfn;
}

/// <summary>PHYSDEVOP_restore_msi.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_restore_msi
{
    /// <summary>IN</summary>
    public byte bus;
    /// <summary>IN</summary>
    public byte devfn;
}

/// <summary>PHYSDEVOP_manage_pci_add_ext.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_manage_pci_ext
{
    /// <summary>IN</summary>
    public byte bus;
    /// <summary>IN</summary>
    public byte devfn;
    /// <summary>IN</summary>
    public uint is_extfn;
    /// <summary>IN</summary>
    public uint is_virtfn;
    /// <summary>IN: the physical function of a virtual function.</summary>
    public PhysFn physfn;

    [StructLayout(LayoutKind.Sequential)]
    public struct PhysFn
    {
        public byte bus;
        public byte devfn;
    }
}

/// <summary>The argument of the deprecated <c>__HYPERVISOR_physdev_op_compat</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_op
{
    /// <summary>PHYSDEVOP_*.</summary>
    public uint cmd;
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        [FieldOffset(0)] public physdev_irq_status_query irq_status_query;
        [FieldOffset(0)] public physdev_set_iopl set_iopl;
        [FieldOffset(0)] public physdev_set_iobitmap set_iobitmap;
        [FieldOffset(0)] public physdev_apic apic_op;
        [FieldOffset(0)] public physdev_irq irq_op;
    }
}

/// <summary>PHYSDEVOP_setup_gsi.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_setup_gsi
{
    public int gsi;
    /// <summary>IN</summary>
    public byte triggering;
    /// <summary>IN</summary>
    public byte polarity;
}

/// <summary>PHYSDEVOP_get_free_pirq.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_get_free_pirq
{
    /// <summary>IN: <c>MAP_PIRQ_TYPE_GSI</c> or <c>MAP_PIRQ_TYPE_MSI</c>.</summary>
    public int type;
    /// <summary>OUT</summary>
    public uint pirq;
}

/// <summary>PHYSDEVOP_pci_mmcfg_reserved.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_pci_mmcfg_reserved
{
    public ulong address;
    public ushort segment;
    public byte start_bus;
    public byte end_bus;
    /// <summary><c>XEN_PCI_MMCFG_RESERVED</c>.</summary>
    public uint flags;
}

/// <summary>
/// PHYSDEVOP_pci_device_add. In C a flexible array <c>uint32_t optarr[]</c> follows at offset
/// <c>sizeof</c> (12): optional parameters, <c>optarr[0]</c> the PXM with <c>XEN_PCI_DEV_PXM</c>.
/// C# cannot declare it; read it from guest memory after the struct.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_pci_device_add
{
    /// <summary>IN</summary>
    public ushort seg;
    /// <summary>IN</summary>
    public byte bus;
    /// <summary>IN</summary>
    public byte devfn;
    /// <summary>IN: <c>XEN_PCI_DEV_*</c>.</summary>
    public uint flags;
    /// <summary>IN: the physical function of a virtual function.</summary>
    public PhysFn physfn;

    [StructLayout(LayoutKind.Sequential)]
    public struct PhysFn
    {
        public byte bus;
        public byte devfn;
    }
}

/// <summary>PHYSDEVOP_pci_device_remove, _restore_msi_ext, _prepare_msix, _release_msix.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_pci_device
{
    /// <summary>IN</summary>
    public ushort seg;
    /// <summary>IN</summary>
    public byte bus;
    /// <summary>IN</summary>
    public byte devfn;
}

/// <summary>PHYSDEVOP_dbgp_op: USB debug port reset notifications.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct physdev_dbgp_op
{
    /// <summary>IN: <c>PHYSDEVOP_DBGP_RESET_*</c>.</summary>
    public byte op;
    /// <summary>IN: <c>PHYSDEVOP_DBGP_BUS_*</c>.</summary>
    public byte bus;
    /// <summary>IN</summary>
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        [FieldOffset(0)] public physdev_pci_device pci;
    }
}
