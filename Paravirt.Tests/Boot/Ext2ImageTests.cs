using System.Buffers.Binary;
using System.Text;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>The test support that makes ext2 disks for PV GRUB (its /boot/grub/grub.cfg, docs/boot.md).</summary>
public sealed class Ext2ImageTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-ext2t-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public async Task An_Image_Holds_The_Files_Under_Their_Paths_In_An_Ext2_File_System()
    {
        var ct = TestContext.Current.CancellationToken;
        var image = Path.Combine(dir, "boot.img");
        const string cfg = "set timeout=0\nmenuentry 'paravirt' {\n  echo hello from grub.cfg\n}\n";
        await Ext2Image.CreateAsync(image, new Dictionary<string, byte[]>
        {
            ["boot/grub/grub.cfg"] = Encoding.ASCII.GetBytes(cfg),
            ["data/blob.bin"] = [1, 2, 3],
        }, sizeMiB: 4, ct: ct);

        var bytes = await File.ReadAllBytesAsync(image, ct);
        bytes.Length.Should().Be(4 << 20);
        BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(1024 + 56)).Should().Be(0xEF53, "the ext2 superblock magic s_magic sits at byte 1024 + 56");
        BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(1024 + 96)).Should().Be(2u, "an ext2 file system's only incompatible feature is filetype (s_feature_incompat; no extents, 64bit or flex_bg)");
        (await Ext2Image.ReadFileAsync(image, "boot/grub/grub.cfg", ct)).Should().Be(cfg);
    }

    [Fact]
    public async Task A_Path_Outside_The_Image_Is_Refused()
    {
        var act = () => Ext2Image.CreateAsync(Path.Combine(dir, "x.img"), new Dictionary<string, byte[]> { ["../escape"] = [] }, ct: TestContext.Current.CancellationToken);
        await act.Should().ThrowAsync<ArgumentException>().WithMessage("*not a relative path inside the image*");
    }
}
