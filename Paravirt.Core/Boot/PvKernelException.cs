namespace Paravirt.Core.Boot;

/// <summary>
/// A kernel image is a well-formed ELF file but not a PV kernel this hypervisor can build a domain
/// for: its Xen notes are missing, contradictory or impossible (an entry point outside the image,
/// a misaligned base, a hypercall page outside the image ...), it requires a feature a classic PV
/// domain does not have, or it does not fit the domain's memory; or it is a Linux bzImage whose
/// setup header or compressed payload is refused (<see cref="BzImage"/>). The message says what was
/// found and what was expected. (A file that is not well-formed ELF at all is an
/// <see cref="Elf.ElfFormatException"/>; both are <see cref="FormatException"/>s.)
/// </summary>
public sealed class PvKernelException : FormatException
{
    public PvKernelException(string message)
        : base(message)
    {
    }
}
