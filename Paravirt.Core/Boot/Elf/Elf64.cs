namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// Numbers of the ELF-64 object file format (System V gABI, and /usr/include/elf.h), the subset a
/// kernel loader reads. Not Xen ABI: these live here, beside the reader, not in <c>Abi/</c>.
/// </summary>
internal static class Elf64
{
    public const int EI_NIDENT = 16;
    public const int EI_CLASS = 4;
    public const int EI_DATA = 5;
    public const int EI_VERSION = 6;
    public const int EI_OSABI = 7;
    public const byte ELFCLASS32 = 1;
    public const byte ELFCLASS64 = 2;
    public const byte ELFDATA2LSB = 1;
    public const byte ELFDATA2MSB = 2;
    public const byte EV_CURRENT = 1;

    public const ushort ET_REL = 1;
    public const ushort ET_EXEC = 2;
    public const ushort ET_DYN = 3;
    public const ushort ET_CORE = 4;
    public const ushort EM_386 = 3;
    public const ushort EM_X86_64 = 62;

    /// <summary>sizeof(Elf64_Ehdr), sizeof(Elf64_Phdr), sizeof(Elf64_Shdr), sizeof(Elf64_Nhdr).</summary>
    public const int EhdrSize = 64;
    public const int PhdrSize = 56;
    public const int ShdrSize = 64;
    public const int NhdrSize = 12;

    /// <summary>e_phnum value meaning "the real count is in section 0's sh_info".</summary>
    public const ushort PN_XNUM = 0xffff;
    /// <summary>e_shstrndx value meaning "the real index is in section 0's sh_link".</summary>
    public const ushort SHN_XINDEX = 0xffff;
    public const ushort SHN_UNDEF = 0;

    public const uint PT_NULL = 0;
    public const uint PT_LOAD = 1;
    public const uint PT_DYNAMIC = 2;
    public const uint PT_INTERP = 3;
    public const uint PT_NOTE = 4;
    public const uint PT_SHLIB = 5;
    public const uint PT_PHDR = 6;
    public const uint PT_TLS = 7;
    public const uint PT_GNU_EH_FRAME = 0x6474e550;
    public const uint PT_GNU_STACK = 0x6474e551;
    public const uint PT_GNU_RELRO = 0x6474e552;
    public const uint PT_GNU_PROPERTY = 0x6474e553;

    public const uint PF_X = 1;
    public const uint PF_W = 2;
    public const uint PF_R = 4;

    public const uint SHT_NULL = 0;
    public const uint SHT_PROGBITS = 1;
    public const uint SHT_SYMTAB = 2;
    public const uint SHT_STRTAB = 3;
    public const uint SHT_NOTE = 7;
    public const uint SHT_NOBITS = 8;

    public const ulong SHF_WRITE = 1;
    public const ulong SHF_ALLOC = 2;
    public const ulong SHF_EXECINSTR = 4;

    public static string SegmentTypeName(uint type) => type switch
    {
        PT_NULL => "NULL",
        PT_LOAD => "LOAD",
        PT_DYNAMIC => "DYNAMIC",
        PT_INTERP => "INTERP",
        PT_NOTE => "NOTE",
        PT_SHLIB => "SHLIB",
        PT_PHDR => "PHDR",
        PT_TLS => "TLS",
        PT_GNU_EH_FRAME => "GNU_EH_FRAME",
        PT_GNU_STACK => "GNU_STACK",
        PT_GNU_RELRO => "GNU_RELRO",
        PT_GNU_PROPERTY => "GNU_PROPERTY",
        _ => $"0x{type:x}",
    };

    public static string FileTypeName(ushort type) => type switch
    {
        ET_REL => "REL",
        ET_EXEC => "EXEC",
        ET_DYN => "DYN",
        ET_CORE => "CORE",
        _ => $"0x{type:x}",
    };

    /// <summary>"RWX"-style flags, '-' for each missing one.</summary>
    public static string SegmentFlags(uint flags) =>
        string.Concat((flags & PF_R) != 0 ? "R" : "-", (flags & PF_W) != 0 ? "W" : "-", (flags & PF_X) != 0 ? "X" : "-");
}
