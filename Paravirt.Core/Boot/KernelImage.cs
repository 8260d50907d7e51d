using Paravirt.Core.Boot.Elf;

namespace Paravirt.Core.Boot;

/// <summary>
/// What the PV domain builder accepts as a kernel, as libxenguest's loaders do: an ELF file as it
/// is, or a Linux bzImage (<see cref="BzImage"/>), whose payload is decompressed to the vmlinux ELF
/// file inside it. Anything else is refused naming both.
/// </summary>
public static class KernelImage
{
    /// <summary>
    /// The largest kernel read, as a file or decompressed: 1 GiB (libxenguest's
    /// XC_DOM_DECOMPRESS_MAX, and <see cref="ElfFile.MaxFileSize"/>).
    /// </summary>
    public const long MaxSize = ElfFile.MaxFileSize;

    /// <summary>True when <paramref name="image"/> is not ELF and carries a bzImage's "HdrS": it is read as a bzImage.</summary>
    public static bool IsBzImage(ReadOnlySpan<byte> image) => !IsElf(image) && BzImage.HasMagic(image);

    /// <summary>The ELF file of a kernel image: <paramref name="image"/> itself (copied) or the vmlinux of a bzImage.</summary>
    /// <exception cref="ElfFormatException">Neither ELF nor bzImage, or the ELF file (or the vmlinux) is malformed.</exception>
    /// <exception cref="PvKernelException">A bzImage whose header or payload is refused (<see cref="BzImage.Parse"/>, <see cref="BzImage.Decompress"/>).</exception>
    public static ElfFile ReadElf(ReadOnlySpan<byte> image) => ReadElf(image, MaxSize, out _);

    /// <summary>As <see cref="ReadElf(ReadOnlySpan{byte})"/>, refusing a vmlinux over <paramref name="maxSize"/> bytes (at most <see cref="MaxSize"/>); <paramref name="bzImage"/> is the header when the image was a bzImage.</summary>
    public static ElfFile ReadElf(ReadOnlySpan<byte> image, long maxSize, out BzImage? bzImage) => Read(image, null, maxSize, out bzImage);

    /// <summary>Reads the file at <paramref name="path"/> and returns its ELF file (<see cref="ReadElf(ReadOnlySpan{byte})"/>); I/O errors surface as the usual IOException family.</summary>
    public static ElfFile Open(string path, out BzImage? bzImage)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (stream.Length > MaxSize)
        {
            throw new ElfFormatException($"{path} is {stream.Length} bytes; a kernel image may be at most {MaxSize} bytes");
        }

        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return Read(bytes, bytes, MaxSize, out bzImage);
    }

    /// <summary>Reads an image; <paramref name="owned"/> is the same bytes as an array nobody else changes (an ELF file is then parsed in place), or null (it is copied).</summary>
    private static ElfFile Read(ReadOnlySpan<byte> image, byte[]? owned, long maxSize, out BzImage? bzImage)
    {
        bzImage = null;
        if (IsElf(image))
        {
            return owned is null ? ElfFile.Parse(image) : ElfFile.ParseShared(owned);
        }

        if (!BzImage.HasMagic(image))
        {
            var seen = Convert.ToHexString(image[..Math.Min(4, image.Length)]);
            throw new ElfFormatException(
                $"not an ELF file or a bzImage: it starts with bytes {(seen.Length == 0 ? "(none, the file is empty)" : seen)} and has no \"HdrS\" at offset 0x{BzImage.MagicOffset:x}; "
                + "expected the ELF magic 7F454C46 (\\x7fELF) of a PV kernel, or a Linux bzImage's boot setup header (\"HdrS\" at 0x202)");
        }

        bzImage = BzImage.Parse(image);
        var vmlinux = bzImage.Decompress(image, Math.Min(maxSize, MaxSize));
        try
        {
            return ElfFile.ParseShared(vmlinux);
        }
        catch (ElfFormatException e)
        {
            throw new ElfFormatException($"the bzImage's {bzImage.CompressionName} payload (the vmlinux, {vmlinux.Length} bytes): {e.Message}");
        }
    }

    private static bool IsElf(ReadOnlySpan<byte> image) => image is [0x7f, (byte)'E', (byte)'L', (byte)'F', ..];
}
