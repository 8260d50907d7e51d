using System.Buffers.Binary;
using System.Text;
using Paravirt.Core.Boot.Elf;

namespace Paravirt.Tests.Boot;

/// <summary>
/// Where Debian's PV GRUB looks for its configuration (docs/boot.md), read from the image itself:
/// its "mods" section holds GRUB's module area (magic "mimg", then typed objects: ELF modules, a
/// memdisk, an embedded config, a prefix), as grub-mkimage writes it.
/// </summary>
public sealed class PvGrubImageTests
{
    private const uint ObjElf = 0, ObjMemdisk = 1, ObjConfig = 2, ObjPrefix = 3;

    private static List<(uint Type, byte[] Body)> Objects()
    {
        var elf = ElfFile.Parse(RealKernel.Bytes());
        var mods = elf.GetBytes(elf.FindSection("mods") ?? throw new InvalidOperationException("no mods section")).ToArray();
        BinaryPrimitives.ReadUInt32LittleEndian(mods).Should().Be(0x676d696du, "the module area starts with GRUB's magic \"mimg\"");
        var offset = (int)BinaryPrimitives.ReadUInt64LittleEndian(mods.AsSpan(8));
        var size = (int)BinaryPrimitives.ReadUInt64LittleEndian(mods.AsSpan(16));
        var list = new List<(uint, byte[])>();
        for (var p = offset; p < size;)
        {
            var type = BinaryPrimitives.ReadUInt32LittleEndian(mods.AsSpan(p));
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(mods.AsSpan(p + 4));
            length.Should().BeGreaterThanOrEqualTo(8);
            list.Add((type, mods.AsSpan(p + 8, length - 8).ToArray()));
            p += length;
        }

        return list;
    }

    private static string Text(byte[] b) => Encoding.ASCII.GetString(b).TrimEnd('\0');

    [Fact]
    public void Pv_Grub_Runs_Normal_On_Its_Memdisk_Config_With_Prefix_Memdisk_Boot_Grub()
    {
        var objects = Objects();
        Text(objects.Single(o => o.Type == ObjConfig).Body).Should().Be("normal (memdisk)/grub.cfg\n");
        Text(objects.Single(o => o.Type == ObjPrefix).Body).Should().Be("(memdisk)/boot/grub");
        objects.Count(o => o.Type == ObjElf).Should().Be(204, "the modules, ext2 and search among them");
    }

    [Fact]
    public void The_Memdisk_Grub_Cfg_Searches_The_Disks_For_Boot_Grub_Grub_Cfg()
    {
        // The memdisk is a ustar archive with one file, grub.cfg.
        var tar = Objects().Single(o => o.Type == ObjMemdisk).Body;
        Text(tar[..100]).Should().Be("grub.cfg");
        Encoding.ASCII.GetString(tar, 257, 5).Should().Be("ustar");
        var size = Convert.ToInt32(Text(tar[124..136]).Trim(), 8);
        var cfg = Encoding.ASCII.GetString(tar, 512, size);
        cfg.Should().Contain("if search -s -f /boot/xen/pvboot-x86_64.elf ; then")
            .And.Contain("if search -s -f /boot/grub/grub.cfg ; then\n\techo \"Reading (${root})/boot/grub/grub.cfg\"\n\tconfigfile /boot/grub/grub.cfg\nfi")
            .And.Contain("configfile /grub/grub.cfg");
        cfg.IndexOf("pvboot-x86_64.elf", StringComparison.Ordinal).Should().BeLessThan(cfg.IndexOf("/boot/grub/grub.cfg", StringComparison.Ordinal), "a chainloadable pvboot comes first");
    }
}
