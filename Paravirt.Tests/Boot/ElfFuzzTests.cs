using Paravirt.Core.Abi;
using Paravirt.Core.Boot.Elf;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>
/// Truncated and corrupted copies of real and built kernels: the reader, the notes and the scanner
/// either succeed or throw <see cref="ElfFormatException"/>, never anything else, and always finish.
/// Seeded, so a failure repeats.
/// </summary>
public sealed class ElfFuzzTests
{
    /// <summary>Parses, reads notes and (if asked) scans; false when the input was rejected as malformed.</summary>
    private static bool Survives(ArraySegment<byte> image, bool scan)
    {
        try
        {
            var elf = ElfFile.ParseShared(image);
            var notes = XenElfNotes.Read(elf);
            _ = notes.Features.Count + notes.Notes.Sum(n => n.ValueText.Length);
            if (scan)
            {
                _ = InstructionScanner.Scan(elf, notes.HypercallPage).Instructions;
            }

            return true;
        }
        catch (ElfFormatException e)
        {
            e.Message.Should().NotBeNullOrWhiteSpace();
            return false;
        }
    }

    private static byte[] BuiltKernel()
    {
        const ulong text = 0xffffffff80001000;
        var module = new TinyElf { Type = 1 }
            .Section(".text", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC | TinyElf.SHF_EXECINSTR, TinyElf.Code(0, a => { a.cli(); a.syscall(); a.ret(); }))
            .Build();
        return new TinyElf { Entry = text }
            .Load(text, TinyElf.Code(text, a => { a.mov(Iced.Intel.AssemblerRegisters.eax, 29); a.syscall(); a.call(text + 0x1000 + 64); a.hlt(); }))
            .Load(text + 0x10000, [0x90, 0x90, .. module])
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "linux")
            .XenString(ElfNote.XEN_ELFNOTE_FEATURES, "!writable_page_tables|pae_pgdir_above_4gb")
            .XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, text + 0x1000)
            .Note("Xen", ElfNote.XEN_ELFNOTE_L1_MFN_VALID, new byte[16])
            .Note("Xen", ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES, [1, 0, 0, 0])
            .Section(".text", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC | TinyElf.SHF_EXECINSTR, [0xc3], text)
            .Section("__xen_guest", TinyElf.SHT_PROGBITS, 0, "GUEST_OS=linux\0"u8.ToArray())
            .Build();
    }

    [Fact(Timeout = 120_000)]
    public async Task Every_Truncation_And_Random_Corruption_Of_A_Built_Kernel_Is_Parsed_Or_Rejected_Cleanly()
    {
        await Task.Run(
            () =>
            {
                var original = BuiltKernel();
                Survives(original, scan: true).Should().BeTrue("the intact file is well-formed");
                for (var n = 0; n < original.Length; n++)
                {
                    Survives(new ArraySegment<byte>(original, 0, n), scan: true);
                }

                var random = new Random(20260401);
                var copy = (byte[])original.Clone();
                var rejected = 0;
                for (var i = 0; i < 20_000; i++)
                {
                    original.CopyTo(copy, 0);
                    for (var k = random.Next(1, 5); k > 0; k--)
                    {
                        copy[random.Next(copy.Length)] = (byte)random.Next(256);
                    }

                    rejected += Survives(copy, scan: true) ? 0 : 1;
                }

                rejected.Should().BeGreaterThan(0, "some corruptions must hit a checked field");
            },
            TestContext.Current.CancellationToken);
    }

    [Fact(Timeout = 300_000)]
    public async Task Truncated_And_Corrupted_Copies_Of_PV_Grub_Are_Parsed_Or_Rejected_Cleanly()
    {
        var original = RealKernel.Bytes();
        await Task.Run(
            () =>
            {
                // Every truncation through the headers and tables, around the notes, and a spread of others.
                var lengths = Enumerable.Range(0, 0x400)
                    .Concat(Enumerable.Range(0x2056c8 - 16, 0x78 + 32))
                    .Concat(Enumerable.Range(0, 256).Select(i => (int)((long)original.Length * i / 256)))
                    .Where(n => n <= original.Length)
                    .Distinct();
                foreach (var n in lengths)
                {
                    var ok = Survives(new ArraySegment<byte>(original, 0, n), scan: false);
                    ok.Should().Be(n == original.Length, $"only the whole file is well-formed (length {n})");
                }

                // Corrupt bytes where the structure is (header, program and section headers, name
                // table, notes) and anywhere, and undo each change before the next.
                var random = new Random(17);
                var copy = (byte[])original.Clone();
                for (var i = 0; i < 4000; i++)
                {
                    var changed = new List<int>();
                    for (var k = random.Next(1, 4); k > 0; k--)
                    {
                        var at = random.Next(3) switch
                        {
                            0 => random.Next(0x280),
                            1 => 0x2056c8 + random.Next(0x78),
                            _ => random.Next(original.Length),
                        };
                        changed.Add(at);
                        copy[at] = (byte)random.Next(256);
                    }

                    Survives(copy, scan: i % 400 == 0);
                    foreach (var at in changed)
                    {
                        copy[at] = original[at];
                    }
                }
            },
            TestContext.Current.CancellationToken);
    }
}
