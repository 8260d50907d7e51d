using Paravirt.Core.Abi;
using Paravirt.Core.Boot;
using Paravirt.Core.Boot.Elf;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>Kernel images the builder refuses, each with a message that names the problem and what was expected.</summary>
public sealed class PvKernelTests
{
    private static TinyElf S(params int[] skip) => PvTestKernel.Standard(skip);

    private static readonly Dictionary<string, (Func<byte[]> Image, string Message)> Bad = new()
    {
        ["not ELF"] = (() => "#!/bin/sh\necho not a kernel\n"u8.ToArray(), "not an ELF file"),
        ["ELF32"] = (() => { var b = S().Build(); b[4] = 1; return b; }, "ELFCLASS32"),
        ["i386"] = (() => { var b = S().Build(); b[18] = 3; return b; }, "EM_386"),
        ["no Xen notes"] = (() => new TinyElf { Entry = PvTestKernel.Text }.Load(PvTestKernel.Text, PvTestKernel.Code()).Build(), "no Xen ELF notes"),
        ["wrong loader"] = (() => S(ElfNote.XEN_ELFNOTE_LOADER).Build(), "expected LOADER = \"generic\" or GUEST_OS = \"linux\""),
        ["wrong Xen version"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-2.0").Build(), "expected XEN_VERSION = \"xen-3.0\""),
        ["entry outside"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_ENTRY, PvTestKernel.Base + 0x100000).Build(), "the entry point 0xffffffff80100000 (ENTRY note) is outside the loaded image [0xffffffff80001000, 0xffffffff80006000)"),
        ["e_entry outside"] = (() => new TinyElf { Entry = 0x10 }.Load(PvTestKernel.Text, PvTestKernel.Code()).XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic").XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0").XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, PvTestKernel.Base).XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, PvTestKernel.Base).Build(), "(e_entry) is outside the loaded image"),
        ["hypercall page outside"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, PvTestKernel.Base + 0x9000).Build(), "HYPERCALL_PAGE 0xffffffff80009000 is outside the loaded image"),
        ["hypercall page misaligned"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, PvTestKernel.HypercallPage + 8).Build(), "HYPERCALL_PAGE 0xffffffff80002008 is not page-aligned"),
        ["virt base misaligned"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, PvTestKernel.Base + 0x10).XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, PvTestKernel.Base + 0x10).Build(), "VIRT_BASE 0xffffffff80000010 is not page-aligned"),
        ["paddr offset without virt base"] = (() => S(ElfNote.XEN_ELFNOTE_VIRT_BASE).Build(), "PADDR_OFFSET is 0xffffffff80000000 but VIRT_BASE is not set"),
        ["image below virt base"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, PvTestKernel.Base + 0x2000).XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, PvTestKernel.Base + 0x2000).Build(), "the image loads at 0xffffffff80001000, below VIRT_BASE 0xffffffff80002000"),
        ["load address wraps"] = (() => S(ElfNote.XEN_ELFNOTE_PADDR_OFFSET).Build(), "wraps past the top of the address space"),
        ["image in Xen's hole"] = (() => new TinyElf { Entry = 0xffff_8000_0000_1000 }.Load(0xffff_8000_0000_1000, PvTestKernel.Code(0xffff_8000_0000_1000)).XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic").XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0").XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, 0xffff_8000_0000_0000).XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, 0xffff_8000_0000_0000).Build(), "Xen owns [0xffff800000000000, 0xffff880000000000)"),
        ["unaligned first segment"] = (() => new TinyElf { Entry = PvTestKernel.Text + 0x10 }.Load(PvTestKernel.Text + 0x10, PvTestKernel.Code()).XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic").XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0").XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, PvTestKernel.Base).XenNumber(ElfNote.XEN_ELFNOTE_PADDR_OFFSET, PvTestKernel.Base).Build(), "lowest load address 0xffffffff80001010 is not page-aligned"),
        ["overlapping segments"] = (() => S().Load(PvTestKernel.Text + 0x800, [1, 2, 3]).Build(), "overlap"),
        ["no loadable bytes"] = (() => new TinyElf().XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic").XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0").Build(), "no loadable bytes"),
        ["requires dom0"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_FEATURES, "writable_page_tables|!dom0").Build(), "does not support unprivileged (domU) operation"),
        ["requires auto-translation"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_FEATURES, "!auto_translated_physmap").Build(), "requires auto_translated_physmap"),
        ["requires supervisor mode"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_FEATURES, "!supervisor_mode_kernel").Build(), "supervisor mode"),
        ["requires an unknown feature"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_FEATURES, "!time_travel").Build(), "requires \"time_travel\""),
        ["BSD symtab"] = (() => S().XenString(ElfNote.XEN_ELFNOTE_BSD_SYMTAB, "yes").Build(), "BSD_SYMTAB"),
        ["INIT_P2M inside the image"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_INIT_P2M, PvTestKernel.Data).Build(), "INIT_P2M 0xffffffff80003000 lies inside the loaded image"),
        ["bad note size"] = (() => S().XenNumber(ElfNote.XEN_ELFNOTE_ENTRY, 1, 3).Build(), "descriptor is 3 bytes"),
        ["legacy number"] = (() => new TinyElf { Entry = PvTestKernel.Text }.Load(PvTestKernel.Text, PvTestKernel.Code()).Section("__xen_guest", TinyElf.SHT_PROGBITS, 0, "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=lots\0"u8.ToArray()).Build(), "VIRT_BASE=lots is not a number"),
    };

    public static TheoryData<string> BadCases => [.. Bad.Keys];

    [Theory]
    [MemberData(nameof(BadCases))]
    public void A_Bad_Image_Is_Refused_With_A_Message_Naming_The_Problem(string name)
    {
        var (image, message) = Bad[name];
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var act = () => hv.CreatePvDomain(new DomainConfig { Name = "bad", MemoryMiB = 16 }, image());
        var e = act.Should().Throw<FormatException>().Which;
        e.Message.Should().Contain(message);
        e.Message.Should().Contain("expected", "every refusal says what was expected");
        e.Should().Match(x => x is PvKernelException || x is ElfFormatException);
        hv.Domains.Should().BeEmpty("a refused kernel never creates a domain");
    }

    [Fact]
    public void A_Domain_Too_Small_For_The_Initial_Mapping_Is_An_Argument_Error_And_Leaves_Nothing_Behind()
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        var free = hv.FreeFrames;
        var act = () => hv.CreatePvDomain(new DomainConfig { Name = "tiny", MemoryMiB = 4 }, RealKernel.Bytes());
        act.Should().Throw<ArgumentException>().WithMessage("*4 MiB (1024 pages) is too small for this kernel*expected more memory*");
        hv.Domains.Should().BeEmpty();
        hv.FreeFrames.Should().Be(free, "nothing was allocated");
    }

    [Fact]
    public void The_Notes_Are_Read_With_Xens_Defaults_And_Accepted_Requirements()
    {
        var k = PvKernel.Parse(PvTestKernel.Standard().Build());
        k.VirtBase.Should().Be(PvTestKernel.Base);
        k.VirtOffset.Should().Be(0UL);
        k.Entry.Should().Be(PvTestKernel.Text);
        k.HypercallPage.Should().Be(PvTestKernel.HypercallPage);
        k.RequiredFeatures.Should().Be(1u << Features.XENFEAT_writable_page_tables, "Linux's '!writable_page_tables' is accepted: Xen emulates page-table writes");
        k.SupportedFeatures.Should().Be((1u << Features.XENFEAT_writable_page_tables) | (1u << Features.XENFEAT_pae_pgdir_above_4gb));
        k.P2mBase.Should().BeNull();
        k.UnmappedInitrd.Should().BeFalse();

        var ignored = PvKernel.Parse(PvTestKernel.Standard().XenNumber(ElfNote.XEN_ELFNOTE_INIT_P2M, PvTestKernel.Base + 0x100000).XenNumber(ElfNote.XEN_ELFNOTE_PHYS32_ENTRY, 0x1000, 4).Build());
        ignored.P2mBase.Should().BeNull("INIT_P2M at or above VIRT_BASE falls back to the default, as in libxenguest");
        ignored.Entry.Should().Be(PvTestKernel.Text, "PHYS32_ENTRY is for PVH only");

        var supported = PvKernel.Parse(PvTestKernel.Standard().Note("Xen", (uint)ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES, [0x81, 0, 0, 0]).XenString(ElfNote.XEN_ELFNOTE_FEATURES, "dom0|unknown_thing").Build());
        supported.SupportedFeatures.Should().Be(0x81u | (1u << Features.XENFEAT_dom0) | (1u << Features.XENFEAT_pae_pgdir_above_4gb), "SUPPORTED_FEATURES and every FEATURES note add up, as in libelf; unknown optional names are skipped");
        supported.RequiredFeatures.Should().Be(1u << Features.XENFEAT_writable_page_tables, "the earlier FEATURES note still counts");
    }
}
