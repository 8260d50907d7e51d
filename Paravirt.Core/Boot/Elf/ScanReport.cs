namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// What the scanner decoded as one unit: an executable segment or section, or one of the two parts
/// of a segment that embeds ELF objects (their executable sections; the bytes around them).
/// </summary>
/// <param name="Name">"segment 0", "section 2 .text", "segment 2 objects", "segment 2 rest".</param>
/// <param name="VirtualAddress">Where the first piece is loaded.</param>
/// <param name="FileOffset">Where the first piece is in the file.</param>
/// <param name="Size">Bytes decoded, over all pieces.</param>
/// <param name="Pieces">Separate byte runs decoded (each swept on its own).</param>
public sealed record ScanRegion(string Name, ulong VirtualAddress, ulong FileOffset, ulong Size, int Pieces = 1);

/// <summary>What the linear sweep found in one region.</summary>
public sealed class RegionScan
{
    private readonly long[] _counts;
    private readonly IReadOnlyDictionary<string, long>[] _mnemonics;

    internal RegionScan(ScanRegion region, long instructions, long invalid, long[] counts, IReadOnlyDictionary<string, long>[] mnemonics)
    {
        Region = region;
        Instructions = instructions;
        InvalidInstructions = invalid;
        _counts = counts;
        _mnemonics = mnemonics;
    }

    public ScanRegion Region { get; }

    /// <summary>Instructions decoded, invalid ones included.</summary>
    public long Instructions { get; }

    /// <summary>Byte sequences that are no valid 64-bit instruction (data, padding, or a lost sweep).</summary>
    public long InvalidInstructions { get; }

    public long Count(InstructionClass c) => _counts[(int)c];

    /// <summary>The class's count per instruction form ("cli", "mov to cr", "push fs").</summary>
    public IReadOnlyDictionary<string, long> Forms(InstructionClass c) => _mnemonics[(int)c];
}

/// <summary>How often the code reaches one hypercall, per way of reaching it.</summary>
/// <param name="Number">The hypercall number (<c>__HYPERVISOR_*</c>).</param>
/// <param name="Name">Xen's name, or "#n" for a number Xen 4.17 does not name.</param>
/// <param name="PageCalls">Near calls and jumps into the hypercall page slot (page + 32 × number).</param>
/// <param name="Syscalls"><c>syscall</c> with the number put in rax just before (x86-64 PV's direct hypercall).</param>
/// <param name="Vmcalls"><c>vmcall</c>/<c>vmmcall</c> with the number put in rax just before (HVM/PVH).</param>
public sealed record HypercallSites(int Number, string Name, long PageCalls, long Syscalls, long Vmcalls)
{
    public long Total => PageCalls + Syscalls + Vmcalls;
}

/// <summary>The result of <see cref="InstructionScanner.Scan(ElfFile, ulong?)"/>.</summary>
public sealed class ScanReport
{
    internal ScanReport(string source, IReadOnlyList<RegionScan> regions, ulong? hypercallPage, IReadOnlyList<HypercallSites> hypercalls, long unknownSyscalls, long unknownVmcalls)
    {
        Source = source;
        Regions = regions;
        HypercallPage = hypercallPage;
        Hypercalls = hypercalls;
        SyscallsWithUnknownNumber = unknownSyscalls;
        VmcallsWithUnknownNumber = unknownVmcalls;
    }

    /// <summary>What was decoded: "PT_LOAD segments with PF_X", "sections with SHF_EXECINSTR", or "nothing executable".</summary>
    public string Source { get; }

    public IReadOnlyList<RegionScan> Regions { get; }

    public long Instructions => Regions.Sum(r => r.Instructions);

    public long InvalidInstructions => Regions.Sum(r => r.InvalidInstructions);

    /// <summary>The hypercall page address the page calls were matched against (XEN_ELFNOTE_HYPERCALL_PAGE), or null.</summary>
    public ulong? HypercallPage { get; }

    /// <summary>Each hypercall reached at least once, by number.</summary>
    public IReadOnlyList<HypercallSites> Hypercalls { get; }

    /// <summary><c>syscall</c> instructions whose rax the sweep could not tell.</summary>
    public long SyscallsWithUnknownNumber { get; }

    /// <summary><c>vmcall</c>/<c>vmmcall</c> instructions whose rax the sweep could not tell.</summary>
    public long VmcallsWithUnknownNumber { get; }

    public long Count(InstructionClass c) => Regions.Sum(r => r.Count(c));

    public long Count(SensitivityKind k) => InstructionClasses.All.Where(c => InstructionClasses.Kind(c) == k).Sum(Count);

    /// <summary>The class's count per instruction form over all regions, most frequent first.</summary>
    public IReadOnlyList<KeyValuePair<string, long>> Forms(InstructionClass c) =>
        [.. Regions.SelectMany(r => r.Forms(c)).GroupBy(p => p.Key, StringComparer.Ordinal)
            .Select(g => new KeyValuePair<string, long>(g.Key, g.Sum(p => p.Value)))
            .OrderByDescending(p => p.Value).ThenBy(p => p.Key, StringComparer.Ordinal)];
}
