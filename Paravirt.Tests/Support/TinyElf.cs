using System.Buffers.Binary;
using System.Text;
using Iced.Intel;

namespace Paravirt.Tests.Support;

/// <summary>
/// Writes small ELF64 little-endian x86-64 files for tests: PT_LOAD segments, one PT_NOTE segment
/// holding every note, and optional sections (with a .shstrtab). Our own writer, from the gABI
/// layout (Elf64_Ehdr 64 bytes, Elf64_Phdr 56, Elf64_Shdr 64, notes padded to 4).
/// </summary>
internal sealed class TinyElf
{
    public const uint PF_X = 1, PF_W = 2, PF_R = 4;
    public const uint SHT_PROGBITS = 1, SHT_STRTAB = 3, SHT_NOTE = 7;
    public const ulong SHF_ALLOC = 2, SHF_EXECINSTR = 4;

    private readonly List<(uint Flags, ulong Vaddr, byte[] Data, ulong MemSize)> _loads = [];
    private readonly List<(string Name, uint Type, byte[] Desc)> _notes = [];
    private readonly List<(string Name, uint Type, ulong Flags, ulong Addr, byte[] Data)> _sections = [];

    public ushort Type { get; init; } = 2; // ET_EXEC

    public ulong Entry { get; init; }

    /// <summary>Where the notes go: a PT_NOTE segment (default) or an SHT_NOTE section.</summary>
    public bool NotesAsSection { get; init; }

    /// <summary>Assembles 64-bit code at <paramref name="ip"/> with Iced's assembler.</summary>
    public static byte[] Code(ulong ip, Action<Assembler> emit)
    {
        var a = new Assembler(64);
        emit(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), ip);
        return ms.ToArray();
    }

    public TinyElf Load(ulong vaddr, byte[] data, uint flags = PF_R | PF_X, ulong memSize = 0)
    {
        _loads.Add((flags, vaddr, data, Math.Max(memSize, (ulong)data.Length)));
        return this;
    }

    public TinyElf Note(string name, uint type, byte[] desc)
    {
        _notes.Add((name, type, desc));
        return this;
    }

    public TinyElf XenString(int type, string value) => Note("Xen", (uint)type, [.. Encoding.ASCII.GetBytes(value), 0]);

    public TinyElf XenNumber(int type, ulong value, int size = 8)
    {
        var d = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(d, value);
        return Note("Xen", (uint)type, d[..size]);
    }

    public TinyElf Section(string name, uint type, ulong flags, byte[] data, ulong addr = 0)
    {
        _sections.Add((name, type, flags, addr, data));
        return this;
    }

    /// <summary>The notes as one note area (header, name and descriptor each padded to 4).</summary>
    public static byte[] NoteArea(IEnumerable<(string Name, uint Type, byte[] Desc)> notes)
    {
        var ms = new MemoryStream();
        var h = new byte[12];
        foreach (var (name, type, desc) in notes)
        {
            var n = Encoding.ASCII.GetBytes(name + "\0");
            BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)n.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), (uint)desc.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), type);
            ms.Write(h);
            ms.Write(n);
            ms.Write(new byte[Pad4(n.Length)]);
            ms.Write(desc);
            ms.Write(new byte[Pad4(desc.Length)]);
        }

        return ms.ToArray();
    }

    public byte[] Build()
    {
        var notes = _notes.Count > 0 ? NoteArea(_notes) : null;
        var sections = new List<(string Name, uint Type, ulong Flags, ulong Addr, byte[] Data)>(_sections);
        if (notes is not null && NotesAsSection)
        {
            sections.Add((".note.Xen", SHT_NOTE, 0, 0, notes));
        }

        var phnum = _loads.Count + (notes is not null && !NotesAsSection ? 1 : 0);
        var body = new MemoryStream();
        var offset = 64 + (phnum * 56);

        // Segment contents, each 16-aligned in the file.
        long Place(byte[] data)
        {
            while ((offset + body.Length) % 16 != 0)
            {
                body.WriteByte(0);
            }

            var at = offset + body.Length;
            body.Write(data);
            return at;
        }

        var loadOffsets = _loads.Select(l => Place(l.Data)).ToArray();
        var noteOffset = notes is not null && !NotesAsSection ? Place(notes) : 0;
        var sectionOffsets = sections.Select(s => Place(s.Data)).ToArray();

        var shnum = 0;
        long shoff = 0;
        var shstrndx = 0;
        if (sections.Count > 0)
        {
            var names = new MemoryStream();
            names.WriteByte(0);
            var nameOffsets = new List<int>();
            foreach (var s in sections)
            {
                nameOffsets.Add((int)names.Length);
                names.Write(Encoding.ASCII.GetBytes(s.Name + "\0"));
            }

            var shstrName = (int)names.Length;
            names.Write(".shstrtab\0"u8);
            var strOffset = Place(names.ToArray());
            shoff = Place([]);
            shnum = sections.Count + 2;
            shstrndx = shnum - 1;
            body.Write(new byte[64]); // SHT_NULL
            for (var i = 0; i < sections.Count; i++)
            {
                body.Write(Shdr(nameOffsets[i], sections[i].Type, sections[i].Flags, sections[i].Addr, (ulong)sectionOffsets[i], (ulong)sections[i].Data.Length));
            }

            body.Write(Shdr(shstrName, SHT_STRTAB, 0, 0, (ulong)strOffset, (ulong)names.Length));
        }

        var file = new byte[offset + body.Length];
        var e = file.AsSpan();
        e[0] = 0x7f;
        e[1] = (byte)'E';
        e[2] = (byte)'L';
        e[3] = (byte)'F';
        e[4] = 2; // ELFCLASS64
        e[5] = 1; // ELFDATA2LSB
        e[6] = 1; // EV_CURRENT
        BinaryPrimitives.WriteUInt16LittleEndian(e[16..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(e[18..], 62); // EM_X86_64
        BinaryPrimitives.WriteUInt32LittleEndian(e[20..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(e[24..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(e[32..], phnum > 0 ? 64UL : 0);
        BinaryPrimitives.WriteUInt64LittleEndian(e[40..], (ulong)shoff);
        BinaryPrimitives.WriteUInt16LittleEndian(e[52..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(e[54..], 56);
        BinaryPrimitives.WriteUInt16LittleEndian(e[56..], (ushort)phnum);
        BinaryPrimitives.WriteUInt16LittleEndian(e[58..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(e[60..], (ushort)shnum);
        BinaryPrimitives.WriteUInt16LittleEndian(e[62..], (ushort)shstrndx);
        var p = 64;
        for (var i = 0; i < _loads.Count; i++)
        {
            var l = _loads[i];
            Phdr(e[p..], 1, l.Flags, (ulong)loadOffsets[i], l.Vaddr, (ulong)l.Data.Length, l.MemSize);
            p += 56;
        }

        if (notes is not null && !NotesAsSection)
        {
            Phdr(e[p..], 4, PF_R, (ulong)noteOffset, 0, (ulong)notes.Length, 0);
        }

        body.ToArray().CopyTo(file, offset);
        return file;
    }

    private static int Pad4(int n) => (4 - (n % 4)) % 4;

    private static void Phdr(Span<byte> p, uint type, uint flags, ulong offset, ulong vaddr, ulong filesz, ulong memsz)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(p, type);
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], flags);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], offset);
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[32..], filesz);
        BinaryPrimitives.WriteUInt64LittleEndian(p[40..], memsz);
        BinaryPrimitives.WriteUInt64LittleEndian(p[48..], 16);
    }

    private static byte[] Shdr(int name, uint type, ulong flags, ulong addr, ulong offset, ulong size)
    {
        var s = new byte[64];
        BinaryPrimitives.WriteUInt32LittleEndian(s, (uint)name);
        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(4), type);
        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(8), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(16), addr);
        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(24), offset);
        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(32), size);
        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(48), 1);
        return s;
    }
}
