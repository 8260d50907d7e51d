namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// A file is not an ELF64 little-endian x86-64 image, or it is one with a broken structure: the
/// message says what was found, where, and what was expected.
/// </summary>
public sealed class ElfFormatException : FormatException
{
    public ElfFormatException(string message)
        : base(message)
    {
    }
}
