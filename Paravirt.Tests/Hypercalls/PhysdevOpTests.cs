using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;
using Paravirt.Tests.Memory.Pv;

namespace Paravirt.Tests.Hypercalls;

/// <summary>physdev_op as Xen 4.17 answers an unprivileged PV domain with no passed-through device (x86/physdev.c).</summary>
public sealed class PhysdevOpTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    private static long E(Errno e) => -(long)e;

    private static long Physdev(PvTestDomain d, int cmd, ulong arg) => d.Call(Xen.__HYPERVISOR_physdev_op, (ulong)cmd, arg);

    private static long Physdev<T>(PvTestDomain d, int cmd, T arg)
        where T : unmanaged
    {
        d.Domain.Memory.TryWrite(d.Buffer, arg).Should().BeTrue();
        return Physdev(d, cmd, d.Buffer);
    }

    private static T Read<T>(PvTestDomain d)
        where T : unmanaged => d.Domain.Memory.TryRead(d.Buffer, out T value) ? value : throw new InvalidOperationException("buffer unreadable");

    [Fact]
    public void Set_Iopl_Takes_0_To_3_And_A_Bad_Handle_Is_EFAULT_Before_Anything_Else()
    {
        var d = new PvTestDomain(_hv);
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_set_iopl, new physdev_set_iopl { iopl = 1 }).Should().Be(0);
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_set_iopl, new physdev_set_iopl { iopl = 4 }).Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_set_iopl, 0xFFFF_0000_0000UL).Should().Be(E(Errno.EFAULT));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_map_pirq, 0xFFFF_0000_0000UL).Should().Be(E(Errno.EFAULT));
        Physdev(d, 99, d.Buffer).Should().Be(E(Errno.ENOSYS), "no such command");
    }

    [Fact]
    public void The_Pirq_Eoi_Map_Is_Registered_Once_On_A_Writable_Frame_And_Released_At_Destroy()
    {
        var free = _hv.Frames.FreeFrames;
        var d = new PvTestDomain(_hv);
        var t = d.BuildIdentity();
        var page = d.NewPage();
        d.MmuExt(Xen.MMUEXT_PIN_L1_TABLE, d.Mfn(t.L1)).Should().Be(0);

        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pirq_eoi_gmfn_v2, new physdev_pirq_eoi_gmfn { gmfn = d.Mfn(t.L1) })
            .Should().Be(E(Errno.EINVAL), "a page table cannot take the writable type");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pirq_eoi_gmfn_v2, new physdev_pirq_eoi_gmfn { gmfn = (ulong)_hv.TotalFrames + 7 })
            .Should().Be(E(Errno.EINVAL), "no such frame");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pirq_eoi_gmfn_v2, new physdev_pirq_eoi_gmfn { gmfn = d.Mfn(page) }).Should().Be(0);
        _hv.Frames.Types.TypeOf(d.Mfn(page)).Should().Be(PageType.Writable, "the map holds the writable type: it can never become a page table");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pirq_eoi_gmfn_v1, new physdev_pirq_eoi_gmfn { gmfn = d.Mfn(d.NewPage()) })
            .Should().Be(E(Errno.EBUSY), "a map is registered already");
        d.MmuExt(Xen.MMUEXT_PIN_L1_TABLE, d.Mfn(page)).Should().Be(E(Errno.EINVAL), "the registered frame is writable for good");

        d.MmuExt(Xen.MMUEXT_UNPIN_TABLE, d.Mfn(t.L1)).Should().Be(0);
        var mfn = d.Mfn(page);
        d.Domain.Destroy();
        _hv.Frames.FreeFrames.Should().Be(free, "every frame of the domain, the EOI map included, came back");
        _hv.Frames.Types.CountOf(mfn).Should().Be(0, "teardown dropped the map's writable type reference");
    }

    [Fact]
    public void Pirqs_Are_Allocated_From_The_Domains_Range_And_Only_An_Allocated_One_Takes_An_Eoi()
    {
        var d = new PvTestDomain(_hv);
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_eoi, new physdev_eoi { irq = 16 }).Should().Be(E(Errno.EINVAL), "pirq_info is NULL: never allocated");

        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_get_free_pirq, new physdev_get_free_pirq { type = Core.Abi.Physdev.MAP_PIRQ_TYPE_GSI }).Should().Be(0);
        Read<physdev_get_free_pirq>(d).pirq.Should().Be(16u, "GSI PIRQs start above the 16 legacy ones");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_get_free_pirq, new physdev_get_free_pirq { type = Core.Abi.Physdev.MAP_PIRQ_TYPE_MSI }).Should().Be(0);
        Read<physdev_get_free_pirq>(d).pirq.Should().Be((uint)DomainPirqs.Count - 1, "others come from the top of the domain's nr_pirqs");

        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_eoi, new physdev_eoi { irq = 16 }).Should().Be(0);
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_eoi, new physdev_eoi { irq = 100_000 }).Should().Be(E(Errno.EINVAL));

        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_irq_status_query, new physdev_irq_status_query { irq = 5, flags = 0xFF }).Should().Be(0);
        Read<physdev_irq_status_query>(d).flags.Should().Be(Core.Abi.Physdev.XENIRQSTAT_needs_eoi, "a PV guest is always told to EOI, never shared");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_irq_status_query, new physdev_irq_status_query { irq = (uint)DomainPirqs.Count }).Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_IRQ_UNMASK_NOTIFY, 0).Should().Be(0);
    }

    [Fact]
    public void Everything_That_Programs_Host_Hardware_Is_Refused_As_For_A_DomU()
    {
        var d = new PvTestDomain(_hv);
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_map_pirq, new physdev_map_pirq { domid = Xen.DOMID_SELF, type = Core.Abi.Physdev.MAP_PIRQ_TYPE_GSI, index = 5 })
            .Should().Be(E(Errno.EPERM), "XSM_DM_PRIV: a domU is nobody's device model");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_map_pirq, new physdev_map_pirq { domid = 999, type = Core.Abi.Physdev.MAP_PIRQ_TYPE_GSI }).Should().Be(E(Errno.ESRCH));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_map_pirq, new physdev_map_pirq { domid = Xen.DOMID_SELF, type = Core.Abi.Physdev.MAP_PIRQ_TYPE_MULTI_MSI, table_base = 1 })
            .Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_unmap_pirq, new physdev_unmap_pirq { domid = Xen.DOMID_SELF, pirq = 16 }).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_apic_read, new physdev_apic()).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_alloc_irq_vector, new physdev_irq()).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_manage_pci_add, new physdev_manage_pci()).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_manage_pci_add_ext, new physdev_manage_pci_ext { is_extfn = 2 }).Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_manage_pci_add_ext, new physdev_manage_pci_ext()).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_setup_gsi, new physdev_setup_gsi { gsi = 200 }).Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_setup_gsi, new physdev_setup_gsi { gsi = 9 }).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_restore_msi, new physdev_restore_msi()).Should().Be(E(Errno.ENODEV));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pci_mmcfg_reserved, 0xFFFF_0000_0000UL).Should().Be(E(Errno.EPERM), "refused before the argument is read");
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_pci_device_add, new physdev_pci_device_add()).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_dbgp_op, 0).Should().Be(E(Errno.EPERM));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_set_iobitmap, new physdev_set_iobitmap { bitmap = d.Buffer2, nr_ports = 70_000 }).Should().Be(E(Errno.EINVAL));
        Physdev(d, Core.Abi.Physdev.PHYSDEVOP_set_iobitmap, new physdev_set_iobitmap { bitmap = d.Buffer2, nr_ports = 1024 }).Should().Be(0);
    }
}
