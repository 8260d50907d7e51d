using System.Runtime.InteropServices;
using System.Text;
using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Boot;

/// <summary>The ELF domain builder's start-of-day layout (xen.h), checked through the boot page tables the vCPU will use.</summary>
public sealed class PvDomainBuilderTests : IDisposable
{
    private const int MemoryMiB = 16;
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    private (Domain Dom, PvBootImage Boot, BootWalker Walk) Build(byte[] kernel, byte[]? ramdisk = null, string cmdline = "console=hvc0 root=/dev/xvda1", int memory = MemoryMiB)
    {
        var (dom, boot) = hv.CreatePvDomain(new DomainConfig { Name = "pv", MemoryMiB = memory, CommandLine = cmdline }, kernel, ramdisk);
        return (dom, boot, new BootWalker(hv, dom, boot.L4Mfn));
    }

    private static start_info StartInfo(BootWalker walk, PvBootImage boot) =>
        MemoryMarshal.Read<start_info>(walk.Read(boot.StartInfo, Marshal.SizeOf<start_info>()));

    private static ulong Mfn(Domain dom, ulong pfn) => DomainBuilder.MfnOf(dom, pfn);

    private static string CString(ReadOnlySpan<byte> bytes) => Encoding.ASCII.GetString(bytes[..bytes.IndexOf((byte)0)]);

    [Fact]
    public unsafe void Start_Info_Names_Every_Element_Of_The_Layout_In_Xens_Order()
    {
        var (dom, boot, walk) = Build(PvTestKernel.Standard().Build());
        var si = StartInfo(walk, boot);

        dom.IsTranslated.Should().BeFalse("a PV kernel gets a classic PV domain");
        CString(new ReadOnlySpan<byte>(si.magic, 32)).Should().Be("xen-3.0-x86_64");
        si.nr_pages.Should().Be(MemoryMiB * 256UL);
        si.shared_info.Should().Be(dom.SharedInfo!.Mfn << 12, "start_info.shared_info is the machine address of shared_info");
        si.flags.Should().Be(0u);
        si.store_evtchn.Should().Be(dom.StoreEvtchn).And.NotBe(0u);
        si.console.domU.evtchn.Should().Be(dom.ConsoleEvtchn).And.NotBe(si.store_evtchn);
        CString(new ReadOnlySpan<byte>((byte*)si.cmd_line, Xen.MAX_GUEST_CMDLINE)).Should().Be("console=hvc0 root=/dev/xvda1");
        si.mod_start.Should().Be(0UL);
        si.mod_len.Should().Be(0UL);
        si.first_p2m_pfn.Should().Be(0UL, "libxenguest sets it only for INIT_P2M");
        si.nr_p2m_frames.Should().Be(0UL);

        // xen.h order: kernel, (ramdisk), P->M list, start_info, xenstore, console, page tables, stack; 4 KiB each, packed.
        var va = (ulong pfn) => PvTestKernel.Base + (pfn << 12);
        var kernelPages = (PvTestKernel.Data + PvTestKernel.DataMemSize - PvTestKernel.Text) >> 12;
        var p2mPfn = 1 + kernelPages; // pfn 0 is the padding between VIRT_BASE and the kernel
        var p2mPages = (si.nr_pages * 8 + 4095) >> 12;
        si.mfn_list.Should().Be(va(p2mPfn));
        boot.StartInfo.Should().Be(va(p2mPfn + p2mPages));
        boot.StorePfn.Should().Be(p2mPfn + p2mPages + 1);
        boot.ConsolePfn.Should().Be(p2mPfn + p2mPages + 2);
        si.store_mfn.Should().Be(Mfn(dom, boot.StorePfn), "store_mfn is a machine frame in a classic PV domain");
        si.console.domU.mfn.Should().Be(Mfn(dom, boot.ConsolePfn));
        si.pt_base.Should().Be(va(boot.ConsolePfn + 1)).And.Be(boot.PageTableBase);
        si.nr_pt_frames.Should().Be((ulong)boot.PageTables.Count);
        boot.StackPointer.Should().Be(va(boot.ConsolePfn + 1 + si.nr_pt_frames + 1), "rsp is the top of the one stack page after the tables");
        boot.Entry.Should().Be(PvTestKernel.Text);
        boot.L4Mfn.Should().Be(Mfn(dom, boot.ConsolePfn + 1), "CR3 is the first table frame");
        boot.PageTables[0].Level.Should().Be(4);
        boot.PageTables.Select(t => t.Level).Should().BeInDescendingOrder("tables are allocated L4, L3s, L2s, L1s");
        boot.PageTables.Select(t => t.Pfn).Should().Equal(Enumerable.Range(0, boot.PageTables.Count).Select(i => boot.ConsolePfn + 1 + (ulong)i));
        boot.PageTables.Should().OnlyContain(t => t.Mfn == Mfn(dom, t.Pfn));

        // The region ends on a 4 MiB boundary with at least 512 KiB after the stack.
        ((boot.VirtEnd - boot.VirtBase) % (4UL << 20)).Should().Be(0UL);
        (boot.VirtEnd - boot.StackPointer).Should().BeGreaterThanOrEqualTo(512UL * 1024);
        boot.FramesUsed.Should().Be((boot.VirtEnd - boot.VirtBase) >> 12);
        dom.StartInfoAddress.Should().Be(boot.StartInfo);
    }

    [Fact]
    public void The_Boot_Tables_Map_The_Whole_Region_Onto_Its_Frames_With_The_Tables_Read_Only()
    {
        var (dom, boot, walk) = Build(PvTestKernel.Standard().Build());
        var tables = boot.PageTables.Select(t => t.Pfn).ToHashSet();
        var pages = (boot.VirtEnd - boot.VirtBase) >> 12;
        pages.Should().BeGreaterThan(1000);
        for (ulong pfn = 0; pfn < pages; pfn++)
        {
            var va = boot.VirtBase + (pfn << 12) + 0x123;
            walk.Translate(va).Should().Be((Mfn(dom, pfn) << 12) + 0x123, $"pfn {pfn} is mapped at VIRT_BASE + pfn * 4096");
            var writable = walk.Translate(va, write: true) is not null;
            writable.Should().Be(!tables.Contains(pfn), $"pfn {pfn} {(tables.Contains(pfn) ? "holds a page table and is read-only" : "is read-write")}");
        }

        walk.Translate(boot.VirtEnd).Should().BeNull("nothing past the region's 4 MiB boundary is mapped");
        walk.Translate(boot.VirtBase - 0x1000).Should().BeNull();
        walk.Translate(0).Should().BeNull("the low half is empty for a kernel at 0xffffffff80000000");
    }

    [Fact]
    public void Table_Entries_Carry_Libxenguests_Flags_And_Machine_Frames()
    {
        var (dom, boot) = hv.CreatePvDomain(new DomainConfig { Name = "flags", MemoryMiB = MemoryMiB }, PvTestKernel.Standard().Build());
        var bus = new Paravirt.Core.Memory.Pv.DomainMachineBus(hv.Frames, dom.Id);
        ulong Entry(ulong mfn, int index)
        {
            bus.TryRead((mfn << 12) + (ulong)(index * 8), 8, out var e).Should().BeTrue();
            return e;
        }

        // Read raw, before any walk sets accessed/dirty bits.
        var l4 = boot.PageTables[0];
        var l3 = boot.PageTables.Single(t => t.Level == 3);
        var l2 = boot.PageTables.Single(t => t.Level == 2);
        var l1s = boot.PageTables.Where(t => t.Level == 1).ToList();
        l1s.Should().HaveCount(2, "a 4 MiB region at a 2 MiB-aligned base takes two L1s");
        const ulong upper = 0x67; // P|RW|U|A|D
        Entry(l4.Mfn, 511).Should().Be((l3.Mfn << 12) | upper, "L4 slot 511 covers 0xffffff8000000000..");
        Entry(l3.Mfn, 510).Should().Be((l2.Mfn << 12) | upper, "L3 slot 510 covers 0xffffffff80000000..");
        Entry(l2.Mfn, 0).Should().Be((l1s[0].Mfn << 12) | upper);
        Entry(l2.Mfn, 1).Should().Be((l1s[1].Mfn << 12) | upper);
        Entry(l2.Mfn, 2).Should().Be(0UL, "nothing past the region");
        Entry(l1s[0].Mfn, 1).Should().Be((DomainBuilder.MfnOf(dom, 1) << 12) | 0x23, "leaf entries are P|RW|A, no U: libxenguest's lvl_prot[0]");
        Entry(l1s[0].Mfn, (int)l4.Pfn).Should().Be((l4.Mfn << 12) | 0x21, "a table's own leaf is read-only: P|A");
        Enumerable.Range(0, 512).Count(i => Entry(l4.Mfn, i) != 0).Should().Be(1, "one L4 slot is used");
    }

    [Fact]
    public void The_Kernel_Is_Loaded_At_Its_Addresses_With_Bss_Zeroed_And_The_P2m_List_Is_Readable()
    {
        var (dom, boot, walk) = Build(PvTestKernel.Standard().Build());
        walk.Read(PvTestKernel.Text, PvTestKernel.Code().Length).Should().Equal(PvTestKernel.Code());
        walk.Read(PvTestKernel.Data, PvTestKernel.DataBytes.Length).Should().Equal(PvTestKernel.DataBytes);
        walk.Read(PvTestKernel.Data + (ulong)PvTestKernel.DataBytes.Length, (int)PvTestKernel.DataMemSize - PvTestKernel.DataBytes.Length)
            .Should().OnlyContain(b => b == 0, "bss is zero");
        walk.Read(boot.StackPointer - 0x1000, 0x1000).Should().OnlyContain(b => b == 0, "the boot stack starts empty");

        var si = StartInfo(walk, boot);
        var p2m = MemoryMarshal.Cast<byte, ulong>(walk.Read(si.mfn_list, (int)si.nr_pages * 8)).ToArray();
        for (ulong pfn = 0; pfn < si.nr_pages; pfn++)
        {
            p2m[pfn].Should().Be(Mfn(dom, pfn), $"mfn_list[{pfn}]");
            hv.Frames.MachineToPhys(p2m[pfn]).Should().Be(pfn, "the M2P entry of each frame names its pfn");
        }

        p2m.Distinct().Should().HaveCount(p2m.Length, "every pfn has its own frame");
    }

    [Fact]
    public void The_Hypercall_Page_Decodes_To_Xens_64_Bit_Stubs()
    {
        var (_, boot, walk) = Build(PvTestKernel.Standard().Build());
        boot.HypercallPage.Should().Be(PvTestKernel.HypercallPage);
        var page = walk.Read(PvTestKernel.HypercallPage, 4096);
        for (var nr = 0; nr < 128; nr++)
        {
            var stub = page.AsSpan(nr * 32, 32).ToArray();
            var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(stub), PvTestKernel.HypercallPage + (ulong)(nr * 32));
            var expected = nr == Xen.__HYPERVISOR_iret
                ? new[] { "push rcx", "push r11", "push rax", $"mov eax,{nr}", "syscall" }
                : new[] { "push rcx", "push r11", $"mov eax,{nr}", "syscall", "pop r11", "pop rcx", "ret" };
            var seen = new List<string>();
            var length = 0;
            foreach (var _ in expected)
            {
                var i = decoder.Decode();
                seen.Add(i.Code == Code.Mov_r32_imm32 ? $"mov {i.Op0Register.ToString().ToLowerInvariant()},{i.Immediate32}" : i.Mnemonic.ToString().ToLowerInvariant() + (i.OpCount == 1 ? " " + i.Op0Register.ToString().ToLowerInvariant() : ""));
                length += i.Length;
            }

            seen.Should().Equal(expected, $"stub {nr} is Xen's");
            stub.AsSpan(length).ToArray().Should().OnlyContain(b => b == 0xcc, $"stub {nr} is padded with int3 as Xen fills the page");
        }
    }

    [Fact]
    public void A_Ramdisk_Follows_The_Kernel_And_Start_Info_Names_It()
    {
        var ramdisk = Enumerable.Range(0, 10000).Select(i => (byte)(i * 7)).ToArray();
        var (_, boot, walk) = Build(PvTestKernel.Standard().Build(), ramdisk);
        var si = StartInfo(walk, boot);
        si.mod_start.Should().Be(PvTestKernel.Data + PvTestKernel.DataMemSize, "the ramdisk is the next element after the kernel");
        si.mod_len.Should().Be((ulong)ramdisk.Length);
        si.flags.Should().Be(0u);
        walk.Read(si.mod_start, ramdisk.Length).Should().Equal(ramdisk);
        si.mfn_list.Should().Be(si.mod_start + 3 * 4096UL, "the P->M list follows the ramdisk's three pages");
    }

    [Fact]
    public void Mod_Start_Pfn_Places_The_Ramdisk_After_The_Region_And_Names_Its_Pfn()
    {
        var ramdisk = Enumerable.Range(0, 5000).Select(i => (byte)(i * 3 + 1)).ToArray();
        var kernel = PvTestKernel.Standard().XenNumber(ElfNote.XEN_ELFNOTE_MOD_START_PFN, 1, 4).Build();
        var (dom, boot, walk) = Build(kernel, ramdisk);
        var si = StartInfo(walk, boot);
        si.flags.Should().Be((uint)Xen.SIF_MOD_START_PFN);
        var regionPages = (boot.VirtEnd - boot.VirtBase) >> 12;
        si.mod_start.Should().Be(regionPages, "mod_start is the first pfn after the mapped region");
        si.mod_len.Should().Be(2 * 4096UL, "libxenguest gives whole pages for an unmapped ramdisk");
        var bytes = new byte[ramdisk.Length];
        new Paravirt.Core.Memory.Pv.DomainMachineBus(hv.Frames, dom.Id).TryRead(Mfn(dom, si.mod_start) << 12, bytes.AsSpan(0, 4096)).Should().BeTrue();
        new Paravirt.Core.Memory.Pv.DomainMachineBus(hv.Frames, dom.Id).TryRead(Mfn(dom, si.mod_start + 1) << 12, bytes.AsSpan(4096)).Should().BeTrue();
        bytes.Should().Equal(ramdisk);
        si.mfn_list.Should().Be(PvTestKernel.Data + PvTestKernel.DataMemSize, "without a mapped ramdisk the P->M list follows the kernel");
    }

    [Fact]
    public void Init_P2m_Maps_The_List_At_Its_Address_With_Tables_Of_Its_Own_After_The_Region()
    {
        const ulong p2mBase = 0x0000_0080_0000_0000; // Linux's choice: 512 GiB
        var kernel = PvTestKernel.Standard().XenNumber(ElfNote.XEN_ELFNOTE_INIT_P2M, p2mBase).Build();
        var (dom, boot, walk) = Build(kernel);
        var si = StartInfo(walk, boot);
        var regionPages = (boot.VirtEnd - boot.VirtBase) >> 12;
        si.mfn_list.Should().Be(p2mBase);
        si.first_p2m_pfn.Should().Be(regionPages);
        var listPages = (si.nr_pages * 8 + 4095) >> 12;
        si.nr_p2m_frames.Should().Be(listPages + 3, "the list's pages, then one new L3, L2 and L1 for its low-half mapping");
        si.nr_pt_frames.Should().Be((ulong)boot.PageTables.Count - 3, "nr_pt_frames counts the initial region's tables only");
        boot.PageTables.TakeLast(3).Select(t => (t.Level, t.Pfn)).Should().Equal((3, regionPages + listPages), (2, regionPages + listPages + 1), (1, regionPages + listPages + 2));
        var p2m = MemoryMarshal.Cast<byte, ulong>(walk.Read(p2mBase, (int)si.nr_pages * 8)).ToArray();
        p2m.Select((m, pfn) => m == Mfn(dom, (ulong)pfn)).Should().OnlyContain(ok => ok);
        si.pt_base.Should().Be(boot.StartInfo + 3 * 4096UL, "start_info, store, console, then the tables (no list in the region)");
    }

    [Fact]
    public void Paddr_Offset_Defaults_To_0_So_Segments_Load_At_Virt_Base_Plus_Paddr()
    {
        // VIRT_BASE 0x400000 and no PADDR_OFFSET: a segment at p_paddr 0x1000 loads at 0x401000.
        var code = PvTestKernel.Code(0x401000);
        var elf = new TinyElf { Entry = 0x1000 }
            .Load(0x1000, code, TinyElf.PF_R | TinyElf.PF_X)
            .XenString(ElfNote.XEN_ELFNOTE_LOADER, "generic")
            .XenString(ElfNote.XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
            .XenNumber(ElfNote.XEN_ELFNOTE_VIRT_BASE, 0x400000)
            .XenNumber(ElfNote.XEN_ELFNOTE_ENTRY, 0x401000);
        var (_, boot, walk) = Build(elf.Build());
        boot.VirtBase.Should().Be(0x400000UL);
        boot.KernelStart.Should().Be(0x401000UL);
        walk.Read(0x401000, code.Length).Should().Equal(code);
        boot.HypercallPage.Should().BeNull();
        walk.Read(0x400000, 4096).Should().OnlyContain(b => b == 0, "pfn 0 is padding up to the kernel");
    }

    [Fact]
    public void A_Legacy_Xen_Guest_String_Is_Read_Like_The_Notes()
    {
        var elf = new TinyElf { Entry = PvTestKernel.Text }
            .Load(PvTestKernel.Text, PvTestKernel.Code(), TinyElf.PF_R | TinyElf.PF_X, memSize: 0x2000)
            .Section("__xen_guest", TinyElf.SHT_PROGBITS, 0, Encoding.ASCII.GetBytes($"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0x{PvTestKernel.Base:x},HYPERCALL_PAGE=0x2\0"));
        var kernel = PvKernel.Parse(elf.Build());
        kernel.FromLegacyGuestString.Should().BeTrue();
        kernel.PaddrOffset.Should().Be(PvTestKernel.Base, "the legacy ELF_PADDR_OFFSET defaults to VIRT_BASE");
        kernel.HypercallPage.Should().Be(PvTestKernel.HypercallPage, "the legacy HYPERCALL_PAGE is a page number from VIRT_BASE");
        var (_, boot, walk) = Build(elf.Build());
        walk.Read(PvTestKernel.HypercallPage, 1).Should().Equal((byte)0x51);
        boot.Entry.Should().Be(PvTestKernel.Text);
    }

    [Fact]
    public void Debians_Pv_Grub_Builds_A_Sane_Layout()
    {
        var (dom, boot, walk) = Build(RealKernel.Bytes(), cmdline: "", memory: 32);
        var si = StartInfo(walk, boot);
        boot.VirtBase.Should().Be(0UL, "GRUB's VIRT_BASE note is 0");
        boot.Entry.Should().Be(0UL, "GRUB's ENTRY note is 0");
        boot.KernelStart.Should().Be(0UL);
        boot.KernelEnd.Should().Be(0x41e1f0UL + 0x1f5bd8UL, "the end of its second LOAD segment");
        boot.HypercallPage.Should().BeNull("GRUB has no HYPERCALL_PAGE note");
        var kernelPages = (boot.KernelEnd + 4095) >> 12;
        si.mfn_list.Should().Be(kernelPages << 12);
        boot.StartInfo.Should().Be((kernelPages + 16) << 12, "32 MiB = 8192 pfns need a 16-page P->M list");
        si.pt_base.Should().Be(boot.StartInfo + 3 * 4096UL);
        boot.PageTables.Select(t => t.Level).Should().Equal([4, 3, 2, 1, 1, 1, 1], "8 MiB from 0 take one L3, one L2 and four L1s");
        boot.VirtEnd.Should().Be(8UL << 20);
        walk.Read(0, 16).Should().Equal(RealKernel.Bytes().AsSpan(0x1000, 16).ToArray(), "segment 0 is loaded at 0 from file offset 0x1000");
        walk.Read(0x41e1f0, 64).Should().Equal(RealKernel.Bytes().AsSpan(0xfaef, 64).ToArray());
        walk.Read(0xeaef, 0x41e1f0 - 0xeaef).Should().OnlyContain(b => b == 0, "segment 0's bss");
        dom.TotalPages.Should().Be(32 * 256);
    }
}
