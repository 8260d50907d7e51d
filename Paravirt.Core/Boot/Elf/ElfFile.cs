using System.Buffers.Binary;
using System.Text;

namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// A parsed ELF64 little-endian x86-64 image: header, program headers, section headers (when the
/// file has them) and notes. Every offset, size and count read from the file is checked against the
/// file before use, with overflow-safe arithmetic; anything out of range, overlapping where it must
/// not, or absurd ends in an <see cref="ElfFormatException"/> that says what and where. Nothing else
/// escapes from <see cref="Parse"/>, whatever the bytes.
/// </summary>
/// <remarks>
/// Notes come from the PT_NOTE segments; a file without any (a relocatable object) has its SHT_NOTE
/// sections read instead. Note headers are three 4-byte words and name and descriptor are padded to
/// 4 bytes, as Linux and Xen's loader write and read them in ELF64 files too.
/// </remarks>
public sealed class ElfFile
{
    /// <summary>The largest file <see cref="Open"/> reads (1 GiB); kernels are a few MiB.</summary>
    public const long MaxFileSize = 1L << 30;

    /// <summary>The most notes read from one file (Xen's loader stops at 65536 too).</summary>
    public const int MaxNotes = 65536;

    private readonly ArraySegment<byte> _image;

    private ElfFile(ArraySegment<byte> image)
    {
        _image = image;
        Header = ReadHeader(image, out var section0);
        CheckTablesDisjoint(Header, image.Count);
        Segments = ReadSegments(image, Header);
        Sections = ReadSections(image, Header, section0);
        Notes = ReadNotes(image, Segments, Sections);
    }

    public ElfHeader Header { get; }

    public IReadOnlyList<ElfSegment> Segments { get; }

    /// <summary>The section headers, empty when the file has none (e_shoff 0).</summary>
    public IReadOnlyList<ElfSection> Sections { get; }

    public IReadOnlyList<ElfNoteRecord> Notes { get; }

    /// <summary>The size of the file in bytes.</summary>
    public int Length => _image.Count;

    /// <summary>Parses a copy of <paramref name="image"/>.</summary>
    public static ElfFile Parse(ReadOnlySpan<byte> image) => new(image.ToArray());

    /// <summary>Parses the bytes in place, without a copy; the caller must not change them afterwards.</summary>
    internal static ElfFile ParseShared(ArraySegment<byte> image) => new(image);

    /// <summary>Reads and parses the file at <paramref name="path"/>; I/O errors surface as the usual IOException family.</summary>
    public static ElfFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (stream.Length > MaxFileSize)
        {
            throw new ElfFormatException($"{path} is {stream.Length} bytes; a kernel image may be at most {MaxFileSize} bytes");
        }

        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return new ElfFile(bytes);
    }

    /// <summary>The file bytes [offset, offset + size), checked.</summary>
    public ReadOnlySpan<byte> GetBytes(ulong offset, ulong size)
    {
        if (!Fits(offset, size, (ulong)_image.Count))
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [0x{offset:x}, +0x{size:x}) are not all inside the {_image.Count}-byte file");
        }

        return _image.AsSpan((int)offset, (int)size);
    }

    /// <summary>The file bytes [offset, offset + size) as an array segment, checked (for readers that want arrays).</summary>
    internal ArraySegment<byte> GetArraySegment(ulong offset, ulong size)
    {
        _ = GetBytes(offset, size);
        return _image.Slice((int)offset, (int)size);
    }

    /// <summary>The file bytes of a segment (its p_filesz bytes; the zero-filled rest is not in the file).</summary>
    public ReadOnlySpan<byte> GetBytes(ElfSegment segment) => GetBytes(segment.Offset, segment.FileSize);

    /// <summary>The file bytes of a section; empty for SHT_NOBITS.</summary>
    public ReadOnlySpan<byte> GetBytes(ElfSection section) =>
        section.OccupiesFile ? GetBytes(section.Offset, section.Size) : [];

    /// <summary>The section named <paramref name="name"/>, or null.</summary>
    public ElfSection? FindSection(string name)
    {
        foreach (var s in Sections)
        {
            if (s.Name == name)
            {
                return s;
            }
        }

        return null;
    }

    /// <summary>[offset, offset + size) lies within [0, length), without overflow.</summary>
    internal static bool Fits(ulong offset, ulong size, ulong length) => offset <= length && size <= length - offset;

    private static ElfHeader ReadHeader(ReadOnlySpan<byte> f, out ElfSection? section0)
    {
        section0 = null;
        if (f.Length < 4 || f[0] != 0x7f || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F')
        {
            var seen = Convert.ToHexString(f.Slice(0, Math.Min(4, f.Length)));
            throw new ElfFormatException($"not an ELF file: it starts with bytes {(seen.Length == 0 ? "(none, the file is empty)" : seen)}; expected the ELF magic 7F454C46 (\\x7fELF)");
        }

        if (f.Length < Elf64.EI_NIDENT)
        {
            throw new ElfFormatException($"truncated ELF identification: the file is {f.Length} bytes after the magic 7F454C46; expected at least the {Elf64.EI_NIDENT}-byte e_ident and a 64-byte Elf64_Ehdr");
        }

        if (f[Elf64.EI_CLASS] != Elf64.ELFCLASS64)
        {
            var what = f[Elf64.EI_CLASS] == Elf64.ELFCLASS32 ? "ELFCLASS32 (a 32-bit image)" : $"{f[Elf64.EI_CLASS]}";
            throw new ElfFormatException($"ELF class (e_ident[EI_CLASS]) is {what}; expected ELFCLASS64 (2), a 64-bit image");
        }

        if (f[Elf64.EI_DATA] != Elf64.ELFDATA2LSB)
        {
            var what = f[Elf64.EI_DATA] == Elf64.ELFDATA2MSB ? "ELFDATA2MSB (big-endian)" : $"{f[Elf64.EI_DATA]}";
            throw new ElfFormatException($"ELF data encoding (e_ident[EI_DATA]) is {what}; expected ELFDATA2LSB (1), little-endian");
        }

        if (f[Elf64.EI_VERSION] != Elf64.EV_CURRENT)
        {
            throw new ElfFormatException($"ELF identification version (e_ident[EI_VERSION]) is {f[Elf64.EI_VERSION]}; expected EV_CURRENT (1)");
        }

        if (f.Length < Elf64.EhdrSize)
        {
            throw new ElfFormatException($"truncated ELF header: the file is {f.Length} bytes; an Elf64_Ehdr needs {Elf64.EhdrSize}");
        }

        var h = f.Slice(0, Elf64.EhdrSize);
        var type = U16(h, 16);
        var machine = U16(h, 18);
        var version = U32(h, 20);
        var entry = U64(h, 24);
        var phoff = U64(h, 32);
        var shoff = U64(h, 40);
        var flags = U32(h, 48);
        var ehsize = U16(h, 52);
        var phentsize = U16(h, 54);
        var phnum = U16(h, 56);
        var shentsize = U16(h, 58);
        var shnum = U16(h, 60);
        var shstrndx = U16(h, 62);

        if (machine != Elf64.EM_X86_64)
        {
            var what = machine == Elf64.EM_386 ? "EM_386 (3, 32-bit x86)" : $"{machine}";
            throw new ElfFormatException($"ELF machine (e_machine) is {what}; expected EM_X86_64 (62)");
        }

        if (version != Elf64.EV_CURRENT)
        {
            throw new ElfFormatException($"ELF version (e_version) is {version}; expected EV_CURRENT (1)");
        }

        if (ehsize != Elf64.EhdrSize)
        {
            throw new ElfFormatException($"ELF header size (e_ehsize) is {ehsize}; an Elf64_Ehdr is {Elf64.EhdrSize} bytes");
        }

        var length = (ulong)f.Length;

        // Section 0 carries the real counts when they do not fit the header's 16-bit fields.
        if (shoff != 0)
        {
            if (shentsize != Elf64.ShdrSize)
            {
                throw new ElfFormatException($"section header size (e_shentsize) is {shentsize}; an Elf64_Shdr is {Elf64.ShdrSize} bytes");
            }

            if (!Fits(shoff, Elf64.ShdrSize, length))
            {
                throw new ElfFormatException($"section header table offset (e_shoff) 0x{shoff:x} is outside the {f.Length}-byte file");
            }

            section0 = ReadSection(f, 0, shoff, "");
        }

        uint realPhnum = phnum;
        if (phnum == Elf64.PN_XNUM)
        {
            realPhnum = section0?.Info
                ?? throw new ElfFormatException($"e_phnum is PN_XNUM (0xffff), which defers the count to section 0's sh_info, but the file has no section headers (e_shoff 0)");
        }

        uint realShnum = shnum;
        if (shoff != 0 && shnum == 0)
        {
            var big = section0!.Value.Size;
            if (big > uint.MaxValue)
            {
                throw new ElfFormatException($"section count from section 0's sh_size is {big}; expected at most {uint.MaxValue}");
            }

            realShnum = (uint)big;
        }
        else if (shoff == 0 && shnum != 0)
        {
            throw new ElfFormatException($"e_shnum is {shnum} but e_shoff is 0; a file with sections needs a section header table offset");
        }

        uint realShstrndx = shstrndx;
        if (shstrndx == Elf64.SHN_XINDEX && shoff != 0)
        {
            realShstrndx = section0!.Value.Link;
        }

        if (realPhnum != 0)
        {
            if (phentsize != Elf64.PhdrSize)
            {
                throw new ElfFormatException($"program header size (e_phentsize) is {phentsize}; an Elf64_Phdr is {Elf64.PhdrSize} bytes");
            }

            CheckTable("program header table", phoff, realPhnum, Elf64.PhdrSize, length);
        }

        if (realShnum != 0)
        {
            CheckTable("section header table", shoff, realShnum, Elf64.ShdrSize, length);
            if (realShstrndx != Elf64.SHN_UNDEF && realShstrndx >= realShnum)
            {
                throw new ElfFormatException($"section name table index (e_shstrndx) is {realShstrndx}; expected 0 or an index below the section count {realShnum}");
            }
        }

        return new ElfHeader(type, machine, f[Elf64.EI_OSABI], entry, phoff, shoff, flags, realPhnum, realShnum, realShstrndx);
    }

    private static void CheckTable(string what, ulong offset, uint count, int entrySize, ulong length)
    {
        if (offset < Elf64.EhdrSize)
        {
            throw new ElfFormatException($"{what} at offset 0x{offset:x} overlaps the {Elf64.EhdrSize}-byte ELF header; expected an offset of at least 0x{Elf64.EhdrSize:x}");
        }

        // count * entrySize fits in 38 bits, so no overflow; Fits guards offset + size.
        var size = (ulong)count * (ulong)entrySize;
        if (!Fits(offset, size, length))
        {
            throw new ElfFormatException($"{what}: {count} entries of {entrySize} bytes at offset 0x{offset:x} need bytes up to 0x{offset + size:x}, past the end of the {length}-byte file");
        }
    }

    private static void CheckTablesDisjoint(ElfHeader h, int length)
    {
        if (h.ProgramHeaderCount == 0 || h.SectionCount == 0)
        {
            return;
        }

        var phEnd = h.ProgramHeaderOffset + ((ulong)h.ProgramHeaderCount * Elf64.PhdrSize);
        var shEnd = h.SectionHeaderOffset + ((ulong)h.SectionCount * Elf64.ShdrSize);
        if (h.ProgramHeaderOffset < shEnd && h.SectionHeaderOffset < phEnd)
        {
            throw new ElfFormatException(
                $"the program header table [0x{h.ProgramHeaderOffset:x}, 0x{phEnd:x}) and the section header table [0x{h.SectionHeaderOffset:x}, 0x{shEnd:x}) overlap in the {length}-byte file; expected disjoint tables");
        }
    }

    private static ElfSegment[] ReadSegments(ReadOnlySpan<byte> f, ElfHeader h)
    {
        var segments = new ElfSegment[h.ProgramHeaderCount];
        var length = (ulong)f.Length;
        for (var i = 0; i < segments.Length; i++)
        {
            var p = f.Slice((int)h.ProgramHeaderOffset + (i * Elf64.PhdrSize), Elf64.PhdrSize);
            var s = new ElfSegment(i, U32(p, 0), U32(p, 4), U64(p, 8), U64(p, 16), U64(p, 24), U64(p, 32), U64(p, 40), U64(p, 48));
            segments[i] = s;
            if (s.Type is Elf64.PT_LOAD or Elf64.PT_NOTE && !Fits(s.Offset, s.FileSize, length))
            {
                throw new ElfFormatException(
                    $"segment {i} ({s.TypeName}): file bytes [0x{s.Offset:x}, +0x{s.FileSize:x}) run past the end of the {f.Length}-byte file; expected p_offset + p_filesz <= file size");
            }

            if (s.IsLoad)
            {
                if (s.FileSize > s.MemorySize)
                {
                    throw new ElfFormatException($"segment {i} (LOAD): p_filesz 0x{s.FileSize:x} exceeds p_memsz 0x{s.MemorySize:x}; expected p_filesz <= p_memsz");
                }

                if (s.MemorySize > ulong.MaxValue - s.VirtualAddress)
                {
                    throw new ElfFormatException($"segment {i} (LOAD): p_vaddr 0x{s.VirtualAddress:x} + p_memsz 0x{s.MemorySize:x} wraps past the top of the 64-bit address space");
                }

                // Two loadable segments may not claim the same virtual memory.
                for (var j = 0; j < i; j++)
                {
                    var o = segments[j];
                    if (o.IsLoad && o.MemorySize != 0 && s.MemorySize != 0
                        && s.VirtualAddress < o.VirtualAddress + o.MemorySize && o.VirtualAddress < s.VirtualAddress + s.MemorySize)
                    {
                        throw new ElfFormatException(
                            $"LOAD segments {j} [0x{o.VirtualAddress:x}, 0x{o.VirtualAddress + o.MemorySize:x}) and {i} [0x{s.VirtualAddress:x}, 0x{s.VirtualAddress + s.MemorySize:x}) overlap in virtual memory; expected disjoint loadable segments");
                    }
                }
            }
        }

        return segments;
    }

    private static ElfSection ReadSection(ReadOnlySpan<byte> f, int index, ulong shoff, string name)
    {
        var p = f.Slice((int)shoff + (index * Elf64.ShdrSize), Elf64.ShdrSize);
        return new ElfSection(index, name, U32(p, 4), U64(p, 8), U64(p, 16), U64(p, 24), U64(p, 32), U32(p, 40), U32(p, 44), U64(p, 48), U64(p, 56));
    }

    private static ElfSection[] ReadSections(ReadOnlySpan<byte> f, ElfHeader h, ElfSection? section0)
    {
        if (h.SectionCount == 0)
        {
            return [];
        }

        var length = (ulong)f.Length;
        var raw = new ElfSection[h.SectionCount];
        for (var i = 0; i < raw.Length; i++)
        {
            var s = i == 0 && section0 is { } s0 ? s0 : ReadSection(f, i, h.SectionHeaderOffset, "");
            if (s.OccupiesFile && !Fits(s.Offset, s.Size, length))
            {
                throw new ElfFormatException(
                    $"section {i}: bytes [0x{s.Offset:x}, +0x{s.Size:x}) run past the end of the {f.Length}-byte file; expected sh_offset + sh_size <= file size");
            }

            raw[i] = s;
        }

        ReadOnlySpan<byte> names = [];
        if (h.SectionNameTableIndex != Elf64.SHN_UNDEF)
        {
            var t = raw[h.SectionNameTableIndex];
            if (t.Type != Elf64.SHT_STRTAB)
            {
                throw new ElfFormatException($"section name table (section {h.SectionNameTableIndex}) has type {t.Type}; expected SHT_STRTAB (3)");
            }

            names = f.Slice((int)t.Offset, (int)t.Size);
        }

        var named = new ElfSection[raw.Length];
        for (var i = 0; i < raw.Length; i++)
        {
            var nameOffset = U32(f.Slice((int)h.SectionHeaderOffset + (i * Elf64.ShdrSize), 4), 0);
            named[i] = raw[i] with { Name = ReadName(names, nameOffset, i) };
        }

        return named;
    }

    private static string ReadName(ReadOnlySpan<byte> table, uint offset, int section)
    {
        if (table.IsEmpty && offset == 0)
        {
            return "";
        }

        if (offset >= (uint)table.Length)
        {
            throw new ElfFormatException($"section {section}: name offset (sh_name) 0x{offset:x} is outside the {table.Length}-byte section name table");
        }

        var rest = table[(int)offset..];
        var end = rest.IndexOf((byte)0);
        if (end < 0)
        {
            throw new ElfFormatException($"section {section}: name at 0x{offset:x} in the section name table has no NUL terminator before the table ends");
        }

        return Encoding.Latin1.GetString(rest[..end]);
    }

    private static ElfNoteRecord[] ReadNotes(ArraySegment<byte> f, IReadOnlyList<ElfSegment> segments, IReadOnlyList<ElfSection> sections)
    {
        var notes = new List<ElfNoteRecord>();
        var any = false;
        foreach (var s in segments)
        {
            if (s.IsNote)
            {
                any = true;
                ReadNotes(f, s.Offset, s.FileSize, $"segment {s.Index} (NOTE)", notes);
            }
        }

        if (!any)
        {
            foreach (var s in sections)
            {
                if (s.IsNote)
                {
                    ReadNotes(f, s.Offset, s.Size, $"section {s.Index} ({s.Name})", notes);
                }
            }
        }

        return [.. notes];
    }

    /// <summary>Walks one note area (bounds checked by the caller against the file) note by note.</summary>
    private static void ReadNotes(ArraySegment<byte> f, ulong start, ulong size, string where, List<ElfNoteRecord> notes)
    {
        var area = f.AsSpan((int)start, (int)size);
        var pos = 0;
        while (pos < area.Length)
        {
            var at = start + (ulong)pos;
            var left = area.Length - pos;
            if (left < Elf64.NhdrSize)
            {
                throw new ElfFormatException($"{where}: truncated note header at file offset 0x{at:x}: {left} bytes left; a note header (namesz, descsz, type) needs {Elf64.NhdrSize}");
            }

            if (notes.Count >= MaxNotes)
            {
                throw new ElfFormatException($"{where}: more than {MaxNotes} notes in the file; expected a handful");
            }

            var namesz = U32(area, pos);
            var descsz = U32(area, pos + 4);
            var type = U32(area, pos + 8);
            var rest = (ulong)(left - Elf64.NhdrSize);
            var paddedName = Align4(namesz);
            if (paddedName > rest)
            {
                throw new ElfFormatException($"{where}: note at file offset 0x{at:x} has namesz {namesz} (0x{paddedName:x} padded), but only {rest} bytes follow its header");
            }

            if (descsz > rest - paddedName)
            {
                throw new ElfFormatException($"{where}: note at file offset 0x{at:x} has descsz {descsz}, but only {rest - paddedName} bytes follow its name");
            }

            var nameSpan = area.Slice(pos + Elf64.NhdrSize, (int)namesz);
            string name;
            if (namesz == 0)
            {
                name = "";
            }
            else if (nameSpan[^1] != 0)
            {
                throw new ElfFormatException($"{where}: note at file offset 0x{at:x}: its {namesz}-byte name is not NUL-terminated; expected namesz to count the NUL");
            }
            else
            {
                name = Encoding.Latin1.GetString(nameSpan[..nameSpan.IndexOf((byte)0)]);
            }

            var descStart = pos + Elf64.NhdrSize + (int)paddedName;
            var desc = f.AsMemory((int)start + descStart, (int)descsz);
            notes.Add(new ElfNoteRecord(name, type, desc, at, start + (ulong)descStart));

            // The last note's descriptor padding may be cut off by the end of the area.
            var next = (ulong)descStart + Align4(descsz);
            pos = next >= (ulong)area.Length ? area.Length : (int)next;
        }
    }

    private static ulong Align4(uint n) => ((ulong)n + 3) & ~3UL;

    private static ushort U16(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt16LittleEndian(s[at..]);

    private static uint U32(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt32LittleEndian(s[at..]);

    private static ulong U64(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt64LittleEndian(s[at..]);
}
