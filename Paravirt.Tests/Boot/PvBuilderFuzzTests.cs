using System.Buffers.Binary;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>
/// Corrupted PV kernels through the whole builder: each either builds a domain or is refused with a
/// <see cref="FormatException"/> (bad image) or <see cref="ArgumentException"/> (does not fit), never
/// anything else, always finishing, and never leaking a frame. Seeded, so a failure repeats.
/// </summary>
public sealed class PvBuilderFuzzTests
{
    private static readonly ulong[] Interesting =
        [0, 1, 0x1000, 0xfff, ulong.MaxValue, ulong.MaxValue - 0xfff, 0x0000_8000_0000_0000, 0xffff_8000_0000_0000, 0xffff_8800_0000_0000, PvTestKernel.Base, PvTestKernel.Text, 0x0000_0080_0000_0000, 1UL << 40];

    [Fact(Timeout = 180_000)]
    public async Task Corrupted_Kernels_Build_Or_Are_Refused_Cleanly_And_Leave_No_Frame_Behind()
    {
        await Task.Run(
            () =>
            {
                var seeds = new[]
                {
                    PvTestKernel.Standard().Build(),
                    PvTestKernel.Standard().XenNumber(ElfNote.XEN_ELFNOTE_INIT_P2M, 0x0000_0080_0000_0000).XenNumber(ElfNote.XEN_ELFNOTE_MOD_START_PFN, 1, 4).Build(),
                };
                using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
                var free = hv.FreeFrames;
                var rng = new Random(10_2026);
                int built = 0, refused = 0;
                for (var i = 0; i < 1500; i++)
                {
                    var image = (byte[])seeds[i % seeds.Length].Clone();
                    for (var m = rng.Next(1, 4); m > 0; m--)
                    {
                        var at = rng.Next(image.Length);
                        if (rng.Next(2) == 0 || at > image.Length - 8)
                        {
                            image[at] = (byte)rng.Next(256);
                        }
                        else
                        {
                            BinaryPrimitives.WriteUInt64LittleEndian(image.AsSpan(at), Interesting[rng.Next(Interesting.Length)] + (ulong)rng.Next(-2, 3));
                        }
                    }

                    var ramdisk = rng.Next(3) == 0 ? new byte[rng.Next(1, 20000)] : [];
                    try
                    {
                        var (dom, boot) = hv.CreatePvDomain(new DomainConfig { Name = "fuzz", MemoryMiB = 8 }, image, ramdisk);
                        boot.PageTables.Should().NotBeEmpty();
                        (boot.VirtEnd - boot.VirtBase).Should().BeLessThanOrEqualTo(8UL << 20);
                        dom.Destroy();
                        built++;
                    }
                    catch (Exception e) when (e is FormatException or ArgumentException)
                    {
                        e.Message.Should().NotBeNullOrWhiteSpace();
                        if (e is Paravirt.Core.Boot.PvKernelException or ArgumentException)
                        {
                            e.Message.Should().Contain("expected", $"case {i}: the builder's refusals say what was expected: {e.Message}");
                        }

                        refused++;
                    }

                    hv.Domains.Should().BeEmpty($"case {i} leaves no domain");
                }

                built.Should().BeGreaterThan(50, "many corruptions hit bytes that do not matter");
                refused.Should().BeGreaterThan(50);
                hv.FreeFrames.Should().Be(free, "every frame came back");
            },
            TestContext.Current.CancellationToken);
    }
}
