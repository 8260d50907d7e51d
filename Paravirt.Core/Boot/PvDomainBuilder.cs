using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Boot;

/// <summary>
/// The ELF domain builder: lays out a classic PV domain's start-of-day memory for a
/// <see cref="PvKernel"/> exactly as xen.h's "Start-of-day memory layout" and libxenguest's x86-64
/// PV builder (<c>xc_dom_build_image</c>, <c>xg_dom_x86.c</c>) do. Pseudo-physical frame 0 is
/// VIRT_BASE, and the initial region maps virt_base + pfn × 4096 → pfn:
/// <code>
/// [padding up to the kernel's first page]
/// kernel image               segments at their load addresses, bss zeroed
/// ramdisk                    [mod_start, mod_len]   (unless MOD_START_PFN: then after the region)
/// P→M list                   [mfn_list, nr_pages × 8]  (unless INIT_P2M: then after the region)
/// start_info                 rsi
/// xenstore ring page         start_info.store_mfn
/// console ring page          start_info.console.domU.mfn
/// bootstrap page tables      pt_base, nr_pt_frames; the L4 first (CR3); mapped read-only
/// boot stack                 one page; rsp = its top
/// padding                    at least 512 KiB, up to a 4 MiB boundary (the region's end)
/// [unmapped ramdisk]         MOD_START_PFN: mod_start = its first pfn, SIF_MOD_START_PFN
/// [P→M list + its tables]    INIT_P2M: mapped at INIT_P2M by tables of its own (first_p2m_pfn, nr_p2m_frames)
/// </code>
/// Common steps (RAM, M2P, shared_info, grant table, store/console ports) are
/// <see cref="DomainBuilder.SetUpCommon"/>. The tables are written, not validated or pinned.
/// </summary>
internal static class PvDomainBuilder
{
    private const int PageShift = MachineMemory.PageShift;
    private const ulong PageSize = MachineMemory.PageSize;

    /// <summary>libxenguest's padding after the bootstrap elements (xen.h: "at least 512kB").</summary>
    public const ulong PaddingPages = (512 * 1024) / PageSize;

    /// <summary>The initial region ends on a 4 MiB boundary (xen.h, and round_up(…, bits_to_mask(22))).</summary>
    private const ulong RegionAlignMask = (4UL << 20) - 1;

    public static PvBootImage Build(Domain domain, PvKernel kernel, ReadOnlySpan<byte> ramdisk)
    {
        var nrPages = (ulong)domain.Config.MemoryMiB * 256;
        var plan = Plan(domain.Name, domain.Config.MemoryMiB, nrPages, kernel, (ulong)ramdisk.Length);

        DomainBuilder.SetUpCommon(domain, (long)nrPages);

        // The kernel image: each segment's file bytes at its address (pseudo-physical = va - VIRT_BASE).
        // Its frames were zeroed when allocated, so bss is zero (libxenguest clears the segment too).
        foreach (var s in kernel.Segments)
        {
            WriteAt(domain, s.VirtualAddress - kernel.VirtBase, kernel.Elf.GetBytes(s.FileOffset, s.FileSize));
        }

        if (kernel.HypercallPage is { } hc)
        {
            WriteAt(domain, hc - kernel.VirtBase, HypercallPageWriter.Page);
        }

        if (ramdisk.Length > 0)
        {
            WriteAt(domain, plan.RamdiskPfn << PageShift, ramdisk);
        }

        DomainBuilder.WriteP2mList(domain, plan.P2mPfn, (long)nrPages);
        domain.StorePfn = plan.StorePfn;
        domain.ConsolePfn = plan.ConsolePfn;
        DomainBuilder.ZeroPage(domain, plan.StorePfn);
        DomainBuilder.ZeroPage(domain, plan.ConsolePfn);
        DomainBuilder.ZeroPage(domain, plan.StackPfn);
        var frames = plan.Tables.Write(pfn => DomainBuilder.MfnOf(domain, pfn), (pfn, bytes) => WriteAt(domain, pfn << PageShift, bytes));

        var va = (ulong pfn) => kernel.VirtBase + (pfn << PageShift);
        var modStart = ramdisk.Length == 0 ? 0 : kernel.UnmappedInitrd ? plan.RamdiskPfn : va(plan.RamdiskPfn);
        var modLen = ramdisk.Length == 0 ? 0 : kernel.UnmappedInitrd ? plan.RamdiskPages << PageShift : (ulong)ramdisk.Length;
        var unmapped = ramdisk.Length > 0 && kernel.UnmappedInitrd;
        var mfnList = kernel.P2mBase ?? va(plan.P2mPfn);
        DomainBuilder.WriteStartInfo(domain, plan.StartInfoPfn, new DomainBuilder.StartInfoLayout
        {
            NrPages = nrPages,
            Flags = unmapped ? (uint)Xen.SIF_MOD_START_PFN : 0,
            PtBase = va(plan.TablePfn),
            NrPtFrames = (ulong)plan.Tables.FirstRangeTables,
            MfnList = mfnList,
            ModStart = modStart,
            ModLen = modLen,
            FirstP2mPfn = kernel.P2mBase is null ? 0 : plan.P2mPfn,
            NrP2mFrames = kernel.P2mBase is null ? 0 : plan.P2mSegmentPages,
        });
        domain.StartInfoAddress = va(plan.StartInfoPfn);

        return new PvBootImage
        {
            Entry = kernel.Entry,
            StackPointer = va(plan.StackPfn + 1),
            StartInfo = va(plan.StartInfoPfn),
            L4Mfn = frames[0].Mfn,
            PageTables = frames,
            HypercallPage = kernel.HypercallPage,
            VirtBase = kernel.VirtBase,
            VirtEnd = plan.RegionEnd,
            KernelStart = kernel.KernelStart,
            KernelEnd = kernel.KernelEnd,
            PageTableBase = va(plan.TablePfn),
            P2mList = mfnList,
            ModStart = modStart,
            ModLength = modLen,
            ModStartIsPfn = unmapped,
            StorePfn = plan.StorePfn,
            ConsolePfn = plan.ConsolePfn,
            FramesUsed = plan.FramesUsed,
        };
    }

    /// <summary>Where everything goes, computed before any memory is touched (so a kernel that does not fit fails cleanly).</summary>
    internal sealed class Layout
    {
        public ulong KernelPfn;
        public ulong RamdiskPfn;
        public ulong RamdiskPages;
        public ulong P2mPfn;
        public ulong P2mSegmentPages;
        public ulong StartInfoPfn;
        public ulong StorePfn;
        public ulong ConsolePfn;
        public ulong TablePfn;
        public ulong StackPfn;
        public ulong RegionEnd;
        public ulong FramesUsed;
        public BootPageTables Tables = new();
    }

    internal static Layout Plan(string name, int memoryMiB, ulong nrPages, PvKernel kernel, ulong ramdiskBytes)
    {
        var l = new Layout();
        ulong next = 0; // pfn_alloc_end
        var virtBase = kernel.VirtBase;
        ulong Va(ulong pfn) => virtBase + (pfn << PageShift);

        ulong Alloc(ulong pages, string what)
        {
            if (pages > nrPages || next > nrPages - pages)
            {
                throw new ArgumentException(
                    $"domain '{name}': {memoryMiB} MiB ({nrPages} pages) is too small for this kernel: the {what} needs pages {next} to {next + pages - 1} of the start-of-day layout (docs/boot.md); expected more memory");
            }

            var at = next;
            next += pages;
            return at;
        }

        // The kernel, after padding from VIRT_BASE to its first page.
        Alloc((kernel.KernelStart - virtBase) >> PageShift, "padding up to the kernel");
        l.KernelPfn = Alloc(kernel.Pages, $"kernel image [0x{kernel.KernelStart:x}, 0x{kernel.KernelEnd:x})");
        l.RamdiskPages = (ramdiskBytes + PageSize - 1) >> PageShift;
        if (ramdiskBytes > 0 && !kernel.UnmappedInitrd)
        {
            l.RamdiskPfn = Alloc(l.RamdiskPages, $"ramdisk ({ramdiskBytes} bytes)");
        }

        var p2mPages = ((nrPages * 8) + PageSize - 1) >> PageShift;
        if (kernel.P2mBase is null)
        {
            l.P2mPfn = Alloc(p2mPages, "P→M list");
        }

        l.StartInfoPfn = Alloc(1, "start_info page");
        l.StorePfn = Alloc(1, "xenstore page");
        l.ConsolePfn = Alloc(1, "console page");

        // alloc_pgtables_pv: grow the region until it holds its own tables, the stack and the padding.
        const ulong extra = 1 + PaddingPages;
        var pages = extra;
        ulong last; // the region's last byte
        while (true)
        {
            last = (Va(next) + (pages << PageShift)) | RegionAlignMask;
            if (last < Va(next))
            {
                throw new PvKernelException($"the initial region from VIRT_BASE 0x{virtBase:x} wraps past the top of the address space; expected a kernel placed lower");
            }

            var lastPfn = (last - virtBase) >> PageShift;
            if (lastPfn >= nrPages)
            {
                throw new ArgumentException(
                    $"domain '{name}': {memoryMiB} MiB ({nrPages} pages) is too small for this kernel: its initial mapping [0x{virtBase:x}, 0x{last + 1:x}) needs {lastPfn + 1} pages (docs/boot.md); expected more memory");
            }

            pages = (ulong)l.Tables.Count(virtBase, last) + extra;
            if (Va(next) + (pages << PageShift) <= last + 1)
            {
                break;
            }
        }

        CheckRange("the initial region", virtBase, last);
        l.RegionEnd = last + 1;
        l.TablePfn = next;
        var tables = (ulong)l.Tables.Add(virtBase, last, 0, next);
        Alloc(tables, "bootstrap page tables");
        l.StackPfn = Alloc(1, "boot stack");
        Alloc(((last + 1 - virtBase) >> PageShift) - next, "padding to the 4 MiB boundary");

        if (ramdiskBytes > 0 && kernel.UnmappedInitrd)
        {
            l.RamdiskPfn = Alloc(l.RamdiskPages, $"unmapped ramdisk ({ramdiskBytes} bytes)");
        }

        if (kernel.P2mBase is { } p2mBase)
        {
            if (p2mBase > ulong.MaxValue - (p2mPages << PageShift))
            {
                throw new PvKernelException($"INIT_P2M 0x{p2mBase:x} leaves no room for the {p2mPages}-page P→M list below the top of the address space; expected a lower address");
            }

            var p2mLast = p2mBase + (p2mPages << PageShift) - 1;
            CheckRange("the INIT_P2M mapping", p2mBase, p2mLast);
            if (p2mLast >= virtBase)
            {
                throw new PvKernelException($"INIT_P2M maps the P→M list at [0x{p2mBase:x}, 0x{p2mLast + 1:x}), which overlaps the initial region from VIRT_BASE 0x{virtBase:x}; expected the list to end below VIRT_BASE");
            }

            l.P2mPfn = next;
            var p2mTables = (ulong)l.Tables.Count(p2mBase, p2mLast);
            l.P2mSegmentPages = p2mPages + p2mTables;
            Alloc(l.P2mSegmentPages, "P→M list at INIT_P2M and its page tables");
            l.Tables.Add(p2mBase, p2mLast, l.P2mPfn, l.P2mPfn + p2mPages);
        }

        l.FramesUsed = next;
        return l;
    }

    /// <summary>A mapped range must be canonical and clear of Xen's hole (xen-x86_64.h).</summary>
    private static void CheckRange(string what, ulong first, ulong last)
    {
        var low = last < 0x0000_8000_0000_0000UL;
        var high = first >= ArchX86.HYPERVISOR_VIRT_END;
        if (!low && !high)
        {
            throw new PvKernelException(
                $"{what} [0x{first:x}, 0x{last + 1:x}) leaves the guest's canonical address space; expected it below 0x0000800000000000 or at or above HYPERVISOR_VIRT_END 0x{ArchX86.HYPERVISOR_VIRT_END:x}");
        }
    }

    private static void WriteAt(Domain domain, ulong gpa, ReadOnlySpan<byte> bytes)
    {
        if (!domain.Memory.TryWrite(gpa, bytes))
        {
            throw new InvalidOperationException($"domain '{domain.Name}': {bytes.Length} bytes at pseudo-physical 0x{gpa:x} do not fit in its memory");
        }
    }
}
