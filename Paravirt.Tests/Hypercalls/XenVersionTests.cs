using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

/// <summary>__HYPERVISOR_xen_version from a managed guest, against Xen 4.17's answers.</summary>
public sealed class XenVersionTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64, CommandLine = "console=com1 dom0_mem=1G" });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public void Version_Is_4_17_In_The_High_And_Low_Halves()
    {
        long result = 0;
        GuestRunner.Run(_hv, g => result = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
        result.Should().Be((4 << 16) | 17);
    }

    [Fact]
    public void Strings_Are_Nul_Terminated_In_Their_Fixed_Sizes()
    {
        string extra = "", caps = "", changeset = "", cmdline = "";
        long r1 = -1, r2 = -1, r3 = -1, r4 = -1;
        GuestRunner.Run(_hv, g =>
        {
            r1 = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, g.Scratch);
            extra = ReadCString(g, g.Scratch, XenVersion.XEN_EXTRAVERSION_LEN);
            r2 = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_capabilities, g.Scratch);
            caps = ReadCString(g, g.Scratch, XenVersion.XEN_CAPABILITIES_INFO_LEN);
            r3 = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_changeset, g.Scratch);
            changeset = ReadCString(g, g.Scratch, XenVersion.XEN_CHANGESET_INFO_LEN);
            r4 = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_commandline, g.Scratch);
            cmdline = ReadCString(g, g.Scratch, 1024);
        });
        (r1, r2, r3, r4).Should().Be((0L, 0L, 0L, 0L));
        extra.Should().Be(Hypervisor.ExtraVersion);
        caps.Should().Be("xen-3.0-x86_64");
        changeset.Should().NotBeEmpty();
        cmdline.Should().Be("console=com1 dom0_mem=1G");
    }

    [Fact]
    public void Hidden_Details_Read_As_Empty_And_Build_Id_Is_EPERM_Like_Release_Xen()
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 16, HideVersionDetails = true });
        string caps = "x";
        long buildId = 0, version = 0;
        GuestRunner.Run(hv, g =>
        {
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_capabilities, g.Scratch);
            caps = ReadCString(g, g.Scratch, XenVersion.XEN_CAPABILITIES_INFO_LEN);
            buildId = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_build_id, g.Scratch);
            version = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
        });
        caps.Should().BeEmpty();
        buildId.Should().Be(-(long)Errno.EPERM);
        version.Should().Be((4 << 16) | 17);
    }

    [Fact]
    public void Pagesize_Is_4096_And_Rejects_A_Non_Null_Handle()
    {
        long ok = 0, bad = 0;
        GuestRunner.Run(_hv, g =>
        {
            ok = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_pagesize);
            bad = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_pagesize, g.Scratch);
        });
        ok.Should().Be(4096);
        bad.Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void Platform_Parameters_Give_The_64_Bit_Hypervisor_Virt_Start()
    {
        xen_platform_parameters p = default;
        GuestRunner.Run(_hv, g =>
        {
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_platform_parameters, g.Scratch).Should().Be(0);
            p = g.Cpu.Memory.Read<xen_platform_parameters>(g.Scratch);
        });
        p.virt_start.Should().Be(0xFFFF800000000000UL);
    }

    [Fact]
    public void Get_Features_Submap_0_Is_What_Xen_Gives_A_PV_DomU_And_Other_Submaps_Are_EINVAL()
    {
        uint submap = 0;
        long bad = 0;
        GuestRunner.RunPv(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new xen_feature_info { submap_idx = 0, submap = 0xdeadbeef });
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_get_features, g.Scratch).Should().Be(0);
            submap = g.Cpu.Memory.Read<xen_feature_info>(g.Scratch).submap;
            g.Cpu.Memory.Write(g.Scratch, new xen_feature_info { submap_idx = 1 });
            bad = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_get_features, g.Scratch);
        });
        submap.Should().Be((1u << Features.XENFEAT_memory_op_vnode_supported) | (1u << Features.XENFEAT_mmu_pt_update_preserve_ad)
            | (1u << Features.XENFEAT_highmem_assist) | (1u << Features.XENFEAT_gnttab_map_avail_bits) | (1u << Features.XENFEAT_direct_mapped));
        (submap & (1u << Features.XENFEAT_auto_translated_physmap)).Should().Be(0u, "a PV guest manages its own P2M");
        bad.Should().Be(-(long)Errno.EINVAL);
    }

    [Fact]
    public void A_Translated_Domain_Sees_Auto_Translated_Physmap_And_Is_Not_Direct_Mapped()
    {
        uint submap = 0;
        GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch, new xen_feature_info { submap_idx = 0 });
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_get_features, g.Scratch).Should().Be(0);
            submap = g.Cpu.Memory.Read<xen_feature_info>(g.Scratch).submap;
        });
        (submap & (1u << Features.XENFEAT_auto_translated_physmap)).Should().NotBe(0u);
        (submap & (1u << Features.XENFEAT_writable_page_tables)).Should().NotBe(0u);
        (submap & (1u << Features.XENFEAT_not_direct_mapped)).Should().NotBe(0u);
        (submap & (1u << Features.XENFEAT_direct_mapped)).Should().Be(0u);
    }

    [Fact]
    public void Guest_Handle_Is_The_Domain_Uuid()
    {
        var uuid = Guid.NewGuid();
        var handle = new byte[16];
        GuestRunner.Run(_hv, g =>
        {
            g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_guest_handle, g.Scratch).Should().Be(0);
            g.Cpu.Memory.Read(g.Scratch, handle);
        }, new DomainConfig { Name = "uuid", MemoryMiB = 4, Uuid = uuid });
        new Guid(handle, bigEndian: true).Should().Be(uuid);
    }

    [Fact]
    public void Build_Id_Reports_Its_Length_And_Refuses_A_Small_Buffer()
    {
        long size = 0, small = 0, full = 0;
        GuestRunner.Run(_hv, g =>
        {
            size = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_build_id, 0);
            g.Cpu.Memory.Write(g.Scratch, new xen_build_id { len = 4 });
            small = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_build_id, g.Scratch);
            g.Cpu.Memory.Write(g.Scratch, new xen_build_id { len = 64 });
            full = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_build_id, g.Scratch);
        });
        size.Should().Be(20);
        small.Should().Be(-(long)Errno.ENOBUFS);
        full.Should().Be(20);
    }

    [Fact]
    public void Unknown_Sub_Op_Is_ENOSYS_And_A_Wild_Pointer_Is_EFAULT()
    {
        long unknown = 0, wild = 0;
        GuestRunner.Run(_hv, g =>
        {
            unknown = g.Hypercall(Xen.__HYPERVISOR_xen_version, 77);
            wild = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, 0xdead_0000_0000UL);
        });
        unknown.Should().Be(-(long)Errno.ENOSYS);
        wild.Should().Be(-(long)Errno.EFAULT);
    }

    internal static string ReadCString(GuestContext g, ulong address, int size)
    {
        var buffer = new byte[size];
        g.Cpu.Memory.Read(address, buffer);
        var nul = Array.IndexOf(buffer, (byte)0);
        nul.Should().BeGreaterThanOrEqualTo(0, "Xen's strings are NUL-terminated within their buffer");
        return Encoding.UTF8.GetString(buffer, 0, nul);
    }
}
