using System.Buffers.Binary;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot.Elf;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>The ELF64 reader and the Xen notes, on files built here and on Debian's PV GRUB.</summary>
public sealed class ElfFileTests
{
    private static TinyElf Kernel() => new TinyElf { Entry = 0xffffffff80001000 }
        .Load(0xffffffff80001000, TinyElf.Code(0xffffffff80001000, a => a.ret()))
        .Load(0xffffffff80200000, new byte[32], TinyElf.PF_R | TinyElf.PF_W, memSize: 0x3000);

    [Fact]
    public void Reads_Header_Segments_Sections_And_Notes_Of_A_Built_File()
    {
        var image = Kernel()
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "linux")
            .Section(".text", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC | TinyElf.SHF_EXECINSTR, [0xc3], 0xffffffff80001000)
            .Build();

        var elf = ElfFile.Parse(image);

        elf.Header.Entry.Should().Be(0xffffffff80001000);
        elf.Header.TypeName.Should().Be("EXEC");
        elf.Segments.Should().HaveCount(3);
        elf.Segments[0].Should().Match<ElfSegment>(s => s.IsLoad && s.IsExecutable && s.VirtualAddress == 0xffffffff80001000 && s.FileSize == 1);
        elf.Segments[1].Should().Match<ElfSegment>(s => s.IsLoad && !s.IsExecutable && s.FileSize == 32 && s.MemorySize == 0x3000);
        elf.Segments[2].IsNote.Should().BeTrue();
        elf.GetBytes(elf.Segments[0]).ToArray().Should().Equal(0xc3);
        elf.Sections.Select(s => s.Name).Should().Equal("", ".text", ".shstrtab");
        elf.FindSection(".text")!.Value.IsExecutable.Should().BeTrue();
        elf.Notes.Should().ContainSingle().Which.Should().Match<ElfNoteRecord>(n => n.Name == "Xen" && n.Type == 6);
    }

    [Fact]
    public void Decodes_Every_Documented_Xen_Note_Type()
    {
        var image = Kernel()
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "linux")
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_VERSION, "2.6")
            .XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
            .XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic")
            .XenString(ElfNote.XEN_ELFNOTE_PAE_MODE, "yes")
            .XenString(ElfNote.XEN_ELFNOTE_FEATURES, "!writable_page_tables|pae_pgdir_above_4gb|no_such_feature")
            .XenString(ElfNote.XEN_ELFNOTE_BSD_SYMTAB, "yes")
            .XenString(ElfNote.XEN_ELFNOTE_INFO, "A=B")
            .XenNumber(ElfNote.XEN_ELFNOTE_ENTRY, 0xffffffff80001000)
            .XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, 0xffffffff80002000)
            .XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, 0xffffffff80000000)
            .XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, 0, size: 4)
            .XenNumber(ElfNote.XEN_ELFNOTE_HV_START_LOW, 0xffff800000000000)
            .XenNumber(ElfNote.XEN_ELFNOTE_INIT_P2M, 0x8000000000)
            .XenNumber(ElfNote.XEN_ELFNOTE_SUSPEND_CANCEL, 1, size: 4)
            .XenNumber(ElfNote.XEN_ELFNOTE_MOD_START_PFN, 1, size: 4)
            .XenNumber(ElfNote.XEN_ELFNOTE_PHYS32_ENTRY, 0x1000040, size: 4)
            .Note("Xen", ElfNote.XEN_ELFNOTE_L1_MFN_VALID, [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
            .Note("Xen", ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES, [0x05, 0, 0, 0])
            .Note("GNU", 3, [1, 2, 3, 4])
            .Note("Xen", 99, [0xab])
            .Build();

        var x = XenElfNotes.Read(ElfFile.Parse(image));

        x.GuestOs.Should().Be("linux");
        x.GuestVersion.Should().Be("2.6");
        x.XenVersion.Should().Be("xen-3.0");
        x.Loader.Should().Be("generic");
        x.PaeMode.Should().Be("yes");
        x.BsdSymtab.Should().Be("yes");
        x.Info.Should().Equal("A=B");
        x.Entry.Should().Be(0xffffffff80001000);
        x.HypercallPage.Should().Be(0xffffffff80002000);
        x.VirtBase.Should().Be(0xffffffff80000000);
        x.PaddrOffset.Should().Be(0);
        x.HvStartLow.Should().Be(0xffff800000000000);
        x.InitP2m.Should().Be(0x8000000000);
        x.SuspendCancel.Should().Be(1);
        x.ModStartPfn.Should().Be(1);
        x.Phys32Entry.Should().Be(0x1000040);
        x.L1MfnValid.Should().Equal((1UL, 1UL));
        x.SupportedFeatureWords.Should().Equal(5u);
        x.Features.Should().Equal(
            new XenFeature("writable_page_tables", true, Features.XENFEAT_writable_page_tables),
            new XenFeature("pae_pgdir_above_4gb", false, Features.XENFEAT_pae_pgdir_above_4gb),
            new XenFeature("no_such_feature", false, null));
        x.Notes.Should().HaveCount(20, "the GNU note is not Xen's");
        x.Notes[^1].Should().Match<XenNote>(n => n.Name == "#99" && n.Kind == XenNoteKind.Unknown && n.ValueText == "ab");
        x.Notes.Single(n => n.Type == ElfNote.XEN_ELFNOTE_PADDR_OFFSET).ValueText.Should().Be("0x0");
    }

    [Fact]
    public void A_Repeated_Note_Overrides_The_Earlier_One_And_Both_Are_Listed()
    {
        var x = XenElfNotes.Read(ElfFile.Parse(Kernel()
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "first")
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "second")
            .Build()));

        x.GuestOs.Should().Be("second");
        x.Notes.Select(n => n.Text).Should().Equal("first", "second");
    }

    [Fact]
    public void Notes_Come_From_Note_Sections_When_There_Is_No_PT_NOTE_And_The_Legacy_Xen_Guest_String_Is_Read()
    {
        var image = new TinyElf { NotesAsSection = true }
            .Load(0x1000, [0xc3])
            .XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, 0x2000)
            .Section("__xen_guest", TinyElf.SHT_PROGBITS, 0, "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,PAE=yes,BSD_SYMTAB\0"u8.ToArray())
            .Build();

        var x = XenElfNotes.Read(ElfFile.Parse(image));

        x.HypercallPage.Should().Be(0x2000);
        x.LegacyGuestString.Should().Be("GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,PAE=yes,BSD_SYMTAB");
        x.LegacyGuestItems.Should().Contain(new KeyValuePair<string, string>("VIRT_BASE", "0xC0000000"))
            .And.Contain(new KeyValuePair<string, string>("BSD_SYMTAB", ""));
    }

    [Fact]
    public void A_String_Note_Without_A_NUL_Ends_In_Its_Padding_As_Linux_Writes_FEATURES()
    {
        // Linux's xen-head.S: ELFNOTE(Xen, XEN_ELFNOTE_FEATURES, .ascii "!writable_page_tables"): 21 bytes, no
        // NUL, then ELFNOTE's .balign 4 pads the descriptor with zeros. libelf reads the string through them.
        var image = Kernel()
            .Note("Xen", ElfNote.XEN_ELFNOTE_FEATURES, "!writable_page_tables"u8.ToArray())
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "linux")
            .Build();

        var x = XenElfNotes.Read(ElfFile.Parse(image));

        x.FeaturesString.Should().Be("!writable_page_tables");
        x.Features.Should().Equal(new XenFeature("writable_page_tables", true, Features.XENFEAT_writable_page_tables));
        x.GuestOs.Should().Be("linux");
    }

    [Fact]
    public void A_String_Note_Ends_At_Its_First_NUL_Inside_The_Descriptor()
    {
        var x = XenElfNotes.Read(ElfFile.Parse(Kernel().Note("Xen", ElfNote.XEN_ELFNOTE_LOADER, "generic\0junk\0"u8.ToArray()).Build()));

        x.Loader.Should().Be("generic");
    }

    [Fact]
    public void A_String_Note_Without_NUL_Or_Padding_Runs_On_Into_The_Next_Note_As_In_Libelf()
    {
        // "abcd" fills its words exactly; libelf's elf_strval reads on to the next NUL in the file:
        // the next note's namesz, 4 ("Xen\0"), is the bytes 04 00 00 00.
        var image = Kernel()
            .Note("Xen", ElfNote.XEN_ELFNOTE_GUEST_VERSION, "abcd"u8.ToArray())
            .XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "linux")
            .Build();

        var x = XenElfNotes.Read(ElfFile.Parse(image));

        x.GuestVersion.Should().Be("abcd\u0004");
        x.GuestOs.Should().Be("linux");
    }

    [Fact]
    public void A_String_Note_Of_The_Longest_Length_Libelf_Reads_Is_Accepted()
    {
        var text = new byte[XenElfNotes.MaxStringLength + 1];
        text.AsSpan(0, XenElfNotes.MaxStringLength).Fill((byte)'a');

        var x = XenElfNotes.Read(ElfFile.Parse(Kernel().Note("Xen", ElfNote.XEN_ELFNOTE_INFO, text).Build()));

        x.Info.Should().ContainSingle().Which.Should().HaveLength(XenElfNotes.MaxStringLength);
    }

    // Facts checked independently with binutils: `readelf -l -S -n /usr/lib/grub-xen/grub-x86_64-xen.bin`.
    [Fact]
    public void Reads_Debian_PV_Grub_As_Readelf_Does()
    {
        var elf = ElfFile.Open(RealKernel.Path());

        elf.Header.Entry.Should().Be(0);
        elf.Header.TypeName.Should().Be("EXEC");
        elf.Segments.Select(s => s.TypeName).Should().Equal("LOAD", "GNU_STACK", "LOAD", "NOTE");
        elf.Segments[0].Should().Match<ElfSegment>(s => s.Offset == 0x1000 && s.VirtualAddress == 0 && s.FileSize == 0xeaef && s.MemorySize == 0x41e1f0 && s.FlagsText == "RWX");
        elf.Segments[2].Should().Match<ElfSegment>(s => s.Offset == 0xfaef && s.VirtualAddress == 0x41e1f0 && s.FileSize == 0x1f5bd8 && s.MemorySize == 0x1f5bd8);
        elf.Segments[3].Should().Match<ElfSegment>(s => s.Offset == 0x2056c8 && s.FileSize == 0x78);
        elf.Sections.Select(s => s.Name).Should().Equal("", "", ".text", "mods", ".xen");
        elf.Notes.Should().HaveCount(5).And.OnlyContain(n => n.Name == "Xen");
    }

    [Fact]
    public void Decodes_The_Xen_Notes_Of_Debian_PV_Grub_As_Readelf_Shows_Them()
    {
        var x = XenElfNotes.Read(ElfFile.Open(RealKernel.Path()));

        // readelf -n: types 6, 8, 5, 1, 3 with descriptors "GRUB\0", "generic\0", "xen-3.0\0", 8 zero bytes, 8 zero bytes.
        x.Notes.Select(n => n.Type).Should().Equal(6u, 8u, 5u, 1u, 3u);
        x.GuestOs.Should().Be("GRUB");
        x.Loader.Should().Be("generic");
        x.XenVersion.Should().Be("xen-3.0");
        x.Entry.Should().Be(0);
        x.VirtBase.Should().Be(0);
        x.HypercallPage.Should().BeNull("GRUB makes direct syscall hypercalls and has no HYPERCALL_PAGE note");
        x.Features.Should().BeEmpty();
        x.LegacyGuestString.Should().BeNull();
    }

    public static TheoryData<string, string> Malformed() => new()
    {
        { "empty", "not an ELF file: it starts with bytes (none, the file is empty)" },
        { "text", "not an ELF file: it starts with bytes 23212F62" },
        { "elf32", "ELFCLASS32 (a 32-bit image); expected ELFCLASS64 (2)" },
        { "bigendian", "ELFDATA2MSB (big-endian); expected ELFDATA2LSB (1)" },
        { "i386", "EM_386 (3, 32-bit x86); expected EM_X86_64 (62)" },
        { "short", "truncated ELF header: the file is 40 bytes; an Elf64_Ehdr needs 64" },
        { "magic-only", "truncated ELF identification: the file is 4 bytes after the magic 7F454C46; expected at least the 16-byte e_ident" },
        { "phentsize", "program header size (e_phentsize) is 32; an Elf64_Phdr is 56 bytes" },
        { "phnum", "program header table: 65000 entries of 56 bytes at offset 0x40 need bytes up to 0x378b00, past the end" },
        { "phoff", "program header table at offset 0x10 overlaps the 64-byte ELF header" },
        { "segment-offset", "segment 0 (LOAD): file bytes [0xfffffffffffffff0, +0x1) run past the end" },
        { "filesz", "segment 0 (LOAD): p_filesz 0x1 exceeds p_memsz 0x0" },
        { "wrap", "wraps past the top of the 64-bit address space" },
        { "overlap", "LOAD segments 0 [0x1000, 0x1001) and 1 [0x1000, 0x1020) overlap in virtual memory" },
        { "shstrndx", "section name table index (e_shstrndx) is 9; expected 0 or an index below the section count 3" },
        { "shname", "section 1: name offset (sh_name) 0x7777 is outside the" },
        { "pnxnum", "e_phnum is PN_XNUM (0xffff), which defers the count to section 0's sh_info, but the file has no section headers" },
        { "tables-overlap", "the program header table [0x40, 0x78) and the section header table [0x5c, 0x11c) overlap" },
        { "note-descsz", "has descsz 4096, but only 8 bytes follow its name" },
        { "note-name", "its 4-byte name is not NUL-terminated" },
        { "note-header", "truncated note header at file offset" },
        { "xen-string", "Xen note GUEST_OS (6) at file offset" },
        { "xen-string-long", $"has no NUL within {XenElfNotes.MaxStringLength} bytes of the descriptor's start" },
        { "xen-number", "its descriptor is 3 bytes; expected 4 or 8 bytes" },
        { "xen-pairs", "its descriptor is 8 bytes; expected a multiple of 16" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Malformed_Files_Are_Rejected_With_A_Message_Saying_What_Is_Wrong(string kind, string message)
    {
        var image = Break(kind);

        var act = () => XenElfNotes.Read(ElfFile.Parse(image));

        act.Should().Throw<ElfFormatException>().Which.Message.Should().Contain(message);
    }

    private static byte[] Break(string kind)
    {
        byte[] Plain() => new TinyElf().Load(0x1000, [0xc3]).Build();
        byte[] WithNote() => new TinyElf().Load(0x1000, [0xc3]).XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "GRUB").Build();
        byte[] WithSections() => new TinyElf().Load(0x1000, [0xc3]).Section(".text", TinyElf.SHT_PROGBITS, 6, [0xc3]).Build();
        var notePh = 64 + 56; // the PT_NOTE header follows the one PT_LOAD header
        switch (kind)
        {
            case "empty":
                return [];
            case "text":
                return "#!/bin/sh\necho hello\n"u8.ToArray();
            case "elf32":
                return Set(Plain(), 4, 1);
            case "bigendian":
                return Set(Plain(), 5, 2);
            case "i386":
                return Set16(Plain(), 18, 3);
            case "short":
                return Plain()[..40];
            case "magic-only":
                return Plain()[..4];
            case "phentsize":
                return Set16(Plain(), 54, 32);
            case "phnum":
                return Set16(Plain(), 56, 65000);
            case "phoff":
                return Set64(Plain(), 32, 0x10);
            case "segment-offset":
                return Set64(Plain(), 64 + 8, 0xfffffffffffffff0);
            case "filesz":
                return Set64(Plain(), 64 + 40, 0);
            case "wrap":
                return Set64(Set64(Plain(), 64 + 16, 0xfffffffffffff000), 64 + 40, 0x2000);
            case "overlap":
                return new TinyElf().Load(0x1000, [0xc3]).Load(0x1000, new byte[32]).Build();
            case "shstrndx":
                return Set16(WithSections(), 62, 9);
            case "shname":
                {
                    var b = WithSections();
                    var shoff = (int)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(40));
                    return Set32(b, shoff + 64, 0x7777);
                }

            case "pnxnum":
                return Set16(Plain(), 56, 0xffff);
            case "tables-overlap":
                {
                    var b = WithSections();
                    return Set64(b, 40, 0x5c);
                }

            case "note-descsz":
                {
                    var b = WithNote();
                    var off = (int)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(notePh + 8));
                    return Set32(b, off + 4, 4096);
                }

            case "note-name":
                {
                    var b = WithNote();
                    var off = (int)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(notePh + 8));
                    return Set(b, off + 12 + 3, (byte)'!');
                }

            case "note-header":
                {
                    // A note area of 24 + 1 bytes: a whole note, then one byte of what follows it in the file.
                    var b = new TinyElf().Load(0x1000, [0xc3]).XenString(ElfNote.XEN_ELFNOTE_GUEST_OS, "GRUB")
                        .Section(".text", TinyElf.SHT_PROGBITS, 6, [0xc3]).Build();
                    return Set64(b, notePh + 32, 24 + 1);
                }

            case "xen-string":
                // "GRUB" without a NUL, a whole number of words (no padding), as the last bytes of the file.
                return new TinyElf().Load(0x1000, [0xc3]).Note("Xen", ElfNote.XEN_ELFNOTE_GUEST_OS, "GRUB"u8.ToArray()).Build();
            case "xen-string-long":
                {
                    // NUL-terminated, but after 4097 characters: past libelf's ELF_MAX_STRING_LENGTH.
                    var text = new byte[XenElfNotes.MaxStringLength + 2];
                    text.AsSpan(0, text.Length - 1).Fill((byte)'a');
                    return new TinyElf().Load(0x1000, [0xc3]).Note("Xen", ElfNote.XEN_ELFNOTE_FEATURES, text).Build();
                }

            case "xen-number":
                return new TinyElf().Load(0x1000, [0xc3]).XenNumber(ElfNote.XEN_ELFNOTE_ENTRY, 5, size: 3).Build();
            case "xen-pairs":
                return new TinyElf().Load(0x1000, [0xc3]).XenNumber(ElfNote.XEN_ELFNOTE_L1_MFN_VALID, 1).Build();
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "no such breakage");
        }
    }

    private static byte[] Set(byte[] b, int at, byte v)
    {
        b[at] = v;
        return b;
    }

    private static byte[] Set16(byte[] b, int at, ushort v)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at), v);
        return b;
    }

    private static byte[] Set32(byte[] b, int at, uint v)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at), v);
        return b;
    }

    private static byte[] Set64(byte[] b, int at, ulong v)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(at), v);
        return b;
    }
}
