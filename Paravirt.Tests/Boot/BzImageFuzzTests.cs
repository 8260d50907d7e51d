using System.Buffers.Binary;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>
/// Corrupted bzImages, in every format, through the whole builder: each either builds a domain or
/// is refused with a <see cref="FormatException"/> (bad header, payload or kernel) or
/// <see cref="ArgumentException"/> (does not fit), whatever the decompressor meets — never another
/// exception — and never leaks a frame. Seeded, so a failure repeats.
/// </summary>
public sealed class BzImageFuzzTests
{
    private static readonly uint[] Interesting =
        [0, 1, 3, 4, 7, 8, 63, 64, 0x200, 0x1000, 0x24c, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff_fffc, 8u << 20, (8u << 20) + 1, 1u << 30, KernelPayload.Lz4LegacyMagic];

    [Fact(Timeout = 300_000)]
    public async Task Corrupted_BzImages_Build_Or_Are_Refused_Cleanly_And_Leave_No_Frame_Behind()
    {
        await Task.Run(
            () =>
            {
                var vmlinux = PvTestKernel.Standard().Build();
                var seeds = new[] { KernelCompression.Gzip, KernelCompression.Bzip2, KernelCompression.Xz, KernelCompression.Lzma, KernelCompression.Lz4, KernelCompression.Zstd }
                    .Select(f => TestBzImage.Build(f, vmlinux)).ToArray();
                using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
                var free = hv.FreeFrames;
                var rng = new Random(12_2026);
                int built = 0, refused = 0;
                var refusedBy = new Dictionary<string, int>();
                for (var i = 0; i < 1800; i++)
                {
                    var seed = seeds[i % seeds.Length];
                    var image = Mutate((byte[])seed.Clone(), BzImage.Parse(seed), rng);
                    try
                    {
                        var (dom, boot) = hv.CreatePvDomain(new DomainConfig { Name = "fuzz", MemoryMiB = 8 }, image);
                        boot.PageTables.Should().NotBeEmpty();
                        dom.Destroy();
                        built++;
                    }
                    catch (Exception e) when (e is FormatException or ArgumentException)
                    {
                        e.Message.Should().NotBeNullOrWhiteSpace();
                        if (e is PvKernelException or ArgumentException)
                        {
                            e.Message.Should().Contain("expected", $"case {i}: the builder's refusals say what was expected: {e.Message}");
                        }

                        var key = e.GetType().Name;
                        refusedBy[key] = refusedBy.GetValueOrDefault(key) + 1;
                        refused++;
                    }

                    hv.Domains.Should().BeEmpty($"case {i} leaves no domain");
                }

                TestContext.Current.TestOutputHelper?.WriteLine($"built {built}, refused {refused}: {string.Join(", ", refusedBy.Select(p => $"{p.Key} {p.Value}"))}");
                built.Should().BeGreaterThan(50, "many corruptions hit bytes that do not matter (setup sectors, bytes around the payload)");
                refused.Should().BeGreaterThan(500);
                hv.FreeFrames.Should().Be(free, "every frame came back");
            },
            TestContext.Current.CancellationToken);
    }

    /// <summary>One to three corruptions: header fields, payload bytes, the size trailer, or a truncation.</summary>
    private static byte[] Mutate(byte[] image, BzImage bz, Random rng)
    {
        var payloadStart = (int)bz.PayloadOffset;
        var payloadEnd = payloadStart + bz.PayloadLength;
        for (var m = rng.Next(1, 4); m > 0; m--)
        {
            switch (rng.Next(6))
            {
                case 0:
                    // A byte of the setup header (setup_sects, HdrS, version, payload fields ...).
                    image[0x1f1 + rng.Next(0x250 - 0x1f1)] = (byte)rng.Next(256);
                    break;
                case 1:
                    // A header field set to an interesting value.
                    var field = new[] { 0x206, 0x248, 0x24c }[rng.Next(3)];
                    BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(field), Interesting[rng.Next(Interesting.Length)]);
                    break;
                case 2:
                case 3:
                    // Payload bytes, the decompressors' input.
                    image[payloadStart + rng.Next(bz.PayloadLength)] = (byte)rng.Next(256);
                    break;
                case 4:
                    // The size trailer.
                    BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(payloadEnd - 4), Interesting[rng.Next(Interesting.Length)] + (uint)rng.Next(-2, 3));
                    break;
                default:
                    // A truncated file.
                    return image[..rng.Next(image.Length)];
            }
        }

        return image;
    }
}
