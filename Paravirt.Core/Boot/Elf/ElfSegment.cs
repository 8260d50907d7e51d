namespace Paravirt.Core.Boot.Elf;

/// <summary>One Elf64_Phdr (program header): a segment of the image.</summary>
public readonly record struct ElfSegment(
    int Index,
    uint Type,
    uint Flags,
    ulong Offset,
    ulong VirtualAddress,
    ulong PhysicalAddress,
    ulong FileSize,
    ulong MemorySize,
    ulong Align)
{
    public bool IsLoad => Type == Elf64.PT_LOAD;

    public bool IsNote => Type == Elf64.PT_NOTE;

    public bool IsExecutable => (Flags & Elf64.PF_X) != 0;

    /// <summary>"LOAD", "NOTE", ... or the number in hex.</summary>
    public string TypeName => Elf64.SegmentTypeName(Type);

    /// <summary>"R-X"-style flags.</summary>
    public string FlagsText => Elf64.SegmentFlags(Flags);
}
