using System.Buffers.Binary;

namespace Paravirt.Core.Boot;

/// <summary>
/// A Linux x86 bzImage, as Xen's libxenguest reads one (<c>xg_dom_bzimageloader.c</c>): the boot
/// setup header (Linux's Documentation/arch/x86/boot.rst) says where the compressed vmlinux — an
/// ELF file — lies, and its magic says how it is compressed. Only the header is read here;
/// <see cref="Decompress"/> produces the vmlinux, which the ELF domain builder then takes as it
/// takes any PV kernel. Every way the header or payload can be wrong is a
/// <see cref="PvKernelException"/> that says what was found and what was expected.
/// </summary>
public sealed class BzImage
{
    /// <summary>Where the setup header's magic "HdrS" lies (the <c>header</c> field).</summary>
    public const int MagicOffset = 0x202;

    /// <summary>The oldest boot protocol accepted: 2.08 added payload_offset and payload_length.</summary>
    public const ushort MinimumProtocol = 0x0208;

    /// <summary>The setup header through payload_length (libxenguest's <c>sizeof(struct setup_header)</c>).</summary>
    public const int HeaderEnd = 0x250;

    private const int SetupSectsOffset = 0x1f1;
    private const int VersionOffset = 0x206;
    private const int PayloadOffsetOffset = 0x248;
    private const int PayloadLengthOffset = 0x24c;
    private const int SectorSize = 512;

    private BzImage(int setupSectors, ushort protocol, long payloadOffset, int payloadLength, KernelCompression compression, long decompressedSize)
    {
        SetupSectors = setupSectors;
        Protocol = protocol;
        PayloadOffset = payloadOffset;
        PayloadLength = payloadLength;
        Compression = compression;
        DecompressedSize = decompressedSize;
    }

    /// <summary>setup_sects, with boot.rst's rule that 0 means 4: the real-mode code is this many 512-byte sectors after the boot sector.</summary>
    public int SetupSectors { get; }

    /// <summary>The boot protocol version (0x020f is 2.15).</summary>
    public ushort Protocol { get; }

    /// <summary>The protocol as "2.15".</summary>
    public string ProtocolText => $"{Protocol >> 8}.{Protocol & 0xff:d2}";

    /// <summary>Where the payload starts in the file: the protected-mode code's start, (setup_sects + 1) × 512, plus payload_offset.</summary>
    public long PayloadOffset { get; }

    /// <summary>payload_length: the compressed vmlinux with Linux's 4-byte size trailer.</summary>
    public int PayloadLength { get; }

    /// <summary>The payload's compression, from its magic.</summary>
    public KernelCompression Compression { get; }

    /// <summary>The format's usual name ("xz", "lz4" ...).</summary>
    public string CompressionName => KernelPayload.Name(Compression);

    /// <summary>The vmlinux's size, from the payload's last 4 bytes (Linux's size trailer, gzip's ISIZE).</summary>
    public long DecompressedSize { get; }

    /// <summary>True when the image carries the setup header's magic "HdrS" at 0x202: it claims to be a bzImage.</summary>
    public static bool HasMagic(ReadOnlySpan<byte> image) =>
        image.Length >= MagicOffset + 4 && image.Slice(MagicOffset, 4).SequenceEqual("HdrS"u8);

    /// <summary>Reads and checks the setup header and the payload's place, format and size trailer (nothing is decompressed).</summary>
    /// <exception cref="PvKernelException">No "HdrS" magic, a protocol older than 2.08, a payload outside the file, an unknown or unsupported (LZO) format, or a size trailer too small for an ELF file.</exception>
    public static BzImage Parse(ReadOnlySpan<byte> image)
    {
        if (!HasMagic(image))
        {
            throw new PvKernelException($"not a bzImage: the {image.Length}-byte file has no \"HdrS\" at offset 0x{MagicOffset:x}; expected a Linux x86 boot setup header");
        }

        if (image.Length < HeaderEnd)
        {
            throw new PvKernelException($"the bzImage's setup header is cut short: the file is {image.Length} bytes; expected at least 0x{HeaderEnd:x} ({HeaderEnd}) bytes, through payload_length");
        }

        var protocol = BinaryPrimitives.ReadUInt16LittleEndian(image[VersionOffset..]);
        var version = $"{protocol >> 8}.{protocol & 0xff:d2}";
        if (protocol < MinimumProtocol)
        {
            throw new PvKernelException($"the bzImage's boot protocol is {version} (0x{protocol:x4} at 0x{VersionOffset:x}); expected 2.08 or later, whose header says where the compressed kernel lies (payload_offset, payload_length)");
        }

        // boot.rst: "If this field is 0, the real value is 4." (libxenguest takes the field as it is.)
        var setupSects = image[SetupSectsOffset] == 0 ? 4 : image[SetupSectsOffset];
        var protectedMode = (long)(setupSects + 1) * SectorSize;
        var payloadOffset = BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadOffsetOffset..]);
        var payloadLength = BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadLengthOffset..]);
        var start = protectedMode + payloadOffset;
        if (start >= image.Length)
        {
            throw new PvKernelException($"the bzImage's payload starts at file offset 0x{start:x} ((setup_sects {setupSects} + 1) × 512 + payload_offset 0x{payloadOffset:x}), at or past the end of the {image.Length}-byte file; expected it inside the file");
        }

        if (payloadLength > image.Length - start)
        {
            throw new PvKernelException($"the bzImage's payload [0x{start:x}, +0x{payloadLength:x}) runs past the end of the {image.Length}-byte file; expected payload_offset + payload_length inside the file (is it truncated?)");
        }

        var payload = image.Slice((int)start, (int)payloadLength);
        if (payload.Length < 8)
        {
            throw new PvKernelException($"the bzImage's payload is {payload.Length} bytes; expected at least 8: a format's magic, its data and the 4-byte size Linux appends");
        }

        var compression = KernelPayload.Detect(payload)
            ?? throw new PvKernelException($"the bzImage's payload at file offset 0x{start:x} starts with bytes {Convert.ToHexString(payload[..Math.Min(6, payload.Length)])}, no compression format Linux builds; expected gzip (1F8B), bzip2 (425A68), xz (FD377A585A00), lzma (5D00), lz4 (02214C18) or zstd (28B52FFD)");
        if (compression == KernelCompression.Lzo)
        {
            throw new PvKernelException("the bzImage's payload is LZO-compressed (magic 894C5A4F00, CONFIG_KERNEL_LZO); LZO is not supported here, as no LZO decoder is bundled; expected a kernel built with gzip, bzip2, xz, lzma, lz4 or zstd");
        }

        var size = BinaryPrimitives.ReadUInt32LittleEndian(payload[^KernelPayload.TrailerSize..]);
        if (size < Elf.Elf64.EhdrSize)
        {
            throw new PvKernelException($"the bzImage's {KernelPayload.Name(compression)} payload says (in its last 4 bytes) that the kernel is {size} bytes; expected at least a {Elf.Elf64.EhdrSize}-byte ELF header");
        }

        return new BzImage(setupSects, protocol, start, (int)payloadLength, compression, size);
    }

    /// <summary>
    /// Decompresses the payload of <paramref name="image"/> (the bytes this header was read from)
    /// to the vmlinux, refusing one that would exceed <paramref name="maxSize"/> bytes (or <see cref="KernelImage.MaxSize"/>, 1 GiB).
    /// </summary>
    /// <exception cref="PvKernelException">The size trailer exceeds <paramref name="maxSize"/>, or the payload is corrupt, truncated or of the wrong size.</exception>
    public byte[] Decompress(ReadOnlySpan<byte> image, long maxSize)
    {
        var limit = Math.Min(maxSize, KernelImage.MaxSize);
        if (DecompressedSize > limit)
        {
            throw new PvKernelException($"the bzImage's {CompressionName} payload says (in its last 4 bytes) that the kernel is {DecompressedSize} bytes; expected at most {limit}{(limit == KernelImage.MaxSize ? " (1 GiB, libxenguest's limit too)" : "")}");
        }

        if (PayloadOffset + PayloadLength > image.Length)
        {
            throw new ArgumentException($"the image is {image.Length} bytes, but this bzImage's payload ends at {PayloadOffset + PayloadLength}; expected the image the header was read from", nameof(image));
        }

        var payload = image.Slice((int)PayloadOffset, PayloadLength).ToArray();
        return KernelPayload.Decompress(Compression, payload, (int)DecompressedSize);
    }
}
