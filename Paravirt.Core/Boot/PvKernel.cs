using System.Globalization;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot.Elf;

namespace Paravirt.Core.Boot;

/// <summary>One loadable segment of a PV kernel, placed at its load address in the guest's virtual space.</summary>
/// <param name="Index">The program header's index.</param>
/// <param name="VirtualAddress">Where it is loaded: <c>p_paddr</c> + <see cref="PvKernel.VirtOffset"/> (Xen's libelf loads by p_paddr).</param>
/// <param name="FileOffset">Its bytes in the file.</param>
/// <param name="FileSize">Bytes copied from the file; the rest up to <paramref name="MemorySize"/> is zero (bss).</param>
/// <param name="MemorySize">Bytes it occupies in memory (p_memsz).</param>
public readonly record struct PvKernelSegment(int Index, ulong VirtualAddress, ulong FileOffset, ulong FileSize, ulong MemorySize);

/// <summary>
/// A 64-bit PV kernel image, parsed and checked the way Xen 4.17's libelf and libxenguest do
/// (<c>libelf-dominfo.c</c>: note defaults, VIRT_BASE/PADDR_OFFSET/ENTRY, the legacy
/// <c>__xen_guest</c> string; <c>xg_dom_elfloader.c</c>), before any domain exists: every way the
/// image can be unbootable is an exception here, not a half-built domain.
/// </summary>
/// <remarks>
/// Each Xen note is handled as follows (docs/boot.md has the table): ENTRY, VIRT_BASE,
/// PADDR_OFFSET, HYPERCALL_PAGE, INIT_P2M, MOD_START_PFN, FEATURES and SUPPORTED_FEATURES shape the
/// layout; LOADER/GUEST_OS and XEN_VERSION are checked as libelf checks them; BSD_SYMTAB = "yes" is
/// rejected (the symbol table is not loaded); PAE_MODE, HV_START_LOW and PHYS32_ENTRY only matter
/// to 32-bit or HVM/PVH guests and are ignored; GUEST_VERSION, INFO, L1_MFN_VALID and
/// SUSPEND_CANCEL are informational here (no suspend).
/// </remarks>
public sealed class PvKernel
{
    /// <summary>The FEATURES names Xen 4.17's libelf knows (<c>elf_xen_feature_names</c>); other names are unknown to it.</summary>
    private static readonly string[] LibelfFeatureNames =
        ["writable_page_tables", "writable_descriptor_tables", "auto_translated_physmap", "supervisor_mode_kernel", "pae_pgdir_above_4gb", "hvm_callback_vector", "dom0"];

    /// <summary>
    /// Features a kernel may require and still boot in a classic PV domU here: writable page tables
    /// (Xen emulates a PV guest's direct writes to its page tables) and the 32-bit-only
    /// pae_pgdir_above_4gb. Everything else a kernel requires is refused (see <see cref="Parse"/>).
    /// </summary>
    private const uint GrantedRequirements = (1u << Features.XENFEAT_writable_page_tables) | (1u << Features.XENFEAT_pae_pgdir_above_4gb);

    private PvKernel(ElfFile elf, XenElfNotes notes, BzImage? bzImage)
    {
        Elf = elf;
        Notes = notes;
        BzImage = bzImage;
    }

    /// <summary>The bzImage header when the image was a Linux bzImage (<see cref="Elf"/> is then its decompressed vmlinux), else null.</summary>
    public BzImage? BzImage { get; }

    /// <summary>The parsed ELF file.</summary>
    public ElfFile Elf { get; }

    /// <summary>The image's Xen notes (and legacy <c>__xen_guest</c> string).</summary>
    public XenElfNotes Notes { get; }

    /// <summary>True when the parameters came from the legacy <c>__xen_guest</c> section (no Xen notes).</summary>
    public bool FromLegacyGuestString { get; private set; }

    /// <summary>VIRT_BASE (default 0): the virtual address of pseudo-physical frame 0.</summary>
    public ulong VirtBase { get; private set; }

    /// <summary>PADDR_OFFSET (default 0 with notes, VIRT_BASE with the legacy string).</summary>
    public ulong PaddrOffset { get; private set; }

    /// <summary>VIRT_BASE − PADDR_OFFSET: added to every p_paddr to get its load address.</summary>
    public ulong VirtOffset => VirtBase - PaddrOffset;

    /// <summary>The lowest load address (Xen's virt_kstart), page-aligned.</summary>
    public ulong KernelStart { get; private set; }

    /// <summary>The end of the loaded image (Xen's virt_kend): the highest p_paddr + p_memsz, offset.</summary>
    public ulong KernelEnd { get; private set; }

    /// <summary>ENTRY, else e_entry: the first rip.</summary>
    public ulong Entry { get; private set; }

    /// <summary>HYPERCALL_PAGE: where the hypervisor writes the hypercall stubs, or null for none.</summary>
    public ulong? HypercallPage { get; private set; }

    /// <summary>
    /// INIT_P2M: the virtual address the P→M list is mapped at outside the initial region, or null
    /// for the default (the list inside the region). As libxenguest does, a value at or above
    /// VIRT_BASE or not page-aligned is ignored (the default is used).
    /// </summary>
    public ulong? P2mBase { get; private set; }

    /// <summary>MOD_START_PFN ≠ 0: the kernel takes its ramdisk unmapped, by PFN (SIF_MOD_START_PFN).</summary>
    public bool UnmappedInitrd { get; private set; }

    /// <summary>XENFEAT_ bits the kernel supports (FEATURES names and SUPPORTED_FEATURES word 0).</summary>
    public uint SupportedFeatures { get; private set; }

    /// <summary>XENFEAT_ bits the kernel requires ('!' in FEATURES).</summary>
    public uint RequiredFeatures { get; private set; }

    public string Loader { get; private set; } = "";

    public string GuestOs { get; private set; } = "";

    public string XenVersion { get; private set; } = "";

    /// <summary>The loadable segments in file order.</summary>
    public IReadOnlyList<PvKernelSegment> Segments { get; private set; } = [];

    /// <summary>Pages the kernel image occupies from <see cref="KernelStart"/>.</summary>
    public ulong Pages => (KernelEnd - KernelStart + Memory.MachineMemory.PageMask) >> Memory.MachineMemory.PageShift;

    /// <summary>
    /// Parses and checks a PV kernel image (copied): an ELF file, or a Linux bzImage whose payload
    /// is decompressed to its vmlinux ELF file first (<see cref="KernelImage"/>).
    /// </summary>
    /// <exception cref="ElfFormatException">The bytes are neither ELF nor a bzImage, the ELF file is not well-formed ELF64 x86-64, or a Xen note is malformed.</exception>
    /// <exception cref="PvKernelException">The file is not a bootable 64-bit PV kernel, or a bzImage whose header or payload is refused (the message says why).</exception>
    public static PvKernel Parse(ReadOnlySpan<byte> image)
    {
        var elf = KernelImage.ReadElf(image, KernelImage.MaxSize, out var bzImage);
        var k = new PvKernel(elf, XenElfNotes.Read(elf), bzImage);
        k.Check();
        return k;
    }

    private void Check()
    {
        const ulong unset = ulong.MaxValue;
        ulong virtBase = unset, paddrOffset = unset, entry = unset, hypercall = unset, p2mBase = unset;
        uint supported = 0, required = 0;
        var bsdSymtab = false;
        var anyXenNote = Notes.Notes.Count > 0;
        if (anyXenNote)
        {
            foreach (var n in Notes.Notes)
            {
                // A repeated note overrides the earlier one, as in libelf.
                switch ((int)n.Type)
                {
                    case ElfNote.XEN_ELFNOTE_VIRT_BASE: virtBase = n.Number!.Value; break;
                    case ElfNote.XEN_ELFNOTE_PADDR_OFFSET: paddrOffset = n.Number!.Value; break;
                    case ElfNote.XEN_ELFNOTE_ENTRY: entry = n.Number!.Value; break;
                    case ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE: hypercall = n.Number!.Value; break;
                    case ElfNote.XEN_ELFNOTE_INIT_P2M: p2mBase = n.Number!.Value; break;
                    case ElfNote.XEN_ELFNOTE_MOD_START_PFN: UnmappedInitrd = n.Number!.Value != 0; break;
                    case ElfNote.XEN_ELFNOTE_LOADER: Loader = n.Text!; break;
                    case ElfNote.XEN_ELFNOTE_GUEST_OS: GuestOs = n.Text!; break;
                    case ElfNote.XEN_ELFNOTE_XEN_VERSION: XenVersion = n.Text!; break;
                    case ElfNote.XEN_ELFNOTE_BSD_SYMTAB: bsdSymtab = n.Text == "yes"; break;
                    case ElfNote.XEN_ELFNOTE_FEATURES: ParseFeatures(n.Text!, "the FEATURES note", ref supported, ref required); break;
                    case ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES: supported |= XenElfNotes.ReadWords(n.Descriptor.Span)[0]; break;
                }
            }
        }
        else if (Notes.LegacyGuestString is not null)
        {
            FromLegacyGuestString = true;
            ulong legacyHypercallPfn = unset;
            foreach (var (key, value) in Notes.LegacyGuestItems)
            {
                switch (key)
                {
                    case "LOADER": Loader = value; break;
                    case "GUEST_OS": GuestOs = value; break;
                    case "XEN_VER": XenVersion = value; break;
                    case "BSD_SYMTAB": bsdSymtab = true; break; // legacy: present means yes
                    case "VIRT_BASE": virtBase = LegacyNumber(key, value); break;
                    case "VIRT_ENTRY": entry = LegacyNumber(key, value); break;
                    case "ELF_PADDR_OFFSET": paddrOffset = LegacyNumber(key, value); break;
                    case "HYPERCALL_PAGE": legacyHypercallPfn = LegacyNumber(key, value); break;
                    case "FEATURES": ParseFeatures(value, "the __xen_guest FEATURES item", ref supported, ref required); break;
                }
            }

            // The legacy HYPERCALL_PAGE is a page number relative to VIRT_BASE.
            if (legacyHypercallPfn != unset && virtBase != unset)
            {
                hypercall = (legacyHypercallPfn << 12) + virtBase;
            }
        }
        else
        {
            throw new PvKernelException("not a Xen PV kernel: the image has no Xen ELF notes (owner \"Xen\") and no __xen_guest section; expected the notes of xen/elfnote.h (at least LOADER = \"generic\" or GUEST_OS = \"linux\", and XEN_VERSION = \"xen-3.0\")");
        }

        SupportedFeatures = supported;
        RequiredFeatures = required;

        // elf_xen_note_check: the loader or OS, and the Xen version.
        if (!Loader.StartsWith("generic", StringComparison.Ordinal) && !GuestOs.StartsWith("linux", StringComparison.Ordinal))
        {
            throw new PvKernelException($"the kernel is built for loader \"{XenElfNotes.Printable(Loader)}\" and guest OS \"{XenElfNotes.Printable(GuestOs)}\"; expected LOADER = \"generic\" or GUEST_OS = \"linux\" (what Xen's libelf loads)");
        }

        if (!XenVersion.StartsWith("xen-3.0", StringComparison.Ordinal))
        {
            throw new PvKernelException($"the kernel is built for Xen version \"{XenElfNotes.Printable(XenVersion)}\"; expected XEN_VERSION = \"xen-3.0\" (the PV interface Xen 3.0 and later load)");
        }

        if (bsdSymtab)
        {
            throw new PvKernelException("the kernel requires its symbol table to be loaded (BSD_SYMTAB = \"yes\"); this builder does not load symbol tables, expected a kernel without BSD_SYMTAB");
        }

        CheckRequiredFeatures();

        // elf_xen_addr_calc_check.
        if (paddrOffset != unset && virtBase == unset)
        {
            throw new PvKernelException($"PADDR_OFFSET is 0x{paddrOffset:x} but VIRT_BASE is not set; expected VIRT_BASE whenever PADDR_OFFSET is given");
        }

        if (virtBase == unset)
        {
            virtBase = 0;
        }

        if (paddrOffset == unset)
        {
            paddrOffset = FromLegacyGuestString ? virtBase : 0;
        }

        VirtBase = virtBase;
        PaddrOffset = paddrOffset;
        if ((virtBase & Memory.MachineMemory.PageMask) != 0)
        {
            throw new PvKernelException($"VIRT_BASE 0x{virtBase:x} is not page-aligned; expected a multiple of 0x1000 (it is the virtual address of frame 0)");
        }

        LoadSegments();

        Entry = entry == unset ? Elf.Header.Entry : entry;
        if (Entry < KernelStart || Entry >= KernelEnd)
        {
            throw new PvKernelException($"the entry point 0x{Entry:x} ({(entry == unset ? "e_entry" : "ENTRY note")}) is outside the loaded image [0x{KernelStart:x}, 0x{KernelEnd:x}); expected an address inside it");
        }

        if (hypercall != unset)
        {
            if ((hypercall & Memory.MachineMemory.PageMask) != 0)
            {
                throw new PvKernelException($"HYPERCALL_PAGE 0x{hypercall:x} is not page-aligned; expected the address of a whole page of the image");
            }

            if (hypercall < KernelStart || hypercall >= KernelEnd)
            {
                throw new PvKernelException($"HYPERCALL_PAGE 0x{hypercall:x} is outside the loaded image [0x{KernelStart:x}, 0x{KernelEnd:x}); expected a page inside it");
            }

            HypercallPage = hypercall;
        }

        if (p2mBase != unset)
        {
            if (p2mBase >= KernelStart && p2mBase < KernelEnd)
            {
                throw new PvKernelException($"INIT_P2M 0x{p2mBase:x} lies inside the loaded image [0x{KernelStart:x}, 0x{KernelEnd:x}); expected an address outside it");
            }

            // xc_dom_build_image: at or above VIRT_BASE, or misaligned, falls back to the default placement.
            if (p2mBase < virtBase && (p2mBase & Memory.MachineMemory.PageMask) == 0)
            {
                P2mBase = p2mBase;
            }
        }
    }

    private void LoadSegments()
    {
        var segments = new List<PvKernelSegment>();
        ulong low = ulong.MaxValue, high = 0;
        foreach (var s in Elf.Segments)
        {
            // libelf's elf_phdr_is_loadable: PT_LOAD with any of R, W, X.
            if (!s.IsLoad || (s.Flags & 7) == 0)
            {
                continue;
            }

            if (s.PhysicalAddress > ulong.MaxValue - s.MemorySize || s.PhysicalAddress + s.MemorySize > ulong.MaxValue - VirtOffset)
            {
                throw new PvKernelException($"segment {s.Index} (LOAD): p_paddr 0x{s.PhysicalAddress:x} + p_memsz 0x{s.MemorySize:x} + the virtual offset 0x{VirtOffset:x} wraps past the top of the address space; expected a segment that fits below 2^64");
            }

            var at = s.PhysicalAddress + VirtOffset;
            foreach (var o in segments)
            {
                var oEnd = o.VirtualAddress + o.MemorySize;
                if (s.MemorySize != 0 && o.MemorySize != 0 && at < oEnd && o.VirtualAddress < at + s.MemorySize)
                {
                    throw new PvKernelException($"LOAD segments {o.Index} and {s.Index} overlap at their load addresses [0x{o.VirtualAddress:x}, 0x{oEnd:x}) and [0x{at:x}, 0x{at + s.MemorySize:x}) (p_paddr + 0x{VirtOffset:x}); expected disjoint segments");
                }
            }

            segments.Add(new PvKernelSegment(s.Index, at, s.Offset, s.FileSize, s.MemorySize));
            low = Math.Min(low, at);
            high = Math.Max(high, at + s.MemorySize);
        }

        if (segments.Count == 0 || high <= low)
        {
            throw new PvKernelException("the image has no loadable bytes: no PT_LOAD segment with a non-zero p_memsz; expected the kernel's code and data in PT_LOAD segments");
        }

        Segments = segments;
        KernelStart = low;
        KernelEnd = high;
        if (VirtBase > low)
        {
            throw new PvKernelException($"the image loads at 0x{low:x}, below VIRT_BASE 0x{VirtBase:x}; expected every segment at or above VIRT_BASE (check VIRT_BASE and PADDR_OFFSET)");
        }

        if ((low & Memory.MachineMemory.PageMask) != 0)
        {
            throw new PvKernelException($"the image's lowest load address 0x{low:x} is not page-aligned; expected it on a 4 KiB boundary (the builder maps whole pages from there)");
        }

        // The whole image must be canonical and clear of Xen's reserved hole (xen-x86_64.h).
        var lowHalf = high <= 0x0000_8000_0000_0000UL;
        var highHalf = low >= ArchX86.HYPERVISOR_VIRT_END;
        if (!lowHalf && !highHalf)
        {
            throw new PvKernelException($"the image [0x{low:x}, 0x{high:x}) is not inside the guest's canonical address space; expected it below 0x0000800000000000 or at or above HYPERVISOR_VIRT_END 0x{ArchX86.HYPERVISOR_VIRT_END:x} (Xen owns [0x{ArchX86.HYPERVISOR_VIRT_START:x}, 0x{ArchX86.HYPERVISOR_VIRT_END:x}))");
        }
    }

    private void CheckRequiredFeatures()
    {
        var refused = RequiredFeatures & ~GrantedRequirements;
        if (refused == 0)
        {
            return;
        }

        var names = new List<string>();
        for (var bit = 0; bit < 32; bit++)
        {
            if ((refused & (1u << bit)) != 0)
            {
                names.Add(NameOf(bit));
            }
        }

        var why = (refused & (1u << Features.XENFEAT_dom0)) != 0
            ? "the kernel does not support unprivileged (domU) operation (!dom0)"
            : (refused & (1u << Features.XENFEAT_supervisor_mode_kernel)) != 0
                ? "Xen does not run PV kernels in supervisor mode"
                : "a classic (not auto-translated) PV domain does not offer it";
        throw new PvKernelException($"the kernel requires {string.Join(", ", names)} (FEATURES '!'); {why}; expected required features limited to writable_page_tables and pae_pgdir_above_4gb");
    }

    private static string NameOf(int bit)
    {
        foreach (var n in LibelfFeatureNames)
        {
            if (XenElfNotes.FeatureBit(n) == bit)
            {
                return n;
            }
        }

        return "XENFEAT bit " + bit.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>elf_xen_parse_features: names libelf knows set their bit; an unknown required name is an error, an unknown optional one is skipped.</summary>
    private static void ParseFeatures(string text, string where, ref uint supported, ref uint required)
    {
        foreach (var f in XenElfNotes.ParseFeatures(text))
        {
            var known = Array.IndexOf(LibelfFeatureNames, f.Name) >= 0 && f.Bit is not null;
            if (!known)
            {
                if (f.Required)
                {
                    throw new PvKernelException($"{where} requires \"{XenElfNotes.Printable(f.Name)}\" (\"!{XenElfNotes.Printable(f.Name)}\"), a feature Xen 4.17's loader does not know; expected required names among {string.Join(", ", LibelfFeatureNames)}");
                }

                continue;
            }

            supported |= 1u << f.Bit!.Value;
            if (f.Required)
            {
                required |= 1u << f.Bit.Value;
            }
        }
    }

    /// <summary>strtoull(value, NULL, 0): 0x hex, leading-0 octal, else decimal; garbage is an error here (libelf would read 0).</summary>
    private static ulong LegacyNumber(string key, string value)
    {
        try
        {
            if (value.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            {
                return ulong.Parse(value.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
            }

            if (value.Length > 1 && value[0] == '0')
            {
                return Convert.ToUInt64(value[1..], 8);
            }

            return ulong.Parse(value, NumberStyles.None, CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            throw new PvKernelException($"__xen_guest item {key}={XenElfNotes.Printable(value)} is not a number; expected decimal, 0x hex or 0 octal");
        }
    }
}
