using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

public sealed class CallbackAndVmAssistTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 16 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Register_Takes_Canonical_Addresses_And_Refuses_Others_With_EINVAL()
    {
        long ok = -1, nonCanonical = 0, unknownType = 0, badPointer = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new callback_register { type = Callback.CALLBACKTYPE_event, address = 0xffff_8800_0000_1000 });
            ok = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new callback_register { type = Callback.CALLBACKTYPE_event, address = 0x0000_8000_0000_0000 });
            nonCanonical = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new callback_register { type = 6, address = 0x1000 });
            unknownType = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, g.Scratch);
            badPointer = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, 0x10_0000_0000UL);
        });
        ok.Should().Be(0);
        nonCanonical.Should().Be(-(long)Errno.EINVAL);
        unknownType.Should().Be(-(long)Errno.ENOSYS);
        badPointer.Should().Be(-(long)Errno.EFAULT);
    }

    [Fact]
    public void Only_The_Nmi_Callback_Can_Be_Unregistered()
    {
        long evt = 0, nmi = -1, sub = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new callback_unregister { type = Callback.CALLBACKTYPE_event });
            evt = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_unregister, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new callback_unregister { type = Callback.CALLBACKTYPE_nmi });
            nmi = g.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_unregister, g.Scratch);
            sub = g.Hypercall(Xen.__HYPERVISOR_callback_op, 9, g.Scratch);
        });
        evt.Should().Be(-(long)Errno.EINVAL);
        nmi.Should().Be(0);
        sub.Should().Be(-(long)Errno.ENOSYS);
    }

    [Fact]
    public void Set_Callbacks_Always_Returns_Zero_As_Xen_Does()
    {
        long rc = -1;
        GuestRunner.Run(_hv, g => rc = g.Hypercall(Xen.__HYPERVISOR_set_callbacks, 0x1000, 0x8000_0000_0000_0000, 0x2000));
        rc.Should().Be(0);
    }

    [Fact]
    public void Vm_Assist_Accepts_The_PV64_Types_Only()
    {
        var results = new List<long>();
        GuestRunner.Run(_hv, g =>
        {
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, Xen.VMASST_TYPE_runstate_update_flag));
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, Xen.VMASST_TYPE_m2p_strict));
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_disable, Xen.VMASST_TYPE_m2p_strict));
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, 6));
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, 64));
            results.Add(g.Hypercall(Xen.__HYPERVISOR_vm_assist, 7, Xen.VMASST_TYPE_pae_extended_cr3));
        });
        results.Should().Equal(0, 0, 0, -(long)Errno.EINVAL, -(long)Errno.EINVAL, -(long)Errno.ENOSYS);
    }

    [Fact]
    public void Pae_Extended_Cr3_Adds_Its_Feature_Bit()
    {
        uint before = 0, after = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new xen_feature_info { submap_idx = 0 });
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_get_features, g.Scratch);
            before = g.Cpu.Memory.Read<xen_feature_info>(g.Scratch).submap;
            g.Hypercall(Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, Xen.VMASST_TYPE_pae_extended_cr3);
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_get_features, g.Scratch);
            after = g.Cpu.Memory.Read<xen_feature_info>(g.Scratch).submap;
        });
        (before & (1u << Features.XENFEAT_pae_pgdir_above_4gb)).Should().Be(0u);
        (after & (1u << Features.XENFEAT_pae_pgdir_above_4gb)).Should().NotBe(0u);
    }
}
