namespace Paravirt.Core.Memory.Pv;

/// <summary>What a machine frame is used as (Xen's <c>PGT_*</c> type in <c>type_info</c>).</summary>
public enum PageType : byte
{
    /// <summary>No type yet (Xen's PGT_none).</summary>
    None = 0,

    /// <summary>A validated level-1 page table.</summary>
    L1 = 1,

    /// <summary>A validated level-2 page table.</summary>
    L2 = 2,

    /// <summary>A validated level-3 page table.</summary>
    L3 = 3,

    /// <summary>A validated level-4 (root) page table.</summary>
    L4 = 4,

    /// <summary>A GDT or LDT frame (PGT_seg_desc_page).</summary>
    SegDesc = 5,

    /// <summary>A frame something may write to: a writable mapping, a hypervisor view (PGT_writable_page).</summary>
    Writable = 6,
}

/// <summary>
/// Xen's <c>type_info</c> for every machine frame of one hypervisor, beside <see cref="FrameTable"/>:
/// a type, a type count, and the validated and pinned flags, packed in one 64-bit word per frame
/// that changes only by compare-exchange. A frame's type can change only while its type count is
/// 0, so a frame with a writable reference can never become a page table and a page table can
/// never gain a writable reference: that is the whole safety argument of the classic PV memory
/// model (see docs/pv-memory.md).
/// </summary>
/// <remarks>
/// Page-table types are taken and dropped only under the owning domain's PV lock
/// (<see cref="PvDomainMemory"/>); a validation in progress is the state "page-table type, count
/// 1, not validated", in which every other taker fails. Writable references (hypervisor views of a
/// page, writable mappings) are lock-free.
/// </remarks>
internal sealed class PageTypeTable
{
    private const long CountMask = 0xFFFF_FFFFL;
    private const int TypeShift = 32;
    private const long TypeMask = 0xFFL << TypeShift;
    private const long ValidatedBit = 1L << 40;
    private const long PinnedBit = 1L << 41;

    private readonly long[] _state;

    public PageTypeTable(long frames)
    {
        _state = new long[frames];
    }

    /// <summary>The outcome of taking a type reference.</summary>
    public enum GetResult
    {
        /// <summary>The reference is held and the frame is validated for the type.</summary>
        Done,

        /// <summary>The reference is held (count 1) but the frame must be validated now; then <see cref="FinishValidation"/>.</summary>
        MustValidate,

        /// <summary>The frame has another type (or is being validated): Xen's type mismatch.</summary>
        Mismatch,
    }

    public PageType TypeOf(ulong mfn) => (PageType)((Volatile.Read(ref _state[mfn]) & TypeMask) >> TypeShift);

    public int CountOf(ulong mfn) => (int)(Volatile.Read(ref _state[mfn]) & CountMask);

    public bool IsPinned(ulong mfn) => (Volatile.Read(ref _state[mfn]) & PinnedBit) != 0;

    public bool IsValidated(ulong mfn) => (Volatile.Read(ref _state[mfn]) & ValidatedBit) != 0;

    /// <summary>True if the frame is in use as a page table or descriptor table (a type other than writable, with references).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public bool IsProtected(ulong mfn)
    {
        var s = Volatile.Read(ref _state[mfn]);
        var type = (PageType)((s & TypeMask) >> TypeShift);
        return (s & CountMask) != 0 && type is not (PageType.Writable or PageType.None);
    }

    /// <summary>A frame freshly allocated: no type, no references.</summary>
    public void Reset(ulong mfn) => Volatile.Write(ref _state[mfn], 0);

    /// <summary>
    /// Takes one reference of <paramref name="type"/>. <paramref name="previous"/> is the type the
    /// frame had: when it differs and the result is <see cref="GetResult.MustValidate"/>, the frame
    /// changed type, so cached translations of its old use must be flushed.
    /// </summary>
    public GetResult TryGet(ulong mfn, PageType type, out PageType previous)
    {
        ref var word = ref _state[mfn];
        while (true)
        {
            var x = Volatile.Read(ref word);
            var count = x & CountMask;
            var current = (PageType)((x & TypeMask) >> TypeShift);
            previous = current;
            long nx;
            if (count == CountMask)
            {
                return GetResult.Mismatch; // type count overflow: Xen answers -EINVAL too
            }

            if (count == 0)
            {
                // Type changes are allowed at count 0; a new type needs validating again.
                nx = current == type ? x + 1 : (x & PinnedBit) | ((long)type << TypeShift) | 1;
                if (type is PageType.Writable or PageType.None)
                {
                    nx |= ValidatedBit;
                }
            }
            else if (current != type || (x & ValidatedBit) == 0)
            {
                return GetResult.Mismatch;
            }
            else
            {
                nx = x + 1;
            }

            if (Interlocked.CompareExchange(ref word, nx, x) == x)
            {
                return (nx & ValidatedBit) != 0 ? GetResult.Done : GetResult.MustValidate;
            }
        }
    }

    /// <summary>Ends a validation begun by <see cref="TryGet"/>: validated on success, back to no type and no reference on failure.</summary>
    public void FinishValidation(ulong mfn, bool ok)
    {
        ref var word = ref _state[mfn];
        while (true)
        {
            var x = Volatile.Read(ref word);
            var nx = ok ? x | ValidatedBit : 0;
            if (Interlocked.CompareExchange(ref word, nx, x) == x)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Drops one type reference. Returns true when it was the last reference of a validated page
    /// table: the frame is then left "being devalidated" (count 1, not validated) and the caller
    /// drops what its entries hold and calls <see cref="FinishDevalidation"/>.
    /// </summary>
    public bool Put(ulong mfn)
    {
        ref var word = ref _state[mfn];
        while (true)
        {
            var x = Volatile.Read(ref word);
            var count = x & CountMask;
            if (count == 0)
            {
                throw new InvalidOperationException($"machine frame {mfn:x}: type reference dropped more often than taken");
            }

            var type = (PageType)((x & TypeMask) >> TypeShift);
            var table = type is >= PageType.L1 and <= PageType.L4;
            if (count == 1 && table && (x & ValidatedBit) != 0)
            {
                if (Interlocked.CompareExchange(ref word, x & ~(ValidatedBit | PinnedBit), x) == x)
                {
                    return true;
                }

                continue;
            }

            // A page table or descriptor page loses its validation with its last reference.
            var nx = x - 1;
            if (count == 1 && type != PageType.Writable)
            {
                nx &= ~(ValidatedBit | PinnedBit);
            }

            if (Interlocked.CompareExchange(ref word, nx, x) == x)
            {
                return false;
            }
        }
    }

    /// <summary>Ends a devalidation begun by <see cref="Put"/>: count 0, the type kept but no longer validated.</summary>
    public void FinishDevalidation(ulong mfn)
    {
        ref var word = ref _state[mfn];
        while (true)
        {
            var x = Volatile.Read(ref word);
            var nx = x & TypeMask;
            if (Interlocked.CompareExchange(ref word, nx, x) == x)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Teardown of a table whose entries were forcibly dropped while references remain: it keeps
    /// its count but loses its type, so the remaining puts do not drop the entries again.
    /// </summary>
    public void Abandon(ulong mfn)
    {
        ref var word = ref _state[mfn];
        while (true)
        {
            var x = Volatile.Read(ref word);
            if (Interlocked.CompareExchange(ref word, x & CountMask, x) == x)
            {
                return;
            }
        }
    }

    /// <summary>Sets the pinned flag; false if it was already set.</summary>
    public bool TrySetPinned(ulong mfn) => (Interlocked.Or(ref _state[mfn], PinnedBit) & PinnedBit) == 0;

    /// <summary>Clears the pinned flag; false if it was not set.</summary>
    public bool TryClearPinned(ulong mfn) => (Interlocked.And(ref _state[mfn], ~PinnedBit) & PinnedBit) != 0;

    /// <summary>Frames whose pinned flag is set (for teardown: the caller filters by owner).</summary>
    public IEnumerable<ulong> PinnedFrames()
    {
        for (var mfn = 0; mfn < _state.Length; mfn++)
        {
            if ((Volatile.Read(ref _state[mfn]) & PinnedBit) != 0)
            {
                yield return (ulong)mfn;
            }
        }
    }

    /// <summary>Frames holding a validated page-table type (for teardown's last sweep).</summary>
    public IEnumerable<ulong> ValidatedTables()
    {
        for (var mfn = 0; mfn < _state.Length; mfn++)
        {
            var s = Volatile.Read(ref _state[mfn]);
            var type = (PageType)((s & TypeMask) >> TypeShift);
            if ((s & ValidatedBit) != 0 && (s & CountMask) != 0 && type is >= PageType.L1 and <= PageType.L4)
            {
                yield return (ulong)mfn;
            }
        }
    }
}
