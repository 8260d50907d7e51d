namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// One ELF note (Elf64_Nhdr + name + descriptor): the owner <see cref="Name"/> ("Xen", "GNU"...),
/// its <see cref="Type"/> (meaningful per owner) and its descriptor bytes.
/// </summary>
public sealed record ElfNoteRecord(string Name, uint Type, ReadOnlyMemory<byte> Descriptor, ulong FileOffset);
