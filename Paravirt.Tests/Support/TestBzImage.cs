using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using K4os.Compression.LZ4;
using Paravirt.Core.Boot;
using SharpCompress.Compressors.BZip2;
using SharpCompress.Compressors.LZMA;
using SharpCompress.Compressors.ZStandard;
using SharpCompressionMode = SharpCompress.Compressors.CompressionMode;

namespace Paravirt.Tests.Support;

/// <summary>
/// Small Linux bzImages for tests, laid out from boot.rst (our own writer): a boot sector with the
/// setup header (setup_sects at 0x1f1, "HdrS" at 0x202, the protocol at 0x206, payload_offset and
/// payload_length at 0x248/0x24c), the real-mode setup sectors, then the protected-mode part: some
/// decompressor bytes, the payload, and more bytes after it, as a real bzImage has. The payload is
/// compressed as Linux's build compresses it (scripts/Makefile.lib: the format's own output, then
/// the 4-byte little-endian size — except gzip, whose ISIZE is that size), in-process where a
/// library writes the format, else with the real command-line tool.
/// </summary>
internal static class TestBzImage
{
    /// <summary>Bytes of "decompressor" before the payload in the protected-mode part.</summary>
    public const int Before = 0x2cc;

    /// <summary>Bytes after the payload (Linux has the rest of its decompressor and a CRC there).</summary>
    public const int After = 0x94;

    /// <summary>The formats a library here writes; xz needs the <c>xz</c> tool.</summary>
    public static readonly KernelCompression[] InProcess =
        [KernelCompression.Gzip, KernelCompression.Bzip2, KernelCompression.Lzma, KernelCompression.Lz4, KernelCompression.Zstd];

    public static readonly TimeSpan ToolBound = TimeSpan.FromSeconds(60);

    /// <summary>A bzImage of <paramref name="vmlinux"/> compressed in-process (xz: with the xz tool).</summary>
    public static byte[] Build(KernelCompression format, byte[] vmlinux, ushort protocol = 0x020f, byte setupSects = 3) =>
        Wrap(format == KernelCompression.Xz ? WithTool(format, vmlinux) : Payload(format, vmlinux), protocol, setupSects);

    /// <summary>Wraps a payload (trailer included) in a setup header and protected-mode bytes around it.</summary>
    public static byte[] Wrap(byte[] payload, ushort protocol = 0x020f, byte setupSects = 3)
    {
        var realSects = setupSects == 0 ? 4 : setupSects;
        var pm = (realSects + 1) * 512;
        var image = new byte[pm + Before + payload.Length + After];
        image[0] = (byte)'M';
        image[1] = (byte)'Z';
        image[0x1f1] = setupSects;
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(0x1fe), 0xaa55); // boot_flag
        "HdrS"u8.CopyTo(image.AsSpan(0x202));
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(0x206), protocol);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x248), Before);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x24c), (uint)payload.Length);

        // Something recognizable in the setup sectors and the decompressor, never a payload magic.
        image.AsSpan(0x250, pm - 0x250).Fill(0x90);
        image.AsSpan(pm, Before).Fill(0xcc);
        payload.CopyTo(image, pm + Before);
        image.AsSpan(pm + Before + payload.Length).Fill(0xee);
        return image;
    }

    /// <summary>The payload Linux's build makes of <paramref name="vmlinux"/>, compressed by a library.</summary>
    public static byte[] Payload(KernelCompression format, byte[] vmlinux) => format switch
    {
        KernelCompression.Gzip => Gzip(vmlinux),
        KernelCompression.Bzip2 => WithSize(Bzip2(vmlinux), vmlinux.Length),
        KernelCompression.Lzma => WithSize(Lzma(vmlinux), vmlinux.Length),
        KernelCompression.Lz4 => WithSize(Lz4Legacy(vmlinux), vmlinux.Length),
        KernelCompression.Zstd => WithSize(Zstd(vmlinux), vmlinux.Length),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "no in-process writer; use WithTool"),
    };

    /// <summary>The payload Linux's build makes, compressed with the format's command-line tool (its flags as in Linux's Makefile.lib).</summary>
    public static byte[] WithTool(KernelCompression format, byte[] vmlinux) => format switch
    {
        KernelCompression.Gzip => Tool("gzip", "gzip", ["-n", "-9", "-c"], vmlinux),
        KernelCompression.Bzip2 => WithSize(Tool("bzip2", "bzip2", ["-9", "-c"], vmlinux), vmlinux.Length),
        KernelCompression.Lzma => WithSize(Tool("lzma", "xz-utils", ["-9", "-c"], vmlinux), vmlinux.Length),

        // scripts/xz_wrap.sh for x86: the BCJ filter, then LZMA2; CRC32 checks, as the kernel's xz decoder wants.
        KernelCompression.Xz => WithSize(Tool("xz", "xz-utils", ["--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"], vmlinux), vmlinux.Length),
        KernelCompression.Lz4 => WithSize(Tool("lz4", "lz4", ["-l", "-9", "-c"], vmlinux), vmlinux.Length),
        KernelCompression.Zstd => WithSize(Tool("zstd", "zstd", ["-19", "-c", "-q"], vmlinux), vmlinux.Length),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "no tool"),
    };

    /// <summary>Appends Linux's size trailer (scripts/Makefile.lib's size_append).</summary>
    public static byte[] WithSize(byte[] compressed, int size)
    {
        var result = new byte[compressed.Length + 4];
        compressed.CopyTo(result, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(compressed.Length), (uint)size);
        return result;
    }

    /// <summary>LZ4's legacy frame: the magic, then per 8 MiB of input a 4-byte compressed size and an LZ4 block.</summary>
    public static byte[] Lz4Legacy(byte[] data)
    {
        var output = new MemoryStream();
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(word, 0x184C2102);
        output.Write(word);
        for (var at = 0; at < data.Length; at += 8 << 20)
        {
            var chunk = data.AsSpan(at, Math.Min(8 << 20, data.Length - at));
            var block = new byte[LZ4Codec.MaximumOutputSize(chunk.Length)];
            var n = LZ4Codec.Encode(chunk, block, LZ4Level.L09_HC);
            BinaryPrimitives.WriteUInt32LittleEndian(word, (uint)n);
            output.Write(word);
            output.Write(block, 0, n);
        }

        return output.ToArray();
    }

    private static byte[] Gzip(byte[] data)
    {
        var output = new MemoryStream();
        using (var z = new GZipStream(output, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            z.Write(data);
        }

        return output.ToArray();
    }

    private static byte[] Bzip2(byte[] data)
    {
        var output = new MemoryStream();
        using (var z = BZip2Stream.Create(output, SharpCompressionMode.Compress, decompressConcatenated: false, leaveOpen: true))
        {
            z.Write(data);
            z.Finish();
        }

        return output.ToArray();
    }

    /// <summary>LZMA-alone (.lzma): the 5 property bytes, the size as "unknown" (all ones, as lzma writes from a pipe), the stream with an end marker.</summary>
    private static byte[] Lzma(byte[] data)
    {
        var body = new MemoryStream();
        byte[] properties;
        using (var z = LzmaStream.Create(new LzmaEncoderProperties(eos: true, dictionary: 1 << 20), false, body))
        {
            z.Write(data);
            properties = z.Properties;
        }

        var output = new MemoryStream();
        output.Write(properties);
        output.Write([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        output.Write(body.ToArray());
        return output.ToArray();
    }

    private static byte[] Zstd(byte[] data)
    {
        var output = new MemoryStream();
        using (var z = new CompressionStream(output, level: 19, leaveOpen: true))
        {
            z.Write(data);
        }

        return output.ToArray();
    }

    /// <summary>Runs a compressor from stdin to stdout; fails (never skips) naming the Debian package when it is missing.</summary>
    private static byte[] Tool(string tool, string package, string[] args, byte[] input)
    {
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
            .Where(d => d.Length > 0).Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException($"{tool} is not installed; install it with: apt-get install -y {package} (./test.sh does)");
        var psi = new ProcessStartInfo(path) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        var output = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(output);
        var errors = p.StandardError.ReadToEndAsync();
        p.StandardInput.BaseStream.Write(input);
        p.StandardInput.Close();
        if (!p.WaitForExit(ToolBound))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish within {ToolBound.TotalSeconds} s");
        }

        copy.Wait(ToolBound);
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{tool} {string.Join(' ', args)} exited with {p.ExitCode}: {errors.Result.Trim()}");
        }

        return output.ToArray();
    }
}
