using System.Buffers.Binary;
using System.IO.Compression;
using K4os.Compression.LZ4;
using SharpCompress.Compressors.BZip2;
using SharpCompress.Compressors.LZMA;
using SharpCompress.Compressors.Xz;
using SharpCompress.Compressors.ZStandard;
using SharpCompressionMode = SharpCompress.Compressors.CompressionMode;

namespace Paravirt.Core.Boot;

/// <summary>
/// Decompresses a bzImage's payload to exactly the size Linux recorded for it, or refuses it with a
/// <see cref="PvKernelException"/>. Linux's build (scripts/Makefile.lib) appends the uncompressed
/// size as 4 little-endian bytes to every format but gzip, whose own ISIZE trailer is the same
/// thing; the decoders get the payload without that trailer, and the output must come to that
/// size, not a byte less or more (libxenguest checks the same for xz and lzma).
/// </summary>
/// <remarks>
/// The output buffer starts at the trailer's size only when that is plausible for the input (at
/// most 16 times the payload plus 1 MiB; real kernels compress 3–9 times) and otherwise grows with
/// what the decoder actually produces, so a corrupt size trailer costs no more memory than the
/// data behind it. Each decoder reports corrupt input in its own way (InvalidDataException,
/// IOException, ZstdException, index errors ...): all of them become the one refusal.
/// </remarks>
internal static class KernelPayload
{
    /// <summary>LZ4's legacy frame magic (0x184C2102, written little-endian: 02 21 4C 18).</summary>
    internal const uint Lz4LegacyMagic = 0x184C2102;

    /// <summary>The legacy frame's block size: every block decompresses to at most 8 MiB.</summary>
    internal const int Lz4LegacyBlockSize = 8 << 20;

    /// <summary>The largest LZMA dictionary accepted: libxenguest gives its lzma and xz decoders 128 MiB (LZMA_BLOCK_SIZE).</summary>
    internal const uint MaxLzmaDictionary = 128u << 20;

    /// <summary>The size trailer Linux appends (every format but gzip, where ISIZE plays its part).</summary>
    internal const int TrailerSize = 4;

    /// <summary>The format a payload's first bytes name, in libxenguest's order, or null.</summary>
    public static KernelCompression? Detect(ReadOnlySpan<byte> payload) => payload switch
    {
        [0x1f, 0x8b, ..] => KernelCompression.Gzip,
        [(byte)'B', (byte)'Z', (byte)'h', ..] => KernelCompression.Bzip2,
        [0xfd, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0x00, ..] => KernelCompression.Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => KernelCompression.Zstd,
        [0x5d, 0x00, ..] => KernelCompression.Lzma,
        [0x89, (byte)'L', (byte)'Z', (byte)'O', 0x00, ..] => KernelCompression.Lzo,

        // libxenguest matches two bytes; the whole 4-byte frame magic is checked when decoding.
        [0x02, 0x21, ..] => KernelCompression.Lz4,
        _ => null,
    };

    /// <summary>The format's usual name ("xz", "lz4" ...).</summary>
    public static string Name(KernelCompression format) => format switch
    {
        KernelCompression.Gzip => "gzip",
        KernelCompression.Bzip2 => "bzip2",
        KernelCompression.Xz => "xz",
        KernelCompression.Lzma => "lzma",
        KernelCompression.Lzo => "LZO",
        KernelCompression.Lz4 => "lz4",
        KernelCompression.Zstd => "zstd",
        _ => format.ToString(),
    };

    /// <summary>
    /// Decompresses <paramref name="payload"/> (the whole payload, size trailer included) to exactly
    /// <paramref name="size"/> bytes.
    /// </summary>
    /// <exception cref="PvKernelException">The payload is corrupt, truncated, or does not come to <paramref name="size"/> bytes.</exception>
    public static byte[] Decompress(KernelCompression format, byte[] payload, int size)
    {
        var name = Name(format);
        var body = payload.Length - TrailerSize;
        try
        {
            return format switch
            {
                // GZipStream would read a second member after the first; Linux writes one and nothing after it.
                KernelCompression.Gzip => ReadAll(new GZipStream(new MemoryStream(payload, writable: false), CompressionMode.Decompress), payload.Length, size, name),
                KernelCompression.Bzip2 => ReadAll(BZip2Stream.Create(Input(payload, 0, body), SharpCompressionMode.Decompress, decompressConcatenated: false), body, size, name),
                KernelCompression.Xz => ReadAll(new XZStream(Input(payload, 0, body)), body, size, name),
                KernelCompression.Zstd => ReadAll(new DecompressionStream(Input(payload, 0, body), leaveOpen: false), body, size, name),
                KernelCompression.Lzma => Lzma(payload, body, size),
                KernelCompression.Lz4 => Lz4Legacy(payload.AsSpan(0, body), size),
                _ => throw new PvKernelException($"the bzImage's payload is {name}-compressed, which this builder does not decompress; expected gzip, bzip2, xz, lzma, lz4 or zstd"),
            };
        }
        catch (Exception e) when (e is not PvKernelException and not OutOfMemoryException)
        {
            throw new PvKernelException($"the bzImage's {name} payload ({payload.Length} bytes) is corrupt or truncated: {e.Message}; expected a well-formed {name} stream of the vmlinux");
        }
    }

    private static MemoryStream Input(byte[] payload, int offset, int count) => new(payload, offset, count, writable: false);

    /// <summary>The first buffer size: the whole output when plausible for the input, else a start to grow from.</summary>
    private static int InitialCapacity(int size, int input) => (int)Math.Min(size, ((long)input * 16) + (1 << 20));

    /// <summary>Reads the stream to its end into exactly <paramref name="size"/> bytes, refusing less or more.</summary>
    private static byte[] ReadAll(Stream stream, int input, int size, string name)
    {
        using (stream)
        {
            var buffer = new byte[InitialCapacity(size, input)];
            var n = 0;
            while (true)
            {
                if (n == buffer.Length)
                {
                    if (n == size)
                    {
                        Span<byte> extra = stackalloc byte[1];
                        if (stream.Read(extra) != 0)
                        {
                            throw TooLong(name, size);
                        }

                        return buffer;
                    }

                    Array.Resize(ref buffer, (int)Math.Min(size, (long)buffer.Length * 2));
                }

                var read = stream.Read(buffer, n, buffer.Length - n);
                if (read == 0)
                {
                    throw TooShort(name, n, size);
                }

                n += read;
            }
        }
    }

    /// <summary>LZMA-alone: 5 property bytes, an 8-byte little-endian size (all ones: unknown, an end marker closes the stream), the stream.</summary>
    private static byte[] Lzma(byte[] payload, int body, int size)
    {
        const int header = 13;
        if (body < header)
        {
            throw new PvKernelException($"the bzImage's lzma payload is {payload.Length} bytes; expected at least its 13-byte header (properties and size) and the 4-byte size trailer");
        }

        var properties = payload.AsSpan(0, 5).ToArray();
        var dictionary = BinaryPrimitives.ReadUInt32LittleEndian(properties.AsSpan(1));
        if (dictionary > MaxLzmaDictionary)
        {
            throw new PvKernelException($"the bzImage's lzma stream declares a {dictionary}-byte dictionary; expected at most {MaxLzmaDictionary} (128 MiB, the decoder memory libxenguest allows)");
        }

        // The decoder allocates its window at the dictionary's size; a window as large as the whole
        // output decodes the same stream, so a small kernel with a large dictionary costs no more.
        BinaryPrimitives.WriteUInt32LittleEndian(properties.AsSpan(1), Math.Min(dictionary, (uint)Math.Max(size, 4096)));
        var declared = BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(5));
        if (declared != -1 && declared != size)
        {
            throw new PvKernelException($"the bzImage's lzma header says the vmlinux is {declared} bytes, its size trailer {size}; expected the two to agree");
        }

        var stream = LzmaStream.Create(properties, Input(payload, header, body - header), body - header, declared);
        return ReadAll(stream, body, size, "lzma");
    }

    /// <summary>
    /// LZ4's legacy frame (lz4 -l, Linux's CONFIG_KERNEL_LZ4): the magic, then blocks, each a 4-byte
    /// little-endian compressed size and an LZ4 block of at most 8 MiB; a size equal to the magic
    /// starts another frame (Linux's and libxenguest's decoders skip it and go on); the blocks end
    /// with the input.
    /// </summary>
    private static byte[] Lz4Legacy(ReadOnlySpan<byte> input, int size)
    {
        if (input.Length < 4 || BinaryPrimitives.ReadUInt32LittleEndian(input) != Lz4LegacyMagic)
        {
            throw new PvKernelException($"the bzImage's lz4 payload starts with {Convert.ToHexString(input[..Math.Min(4, input.Length)])}; expected LZ4's legacy frame magic 02214C18 (lz4 -l)");
        }

        var maxBlock = LZ4Codec.MaximumOutputSize(Lz4LegacyBlockSize);
        var output = new byte[InitialCapacity(size, input.Length)];
        var n = 0;
        var pos = 4;
        while (pos < input.Length)
        {
            if (input.Length - pos < 4)
            {
                throw new PvKernelException($"the bzImage's lz4 payload ends {input.Length - pos} bytes into a block header at offset 0x{pos:x}; expected a 4-byte block size");
            }

            var block = BinaryPrimitives.ReadUInt32LittleEndian(input[pos..]);
            pos += 4;
            if (block == Lz4LegacyMagic)
            {
                continue;
            }

            if (block > (uint)(input.Length - pos))
            {
                throw new PvKernelException($"the bzImage's lz4 payload has a block at offset 0x{pos - 4:x} that claims {block} bytes, but {input.Length - pos} bytes remain; expected the block inside the payload");
            }

            if (block > (uint)maxBlock)
            {
                throw new PvKernelException($"the bzImage's lz4 payload has a block at offset 0x{pos - 4:x} that claims {block} bytes; expected at most {maxBlock}, the most an 8 MiB block compresses to");
            }

            var room = Math.Min(size - n, Lz4LegacyBlockSize);
            if (n + room > output.Length)
            {
                Array.Resize(ref output, (int)Math.Min(size, Math.Max((long)output.Length * 2, (long)n + room)));
            }

            var got = LZ4Codec.Decode(input.Slice(pos, (int)block), output.AsSpan(n, room));
            if (got < 0)
            {
                throw room == 0
                    ? TooLong("lz4", size)
                    : new PvKernelException($"the bzImage's lz4 payload has a block at offset 0x{pos - 4:x} ({block} bytes) that does not decode into the {room} bytes left for it; expected a valid LZ4 block of at most 8 MiB that fits the size trailer's {size} bytes");
            }

            n += got;
            pos += (int)block;
        }

        return n == size ? output : throw TooShort("lz4", n, size);
    }

    private static PvKernelException TooShort(string name, int got, int size) =>
        new($"the bzImage's {name} payload decompresses to {got} bytes, but its size trailer says {size}; expected exactly {size} bytes (the payload is truncated or corrupt)");

    private static PvKernelException TooLong(string name, int size) =>
        new($"the bzImage's {name} payload decompresses to more than the {size} bytes its size trailer says; expected exactly {size} bytes (the payload or its trailer is corrupt)");
}
