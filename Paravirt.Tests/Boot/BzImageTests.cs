using System.Buffers.Binary;
using Paravirt.Core.Boot;
using Paravirt.Core.Boot.Elf;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>
/// Linux bzImages through the PV builder, as libxenguest's bzImage loader takes them: the setup
/// header locates the payload, its magic picks the decompressor, the size trailer bounds it, and
/// the vmlinux inside goes through the ELF builder unchanged. bzImages are built in the test
/// around the standard test kernel (<see cref="TestBzImage"/>).
/// </summary>
public sealed class BzImageTests
{
    private static readonly byte[] Vmlinux = PvTestKernel.Standard().Build();

    public static TheoryData<KernelCompression> InProcessFormats() => [.. TestBzImage.InProcess];

    public static TheoryData<KernelCompression> AllFormats() =>
        [KernelCompression.Gzip, KernelCompression.Bzip2, KernelCompression.Xz, KernelCompression.Lzma, KernelCompression.Lz4, KernelCompression.Zstd];

    [Theory]
    [MemberData(nameof(InProcessFormats))]
    public void A_BzImage_Parses_To_The_Same_Kernel_As_Its_Vmlinux(KernelCompression format)
    {
        var image = TestBzImage.Build(format, Vmlinux);

        var k = PvKernel.Parse(image);
        var plain = PvKernel.Parse(Vmlinux);

        k.BzImage.Should().NotBeNull();
        k.BzImage!.Compression.Should().Be(format);
        k.BzImage.Protocol.Should().Be(0x020f);
        k.BzImage.ProtocolText.Should().Be("2.15");
        k.BzImage.SetupSectors.Should().Be(3);
        k.BzImage.PayloadOffset.Should().Be((4 * 512) + TestBzImage.Before);
        k.BzImage.DecompressedSize.Should().Be(Vmlinux.Length);
        k.Elf.Length.Should().Be(Vmlinux.Length);
        k.Elf.GetBytes(0, (ulong)Vmlinux.Length).ToArray().Should().Equal(Vmlinux);
        (k.Entry, k.VirtBase, k.KernelStart, k.KernelEnd, k.HypercallPage).Should().Be((plain.Entry, plain.VirtBase, plain.KernelStart, plain.KernelEnd, plain.HypercallPage));
        plain.BzImage.Should().BeNull();
    }

    [Theory]
    [MemberData(nameof(AllFormats))]
    public void Payloads_Written_By_The_Real_Tools_Decompress_To_The_Vmlinux(KernelCompression format)
    {
        // gzip -n -9, bzip2 -9, xz --x86 --lzma2, lzma -9, lz4 -l -9, zstd -19: the tools Linux's build runs.
        var image = TestBzImage.Wrap(TestBzImage.WithTool(format, Vmlinux));

        var bz = BzImage.Parse(image);

        bz.Compression.Should().Be(format);
        bz.Decompress(image, KernelImage.MaxSize).Should().Equal(Vmlinux);
    }

    [Theory]
    [MemberData(nameof(InProcessFormats))]
    public void The_Builder_Builds_The_Same_Domain_From_A_BzImage_As_From_Its_Vmlinux(KernelCompression format)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var free = hv.FreeFrames;

        var (fromBz, bootBz) = hv.CreatePvDomain(new DomainConfig { Name = "bz", MemoryMiB = 8 }, TestBzImage.Build(format, Vmlinux));
        var (fromElf, bootElf) = hv.CreatePvDomain(new DomainConfig { Name = "elf", MemoryMiB = 8 }, Vmlinux);

        bootBz.Should().BeEquivalentTo(bootElf, o => o.Excluding(b => b.L4Mfn).Excluding(b => b.PageTables));
        bootBz.PageTables.Select(t => (t.Pfn, t.Level)).Should().Equal(bootElf.PageTables.Select(t => (t.Pfn, t.Level)));
        fromBz.Destroy();
        fromElf.Destroy();
        hv.FreeFrames.Should().Be(free);
    }

    [Fact]
    public void Setup_Sects_Zero_Means_Four_Sectors()
    {
        var image = TestBzImage.Build(KernelCompression.Gzip, Vmlinux, setupSects: 0);

        var bz = BzImage.Parse(image);

        bz.SetupSectors.Should().Be(4);
        bz.PayloadOffset.Should().Be((5 * 512) + TestBzImage.Before);
        bz.Decompress(image, KernelImage.MaxSize).Should().Equal(Vmlinux);
    }

    [Fact]
    public void The_Oldest_Protocol_With_A_Payload_Field_2_08_Is_Accepted()
    {
        PvKernel.Parse(TestBzImage.Build(KernelCompression.Gzip, Vmlinux, protocol: 0x0208)).BzImage!.ProtocolText.Should().Be("2.08");
    }

    [Fact]
    public void An_Lz4_Payload_Over_8_MiB_Is_Read_Block_By_Block()
    {
        // A kernel with a 9 MiB data segment: two legacy blocks, 8 MiB and 1 MiB.
        var data = new byte[9 << 20];
        new Random(42).NextBytes(data.AsSpan(0, 1 << 16));
        for (var i = 1 << 16; i < data.Length; i++)
        {
            data[i] = (byte)(i * 7 / 4096);
        }

        var big = PvTestKernel.Standard().Load(PvTestKernel.Base + 0x10_0000, data, TinyElf.PF_R).Build();
        var payload = TestBzImage.Payload(KernelCompression.Lz4, big);

        var bz = BzImage.Parse(TestBzImage.Wrap(payload));
        var vmlinux = bz.Decompress(TestBzImage.Wrap(payload), KernelImage.MaxSize);

        vmlinux.Should().Equal(big);
        CountLz4Blocks(payload).Should().Be(2);
    }

    [Fact]
    public void An_Lz4_Magic_Between_Blocks_Starts_Another_Frame_As_Linux_And_Libxenguest_Read_It()
    {
        var half = Vmlinux.Length / 2;
        var first = TestBzImage.Lz4Legacy(Vmlinux[..half]);
        var second = TestBzImage.Lz4Legacy(Vmlinux[half..]);

        var image = TestBzImage.Wrap(TestBzImage.WithSize([.. first, .. second], Vmlinux.Length));

        BzImage.Parse(image).Decompress(image, KernelImage.MaxSize).Should().Equal(Vmlinux);
    }

    public static TheoryData<string, string> Refused() => new()
    {
        { "protocol 2.07", "the bzImage's boot protocol is 2.07 (0x0207 at 0x206); expected 2.08 or later" },
        { "header cut short", "the bzImage's setup header is cut short: the file is 560 bytes; expected at least 0x250" },
        { "payload offset past the end", "at or past the end of the" },
        { "payload length past the end", "runs past the end of the" },
        { "file truncated in the payload", "runs past the end of the" },
        { "tiny payload", "the bzImage's payload is 4 bytes; expected at least 8" },
        { "unknown magic", "starts with bytes 4C6F72656D20, no compression format Linux builds; expected gzip (1F8B), bzip2 (425A68), xz (FD377A585A00), lzma (5D00), lz4 (02214C18) or zstd (28B52FFD)" },
        { "lzo", "the bzImage's payload is LZO-compressed (magic 894C5A4F00, CONFIG_KERNEL_LZO); LZO is not supported here" },
        { "trailer too small for ELF", "says (in its last 4 bytes) that the kernel is 10 bytes; expected at least a 64-byte ELF header" },
        { "trailer says more than the data", "the bzImage's bzip2 payload decompresses to {half} bytes, but its size trailer says {whole+1}; expected exactly {whole+1} bytes" },
        { "trailer says less than the data", "decompresses to more than the" },
        { "gzip garbage", "the bzImage's gzip payload" },
        { "lz4 without frame magic", "the bzImage's lz4 payload starts with 02219999; expected LZ4's legacy frame magic 02214C18" },
        { "lz4 block past the payload", "the bzImage's lz4 payload has a block at offset 0x4 that claims 1000000 bytes, but" },
        { "lz4 block corrupt", "the bzImage's lz4 payload has a block at offset 0x4 (6 bytes) that does not decode into the" },
        { "lzma huge dictionary", "declares a 4278190080-byte dictionary; expected at most 134217728" },
        { "lzma header size disagrees", "the bzImage's lzma header says the vmlinux is 5 bytes" },
        { "payload not ELF", "the bzImage's gzip payload (the vmlinux, 100 bytes): not an ELF file: it starts with bytes 41414141" },
        { "neither ELF nor bzImage", "not an ELF file or a bzImage: it starts with bytes 4D5A0000 and has no \"HdrS\" at offset 0x202; expected the ELF magic 7F454C46 (\\x7fELF) of a PV kernel, or a Linux bzImage's boot setup header" },
        { "empty", "not an ELF file or a bzImage: it starts with bytes (none, the file is empty)" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void A_Broken_BzImage_Is_Refused_With_A_Message_And_Leaves_Nothing_Behind(string kind, string message)
    {
        var image = Break(kind);
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var free = hv.FreeFrames;

        var act = () => hv.CreatePvDomain(new DomainConfig { Name = "bz", MemoryMiB = 8 }, image);

        var e = act.Should().Throw<FormatException>().Which;
        e.Message.Should().Contain(message.Replace("{half}", $"{Vmlinux.Length / 2}", StringComparison.Ordinal).Replace("{whole+1}", $"{Vmlinux.Length + 1}", StringComparison.Ordinal));
        e.Message.Should().Contain("expected");
        (e is PvKernelException or ElfFormatException).Should().BeTrue();
        hv.Domains.Should().BeEmpty();
        hv.FreeFrames.Should().Be(free);
    }

    [Theory]
    [MemberData(nameof(AllFormats))]
    public void A_Truncated_Or_Corrupt_Payload_Is_Refused_In_Every_Format(KernelCompression format)
    {
        var payload = format == KernelCompression.Xz ? TestBzImage.WithTool(format, Vmlinux) : TestBzImage.Payload(format, Vmlinux);
        var body = payload.Length - (format == KernelCompression.Gzip ? 0 : 4);

        // The stream cut in half, the size trailer kept.
        var cut = TestBzImage.WithSize(payload[..(body / 2)], Vmlinux.Length);

        // The stream's second half overwritten with noise.
        var noisy = (byte[])payload.Clone();
        new Random(7).NextBytes(noisy.AsSpan(body / 2, (body / 2) - 8));

        foreach (var broken in new[] { cut, noisy })
        {
            var act = () => PvKernel.Parse(TestBzImage.Wrap(broken));

            act.Should().Throw<PvKernelException>().Which.Message.Should().Contain($"the bzImage's {KernelPayload.Name(format)} payload").And.Contain("expected");
        }
    }

    [Fact]
    public void A_Size_Trailer_Over_1_GiB_Is_Refused_Before_Anything_Is_Decompressed()
    {
        var payload = TestBzImage.Payload(KernelCompression.Lz4, Vmlinux);
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(payload.Length - 4), 1u << 31);

        var act = () => PvKernel.Parse(TestBzImage.Wrap(payload));

        act.Should().Throw<PvKernelException>().Which.Message.Should()
            .Be("the bzImage's lz4 payload says (in its last 4 bytes) that the kernel is 2147483648 bytes; expected at most 1073741824 (1 GiB, libxenguest's limit too)");
    }

    [Fact]
    public void A_Kernel_Larger_Than_The_Domain_Is_An_Argument_Error_Before_Anything_Is_Decompressed()
    {
        var payload = TestBzImage.Payload(KernelCompression.Gzip, Vmlinux);
        BinaryPrimitives.WriteUInt32LittleEndian(payload.AsSpan(payload.Length - 4), 9u << 20); // gzip's ISIZE: 9 MiB
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var free = hv.FreeFrames;

        var act = () => hv.CreatePvDomain(new DomainConfig { Name = "small", MemoryMiB = 8 }, TestBzImage.Wrap(payload));

        act.Should().Throw<ArgumentException>().Which.Message.Should()
            .Contain("domain 'small': 8 MiB is too small for this kernel: its bzImage's gzip payload decompresses to 9437184 bytes (its size trailer); expected more memory");
        hv.Domains.Should().BeEmpty();
        hv.FreeFrames.Should().Be(free);
    }

    [Fact]
    public void An_Elf_File_With_HdrS_At_0x202_Is_Still_Read_As_Elf()
    {
        var elf = PvTestKernel.Standard().Build();
        elf.Length.Should().BeGreaterThan(0x206);
        "HdrS"u8.CopyTo(elf.AsSpan(0x202)); // inside the code segment's bytes: harmless to the ELF reader

        KernelImage.IsBzImage(elf).Should().BeFalse();
        KernelImage.ReadElf(elf, KernelImage.MaxSize, out var bz).Length.Should().Be(elf.Length);
        bz.Should().BeNull();
    }

    private static int CountLz4Blocks(byte[] payload)
    {
        var blocks = 0;
        for (var pos = 4; pos < payload.Length - 4;)
        {
            var size = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(pos));
            pos += 4 + size;
            blocks++;
        }

        return blocks;
    }

    private static byte[] Break(string kind)
    {
        byte[] Gz() => TestBzImage.Build(KernelCompression.Gzip, Vmlinux);
        int PayloadAt(byte[] image) => (int)BzImage.Parse(image).PayloadOffset;
        byte[] Set32(byte[] b, int at, uint v)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at), v);
            return b;
        }

        byte[] WithTrailer(KernelCompression format, uint size)
        {
            var p = TestBzImage.Payload(format, Vmlinux);
            return TestBzImage.Wrap(Set32(p, p.Length - 4, size));
        }

        switch (kind)
        {
            case "protocol 2.07":
                return TestBzImage.Build(KernelCompression.Gzip, Vmlinux, protocol: 0x0207);
            case "header cut short":
                return Gz()[..0x230];
            case "payload offset past the end":
                {
                    var b = Gz();
                    return Set32(b, 0x248, (uint)b.Length);
                }

            case "payload length past the end":
                {
                    var b = Gz();
                    return Set32(b, 0x24c, (uint)b.Length);
                }

            case "file truncated in the payload":
                {
                    var b = Gz();
                    return b[..(PayloadAt(b) + 20)];
                }

            case "tiny payload":
                return TestBzImage.Wrap([0x1f, 0x8b, 0, 0]);
            case "unknown magic":
                return TestBzImage.Wrap(TestBzImage.WithSize("Lorem ipsum dolor sit amet"u8.ToArray(), 1000));
            case "lzo":
                return TestBzImage.Wrap(TestBzImage.WithSize([0x89, (byte)'L', (byte)'Z', (byte)'O', 0, 0x0d, 0x0a, 0x1a, 0x0a], 1000));
            case "trailer too small for ELF":
                return WithTrailer(KernelCompression.Zstd, 10);
            case "trailer says more than the data":
                {
                    // Half the vmlinux, compressed, claiming the whole plus one byte.
                    var p = TestBzImage.Payload(KernelCompression.Bzip2, Vmlinux[..(Vmlinux.Length / 2)]);
                    return TestBzImage.Wrap(Set32(p, p.Length - 4, (uint)Vmlinux.Length + 1));
                }

            case "trailer says less than the data":
                return WithTrailer(KernelCompression.Lzma, (uint)Vmlinux.Length - 1);
            case "gzip garbage":
                {
                    var p = new byte[4000];
                    new Random(3).NextBytes(p);
                    p[0] = 0x1f;
                    p[1] = 0x8b;
                    return TestBzImage.Wrap(Set32(p, p.Length - 4, (uint)Vmlinux.Length));
                }

            case "lz4 without frame magic":
                return TestBzImage.Wrap(TestBzImage.WithSize([0x02, 0x21, 0x99, 0x99, 1, 0, 0, 0, 0], Vmlinux.Length));
            case "lz4 block past the payload":
                {
                    var p = TestBzImage.Payload(KernelCompression.Lz4, Vmlinux);
                    return TestBzImage.Wrap(Set32(p, 4, 1000000));
                }

            case "lz4 block corrupt":
                {
                    // A block of one literal-run token claiming 15 + 255 literals, with 3 bytes behind it.
                    byte[] block = [0xf0, 0xff, 0x00, 1, 2, 3];
                    var p = TestBzImage.WithSize([0x02, 0x21, 0x4c, 0x18, (byte)block.Length, 0, 0, 0, .. block], Vmlinux.Length);
                    return TestBzImage.Wrap(p);
                }

            case "lzma huge dictionary":
                {
                    var p = TestBzImage.Payload(KernelCompression.Lzma, Vmlinux);
                    return TestBzImage.Wrap(Set32(p, 1, 0xff00_0000)); // the low byte stays 00: still lzma's magic 5D 00
                }

            case "lzma header size disagrees":
                {
                    var p = TestBzImage.Payload(KernelCompression.Lzma, Vmlinux);
                    BinaryPrimitives.WriteInt64LittleEndian(p.AsSpan(5), 5);
                    return TestBzImage.Wrap(p);
                }

            case "payload not ELF":
                return TestBzImage.Build(KernelCompression.Gzip, [.. Enumerable.Repeat((byte)'A', 100)]);
            case "neither ELF nor bzImage":
                return [(byte)'M', (byte)'Z', 0, 0, .. new byte[0x300]];
            case "empty":
                return [];
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "no such breakage");
        }
    }
}
