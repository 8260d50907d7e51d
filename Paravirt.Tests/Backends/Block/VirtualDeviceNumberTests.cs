using Paravirt.Core.Backends.Block;

namespace Paravirt.Tests.Backends.Block;

/// <summary>vdev names to devids as xen-vbd-interface(7) and libxl compute them.</summary>
public sealed class VirtualDeviceNumberTests
{
    [Theory]
    [InlineData("xvda", 51712u)] // 202 << 8
    [InlineData("xvdb", 51728u)]
    [InlineData("xvdb2", (202u << 8) | (1 << 4) | 2)]
    [InlineData("xvdp15", (202u << 8) | (15 << 4) | 15)]
    [InlineData("xvdq", (1u << 28) | (16 << 8))] // disk 16: the extended format
    [InlineData("xvda16", (1u << 28) | 16)] // partition 16 too
    [InlineData("xvdaa", (1u << 28) | (26 << 8))]
    [InlineData("xvdtq37", (1u << 28) | (536 << 8) | 37)] // the man page's example
    [InlineData("d0", 51712u)]
    [InlineData("d0p0", 51712u)]
    [InlineData("d1p2", (202u << 8) | (1 << 4) | 2)]
    [InlineData("d536p37", (1u << 28) | (536 << 8) | 37)]
    [InlineData("sda", 8u << 8)]
    [InlineData("sdb3", (8u << 8) | (1 << 4) | 3)]
    [InlineData("hda", 3u << 8)]
    [InlineData("hdb1", (3u << 8) | (1 << 6) | 1)]
    [InlineData("hdc2", (22u << 8) | 2)]
    [InlineData("hdd63", (22u << 8) | (1 << 6) | 63)]
    [InlineData("51712", 51712u)]
    [InlineData("0xca00", 51712u)]
    public void Names_Map_To_Xens_Numbers(string vdev, uint devid) => VirtualDeviceNumber.Parse(vdev).Should().Be(devid);

    [Theory]
    [InlineData("")]
    [InlineData("xvd")]
    [InlineData("xvda0")] // no leading zero in a partition
    [InlineData("xvda256")]
    [InlineData("xvdA")]
    [InlineData("sdq")] // SCSI disks 0..15
    [InlineData("sda16")]
    [InlineData("hde")] // IDE disks 0..3
    [InlineData("hda64")]
    [InlineData("d1048576")] // disk 1 << 20
    [InlineData("d0p256")]
    [InlineData("vda")]
    [InlineData("4294967295")]
    [InlineData("xvda/../x")]
    public void Other_Names_Are_Refused(string vdev) =>
        FluentActions.Invoking(() => VirtualDeviceNumber.Parse(vdev)).Should().Throw<ArgumentException>().WithMessage("*not a virtual device name*");
}
