using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>One page of the guest's RAM: its pseudo-physical frame, address, and the frame number Xen wants for it.</summary>
/// <param name="Pfn">The pseudo-physical frame number.</param>
/// <param name="Frame">What to put in a grant entry, a ring reference or a hypercall: the GFN (= pfn) when translated, the MFN (from the P→M list) for classic PV.</param>
public readonly record struct GuestPage(ulong Pfn, ulong Frame)
{
    /// <summary>The page's guest-physical address (a managed guest runs unpaged, so this is also its virtual address).</summary>
    public ulong Address => Pfn << PageAllocator.PageShift;
}

/// <summary>
/// The guest's page allocator over the RAM the builder left free: pfn <c>pt_base/4096</c> up to
/// <c>nr_pages</c>. Pages come back zeroed. It also hands out guest frame numbers above RAM
/// (<see cref="AllocatePhysmapSlot"/>) where a translated guest places hypervisor pages
/// (shared_info, grant frames) with XENMEM_add_to_physmap. Not thread-safe on its own: callers
/// hold the kernel's lock (as a kernel's allocator takes its own spinlock).
/// </summary>
public sealed class PageAllocator
{
    /// <summary>4 KiB pages.</summary>
    public const int PageSize = 4096;

    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = 12;

    private readonly IGuestPhysicalMemory _memory;
    private readonly ulong[]? _p2m;
    private readonly Stack<ulong> _free = new();
    private readonly HashSet<ulong> _allocated = [];
    private readonly Lock _lock = new();
    private ulong _nextFree;
    private ulong _nextSlot;

    internal PageAllocator(IGuestPhysicalMemory memory, BootInfo boot)
    {
        _memory = memory;
        FirstFreePfn = (boot.PtBase + PageSize - 1) >> PageShift;
        EndPfn = boot.NrPages;
        _nextFree = FirstFreePfn;
        _nextSlot = boot.NrPages;
        if (!boot.IsAutoTranslated)
        {
            // Classic PV: the P→M list the builder wrote, one 8-byte MFN per pfn.
            _p2m = new ulong[boot.NrPages];
            for (var pfn = 0UL; pfn < boot.NrPages; pfn++)
            {
                _p2m[pfn] = memory.Read<ulong>(boot.MfnList + (pfn * 8));
            }
        }
    }

    /// <summary>The first pfn the allocator manages.</summary>
    public ulong FirstFreePfn { get; }

    /// <summary>One past the last pfn of RAM.</summary>
    public ulong EndPfn { get; }

    /// <summary>Pages currently allocated.</summary>
    public int AllocatedCount
    {
        get
        {
            lock (_lock)
            {
                return _allocated.Count;
            }
        }
    }

    /// <summary>Pages still free.</summary>
    public long FreeCount
    {
        get
        {
            lock (_lock)
            {
                return (long)(EndPfn - _nextFree) + _free.Count;
            }
        }
    }

    /// <summary>The frame number Xen expects for <paramref name="pfn"/>: the pfn itself when translated, its MFN for classic PV.</summary>
    public ulong FrameOf(ulong pfn)
    {
        if (_p2m is null)
        {
            return pfn;
        }

        return pfn < (ulong)_p2m.Length ? _p2m[pfn] : throw new ArgumentOutOfRangeException(nameof(pfn), pfn, $"pfn beyond RAM ({_p2m.Length} pages)");
    }

    /// <summary>The pfn of a frame number Xen gave (a GFN, or an MFN looked up in the P→M list for classic PV), or null when it is not ours.</summary>
    public ulong? PfnOf(ulong frame)
    {
        if (_p2m is null)
        {
            return frame < EndPfn ? frame : null;
        }

        var i = Array.IndexOf(_p2m, frame);
        return i < 0 ? null : (ulong)i;
    }

    /// <summary>Allocates one zeroed page.</summary>
    /// <exception cref="InvalidOperationException">The guest is out of free pages.</exception>
    public GuestPage Allocate()
    {
        ulong pfn;
        lock (_lock)
        {
            if (!_free.TryPop(out pfn))
            {
                if (_nextFree >= EndPfn)
                {
                    throw new InvalidOperationException($"out of guest memory: all {EndPfn - FirstFreePfn} free pages are in use");
                }

                pfn = _nextFree++;
            }

            _allocated.Add(pfn);
        }

        Zero(pfn);
        return new GuestPage(pfn, FrameOf(pfn));
    }

    /// <summary>
    /// Allocates <paramref name="count"/> zeroed pages that are contiguous in guest-physical memory
    /// (from the never-used region; freed pages are not coalesced). Returns the first.
    /// </summary>
    public GuestPage AllocateContiguous(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ulong first;
        lock (_lock)
        {
            if (_nextFree + (ulong)count > EndPfn)
            {
                throw new InvalidOperationException($"out of guest memory: no {count} contiguous free pages");
            }

            first = _nextFree;
            _nextFree += (ulong)count;
            for (var i = 0UL; i < (ulong)count; i++)
            {
                _allocated.Add(first + i);
            }
        }

        for (var i = 0UL; i < (ulong)count; i++)
        {
            Zero(first + i);
        }

        return new GuestPage(first, FrameOf(first));
    }

    private void Zero(ulong pfn)
    {
        Span<byte> zero = stackalloc byte[256];
        zero.Clear();
        for (var off = 0; off < PageSize; off += zero.Length)
        {
            _memory.Write((pfn << PageShift) + (ulong)off, zero);
        }
    }

    /// <summary>Allocates <paramref name="count"/> zeroed pages (not necessarily contiguous).</summary>
    public GuestPage[] Allocate(int count)
    {
        var pages = new GuestPage[count];
        for (var i = 0; i < count; i++)
        {
            pages[i] = Allocate();
        }

        return pages;
    }

    /// <summary>Returns a page. The caller must have ended every grant of it first.</summary>
    /// <exception cref="InvalidOperationException">The page was not allocated (a double free).</exception>
    public void Free(GuestPage page)
    {
        lock (_lock)
        {
            if (!_allocated.Remove(page.Pfn))
            {
                throw new InvalidOperationException($"pfn 0x{page.Pfn:x} freed but not allocated");
            }

            _free.Push(page.Pfn);
        }
    }

    /// <summary>
    /// A guest frame number above RAM, never used before, where a translated guest places a
    /// hypervisor page (XENMEM_add_to_physmap). Xen bounds these per domain; the stub never reuses one.
    /// </summary>
    public ulong AllocatePhysmapSlot()
    {
        lock (_lock)
        {
            return _nextSlot++;
        }
    }
}
