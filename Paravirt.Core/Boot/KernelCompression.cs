namespace Paravirt.Core.Boot;

/// <summary>
/// How a Linux bzImage's payload (the compressed vmlinux) is compressed: Linux's CONFIG_KERNEL_*
/// choices, told apart by their magic as Xen's libxenguest does (<c>xc_dom_probe_bzimage_kernel</c>).
/// </summary>
public enum KernelCompression
{
    /// <summary>gzip (magic 1F 8B); its own trailer (ISIZE) is the vmlinux's size.</summary>
    Gzip,

    /// <summary>bzip2 (magic "BZh").</summary>
    Bzip2,

    /// <summary>xz (magic FD "7zXZ" 00), with Linux's x86 BCJ filter and CRC32 checks.</summary>
    Xz,

    /// <summary>The legacy .lzma format (LZMA-alone: 5 property bytes, an 8-byte size, the stream; magic 5D 00).</summary>
    Lzma,

    /// <summary>lzop's format (magic 89 "LZO" 00): recognized, not supported.</summary>
    Lzo,

    /// <summary>LZ4's legacy frame, as <c>lz4 -l</c> writes it (magic 02 21 4C 18, then blocks of at most 8 MiB).</summary>
    Lz4,

    /// <summary>Zstandard (magic 28 B5 2F FD).</summary>
    Zstd,
}
