using System.IO.Compression;
using System.Text;

namespace Paravirt.Tests.Support;

/// <summary>
/// Builds a Linux initramfs in memory: a cpio archive in the "newc" format (ASCII headers, magic
/// 070701, names and data padded to 4 bytes, ended by TRAILER!!!) compressed with gzip, the format
/// every Debian kernel unpacks (CONFIG_RD_GZIP). Directories, files, symlinks and device nodes.
/// </summary>
internal sealed class Initramfs
{
    private const uint Dir = 0x4000, File = 0x8000, Symlink = 0xA000, CharDevice = 0x2000;
    private readonly MemoryStream _cpio = new();
    private uint _inode = 300;

    public Initramfs Directory(string path, uint mode = 0x1ED /* 0755 */) => Entry(path, Dir | mode, [], 0, 0);

    public Initramfs FileEntry(string path, byte[] data, uint mode = 0x1A4 /* 0644 */) => Entry(path, File | mode, data, 0, 0);

    public Initramfs Executable(string path, byte[] data) => FileEntry(path, data, 0x1ED);

    public Initramfs Script(string path, string text) => Executable(path, Encoding.ASCII.GetBytes(text.ReplaceLineEndings("\n")));

    public Initramfs SymbolicLink(string path, string target) => Entry(path, Symlink | 0x1FF, Encoding.ASCII.GetBytes(target), 0, 0);

    public Initramfs CharacterDevice(string path, uint major, uint minor, uint mode = 0x180 /* 0600 */) => Entry(path, CharDevice | mode, [], major, minor);

    /// <summary>
    /// A busybox system: /bin/busybox with a symlink per applet named, /dev/console, the usual
    /// mount points, and <paramref name="init"/> as /init (a shell script).
    /// </summary>
    public static Initramfs Busybox(string busybox, string init, params string[] applets)
    {
        var image = new Initramfs();
        foreach (var dir in new[] { "bin", "dev", "proc", "sys", "tmp", "root" })
        {
            image.Directory(dir);
        }

        image.Executable("bin/busybox", System.IO.File.ReadAllBytes(busybox));
        foreach (var applet in applets.Append("sh").Distinct())
        {
            image.SymbolicLink($"bin/{applet}", "busybox");
        }

        image.CharacterDevice("dev/console", 5, 1);
        image.Script("init", init);
        return image;
    }

    /// <summary>The archive with its trailer, gzip-compressed.</summary>
    public byte[] ToGzip()
    {
        var cpio = new MemoryStream();
        _cpio.WriteTo(cpio);
        WriteEntry(cpio, "TRAILER!!!", 0, 0, [], 0, 0);
        var output = new MemoryStream();
        using (var gz = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
        {
            cpio.WriteTo(gz);
        }

        return output.ToArray();
    }

    private Initramfs Entry(string path, uint mode, byte[] data, uint rdevMajor, uint rdevMinor)
    {
        WriteEntry(_cpio, path.TrimStart('/'), _inode++, mode, data, rdevMajor, rdevMinor);
        return this;
    }

    private static void WriteEntry(Stream s, string name, uint inode, uint mode, byte[] data, uint rdevMajor, uint rdevMinor)
    {
        var nameBytes = Encoding.ASCII.GetBytes(name + "\0");
        var header = new StringBuilder("070701");
        foreach (var field in new uint[] { inode, mode, 0, 0, (mode & Dir) == Dir ? 2u : 1u, 0, (uint)data.Length, 0, 0, rdevMajor, rdevMinor, (uint)nameBytes.Length, 0 })
        {
            header.Append(field.ToString("x8", System.Globalization.CultureInfo.InvariantCulture));
        }

        var h = Encoding.ASCII.GetBytes(header.ToString());
        s.Write(h);
        s.Write(nameBytes);
        Pad(s, h.Length + nameBytes.Length);
        s.Write(data);
        Pad(s, data.Length);
    }

    private static void Pad(Stream s, int length)
    {
        for (var i = length; i % 4 != 0; i++)
        {
            s.WriteByte(0);
        }
    }
}
