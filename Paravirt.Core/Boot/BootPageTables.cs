using System.Buffers.Binary;

namespace Paravirt.Core.Boot;

/// <summary>
/// Plans and fills the bootstrap page tables of a 64-bit PV guest: 4-level tables mapping
/// contiguous virtual ranges onto contiguous pseudo-physical frames, as libxenguest's x86-64 PV
/// builder lays them out (<c>xg_dom_x86.c</c>: one L4 shared by every range; then, per range, the
/// L3, L2 and L1 tables it needs that an earlier range does not already provide, each level in
/// ascending address order; leaf entries <c>P|RW|A</c>, upper entries <c>P|RW|A|D|U</c>; a leaf
/// that maps a page-table frame is read-only).
/// </summary>
/// <remarks>Our own code; the numbers and ordering rules are Xen's.</remarks>
internal sealed class BootPageTables
{
    public const ulong Present = 1, Writable = 2, User = 4, Accessed = 0x20, Dirty = 0x40;

    /// <summary>Leaf (L1) entry flags: libxenguest's lvl_prot[0].</summary>
    public const ulong LeafFlags = Present | Writable | Accessed;

    /// <summary>Upper-level entry flags: libxenguest's lvl_prot[1..3].</summary>
    public const ulong UpperFlags = Present | Writable | Accessed | Dirty | User;

    /// <summary>Virtual addresses are 48 bits (VIRT_BITS_X86_64); indices come from these bits.</summary>
    private const ulong VaMask = (1UL << 48) - 1;

    private readonly List<Mapping> _mappings = [];
    private readonly Dictionary<(int Level, ulong Prefix), ulong> _tables = [];
    private readonly List<PvPageTableFrame> _frames = [];

    /// <summary>One virtual range [From, To] (inclusive) mapped from pseudo-physical frame FirstPfn.</summary>
    private readonly record struct Mapping(ulong From, ulong To, ulong FirstPfn);

    /// <summary>The table frames in allocation order (L4 first), with their pfns; MFNs are filled by <see cref="Write"/>.</summary>
    public IReadOnlyList<PvPageTableFrame> Frames => _frames;

    /// <summary>The table count of the first range (start_info.nr_pt_frames).</summary>
    public int FirstRangeTables { get; private set; }

    /// <summary>How many new table frames a range [from, to] needs, given the ranges already added.</summary>
    public int Count(ulong from, ulong to)
    {
        var n = _tables.Count == 0 ? 1 : 0; // the L4
        for (var level = 3; level >= 1; level--)
        {
            n += (int)NewPrefixes(level, from, to).LongCount();
        }

        return n;
    }

    /// <summary>
    /// Adds the range [from, to] mapped from <paramref name="firstPfn"/>, its new tables at
    /// consecutive frames from <paramref name="tablePfn"/>; returns how many it used.
    /// </summary>
    public int Add(ulong from, ulong to, ulong firstPfn, ulong tablePfn)
    {
        var next = tablePfn;
        if (_tables.Count == 0)
        {
            _tables[(4, 0)] = next;
            _frames.Add(new PvPageTableFrame(next++, 0, 4));
        }

        for (var level = 3; level >= 1; level--)
        {
            foreach (var prefix in NewPrefixes(level, from, to).ToList())
            {
                _tables[(level, prefix)] = next;
                _frames.Add(new PvPageTableFrame(next++, 0, level));
            }
        }

        _mappings.Add(new Mapping(from, to, firstPfn));
        var used = (int)(next - tablePfn);
        if (_mappings.Count == 1)
        {
            FirstRangeTables = used;
        }

        return used;
    }

    /// <summary>True if <paramref name="pfn"/> holds one of the tables (mapped read-only).</summary>
    public bool IsTable(ulong pfn) => _frames.Exists(f => f.Pfn == pfn);

    /// <summary>
    /// Fills every table: each page of each range gets its leaf entry and the entries above it.
    /// <paramref name="mfnOf"/> gives a pfn's machine frame (entries hold MFNs, as in any PV guest).
    /// Returns the frames with their MFNs.
    /// </summary>
    public IReadOnlyList<PvPageTableFrame> Write(Func<ulong, ulong> mfnOf, Action<ulong, byte[]> writePage)
    {
        var pages = new Dictionary<ulong, byte[]>();
        foreach (var f in _frames)
        {
            pages[f.Pfn] = new byte[Memory.MachineMemory.PageSize];
        }

        var readOnly = new HashSet<ulong>(_frames.Select(f => f.Pfn));
        foreach (var m in _mappings)
        {
            var count = ((m.To - m.From) >> 12) + 1;
            for (ulong k = 0; k < count; k++)
            {
                var va = (m.From + (k << 12)) & VaMask;
                var pfn = m.FirstPfn + k;
                for (var level = 4; level >= 2; level--)
                {
                    var table = pages[_tables[(level, Prefix(level, va))]];
                    var child = _tables[(level - 1, Prefix(level - 1, va))];
                    Entry(table, level, va, (mfnOf(child) << 12) | UpperFlags);
                }

                var leaf = pages[_tables[(1, Prefix(1, va))]];
                var flags = readOnly.Contains(pfn) ? LeafFlags & ~Writable : LeafFlags;
                Entry(leaf, 1, va, (mfnOf(pfn) << 12) | flags);
            }
        }

        var result = new List<PvPageTableFrame>(_frames.Count);
        foreach (var f in _frames)
        {
            writePage(f.Pfn, pages[f.Pfn]);
            result.Add(f with { Mfn = mfnOf(f.Pfn) });
        }

        return result;
    }

    /// <summary>The table at <paramref name="level"/> covering <paramref name="va"/> is named by va's bits above that table's reach.</summary>
    private static ulong Prefix(int level, ulong va) => level == 4 ? 0 : (va & VaMask) >> (12 + (9 * level));

    private static void Entry(byte[] table, int level, ulong va, ulong value)
    {
        var index = (int)(((va & VaMask) >> (12 + (9 * (level - 1)))) & 511);
        BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(index * 8), value);
    }

    private IEnumerable<ulong> NewPrefixes(int level, ulong from, ulong to)
    {
        for (var p = Prefix(level, from); p <= Prefix(level, to); p++)
        {
            if (!_tables.ContainsKey((level, p)))
            {
                yield return p;
            }
        }
    }
}
