using System.Runtime.InteropServices;

namespace Paravirt.Core.Domains;

/// <summary>
/// One entry of an E820 memory map as XENMEM_memory_map and XENMEM_set_memory_map carry it: the
/// packed 20-byte BIOS layout (<c>struct e820entry</c> of Xen's asm/e820.h: addr, size, type).
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct E820Entry
{
    /// <summary>E820_RAM: usable memory.</summary>
    public const uint E820_RAM = 1;

    /// <summary>Xen's E820MAX: the most entries XENMEM_set_memory_map accepts.</summary>
    public const int E820MAX = 1024;

    public ulong addr;
    public ulong size;
    public uint type;
}
