using Paravirt.Core.Abi;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Support;

/// <summary>
/// Small 64-bit PV kernels for builder tests, written with <see cref="TinyElf"/> (p_paddr = p_vaddr)
/// and Xen notes. The standard one is Linux-shaped: VIRT_BASE = PADDR_OFFSET = 0xffffffff80000000,
/// code at +0x1000, a hypercall page at +0x2000 inside the text segment, data with bss at +0x3000.
/// Notes are written in order and the last of a type wins (as in Xen's loader), so a test can
/// append a note to override one, or leave one out with <c>skip</c>.
/// </summary>
internal static class PvTestKernel
{
    public const ulong Base = 0xffff_ffff_8000_0000;
    public const ulong Text = Base + 0x1000;
    public const ulong HypercallPage = Base + 0x2000;
    public const ulong Data = Base + 0x3000;
    public const ulong DataMemSize = 0x3000;

    /// <summary>The data segment's file bytes; the rest of its 0x3000 bytes is bss.</summary>
    public static readonly byte[] DataBytes = "pvboot data, then bss"u8.ToArray();

    /// <summary>The entry code: a call through the hypercall page (sched_op shutdown), as a PV kernel would.</summary>
    public static byte[] Code(ulong at = Text) => TinyElf.Code(at, a =>
    {
        a.mov(edi, 2);                                   // SCHEDOP_shutdown
        a.call(HypercallPage + (29 * 32));               // __HYPERVISOR_sched_op
        a.ud2();
    });

    /// <summary>Entry code that takes its only vCPU down (VCPUOP_down on vCPU 0) and spins, as Linux's halt() with events masked does.</summary>
    public static byte[] DownCode(ulong at = Text) => TinyElf.Code(at, a =>
    {
        var spin = a.CreateLabel();
        a.mov(edi, VcpuOp.VCPUOP_down);
        a.xor(esi, esi);                                 // vCPU 0
        a.xor(edx, edx);
        a.call(HypercallPage + (Xen.__HYPERVISOR_vcpu_op * 32));
        a.Label(ref spin);
        a.jmp(spin);
    });

    /// <summary>The standard kernel, with the note types in <paramref name="skip"/> left out.</summary>
    public static TinyElf Standard(params int[] skip) => Standard(Code(), skip);

    /// <summary>The standard kernel running <paramref name="code"/> at its entry.</summary>
    public static TinyElf Standard(byte[] code, params int[] skip)
    {
        var elf = new TinyElf { Entry = Text }
            .Load(Text, code, TinyElf.PF_R | TinyElf.PF_X, memSize: 0x2000)
            .Load(Data, DataBytes, TinyElf.PF_R | TinyElf.PF_W, memSize: DataMemSize);
        void S(int type, string v)
        {
            if (!skip.Contains(type))
            {
                elf.XenString(type, v);
            }
        }

        void N(int type, ulong v)
        {
            if (!skip.Contains(type))
            {
                elf.XenNumber(type, v);
            }
        }

        S(ElfNote.XEN_ELFNOTE_GUEST_OS, "pvboot-test");
        S(ElfNote.XEN_ELFNOTE_LOADER, "generic");
        S(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0");
        N(ElfNote.XEN_ELFNOTE_VIRT_BASE, Base);
        N(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, Base);
        N(ElfNote.XEN_ELFNOTE_ENTRY, Text);
        N(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, HypercallPage);
        S(ElfNote.XEN_ELFNOTE_FEATURES, "!writable_page_tables|pae_pgdir_above_4gb");
        S(ElfNote.XEN_ELFNOTE_PAE_MODE, "yes");
        return elf;
    }
}
