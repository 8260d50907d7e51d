namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// The Elf64_Ehdr fields a loader uses, with extended numbering resolved: <see cref="ProgramHeaderCount"/>,
/// <see cref="SectionCount"/> and <see cref="SectionNameTableIndex"/> are the real values even when the
/// header defers them to section 0 (PN_XNUM, SHN_XINDEX).
/// </summary>
public readonly record struct ElfHeader(
    ushort Type,
    ushort Machine,
    byte OsAbi,
    ulong Entry,
    ulong ProgramHeaderOffset,
    ulong SectionHeaderOffset,
    uint Flags,
    uint ProgramHeaderCount,
    uint SectionCount,
    uint SectionNameTableIndex)
{
    /// <summary>"EXEC", "DYN", ... or the number in hex.</summary>
    public string TypeName => Elf64.FileTypeName(Type);
}
