namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// One ELF note (Elf64_Nhdr + name + descriptor): the owner <see cref="Name"/> ("Xen", "GNU"...),
/// its <see cref="Type"/> (meaningful per owner) and its descriptor bytes.
/// </summary>
/// <param name="Name">The owner name, without its NUL.</param>
/// <param name="Type">The note type.</param>
/// <param name="Descriptor">The descriptor's descsz bytes (without padding).</param>
/// <param name="FileOffset">Where the note's header starts in the file.</param>
/// <param name="DescriptorOffset">Where its descriptor starts in the file (after the header and the name padded to 4).</param>
public sealed record ElfNoteRecord(string Name, uint Type, ReadOnlyMemory<byte> Descriptor, ulong FileOffset, ulong DescriptorOffset);
