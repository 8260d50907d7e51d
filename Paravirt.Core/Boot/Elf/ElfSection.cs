namespace Paravirt.Core.Boot.Elf;

/// <summary>One Elf64_Shdr (section header), with its name looked up in the section name table.</summary>
public readonly record struct ElfSection(
    int Index,
    string Name,
    uint Type,
    ulong Flags,
    ulong Address,
    ulong Offset,
    ulong Size,
    uint Link,
    uint Info,
    ulong AddressAlign,
    ulong EntrySize)
{
    /// <summary>SHT_NOBITS (.bss-like) sections occupy no bytes of the file.</summary>
    public bool OccupiesFile => Type != Elf64.SHT_NOBITS && Type != Elf64.SHT_NULL;

    public bool IsExecutable => (Flags & Elf64.SHF_EXECINSTR) != 0;

    public bool IsNote => Type == Elf64.SHT_NOTE;
}
