namespace Paravirt.Core.Memory;

/// <summary>What a physmap entry maps, kept in the entry's top byte.</summary>
public enum P2mType : byte
{
    /// <summary>Nothing (a hole).</summary>
    Invalid = 0,
    /// <summary>The domain's own RAM.</summary>
    Ram = 1,
    /// <summary>A hypervisor page shared with the domain (shared_info, grant-table frames); owned by the domain.</summary>
    Shared = 2,
    /// <summary>Another domain's frame mapped through a grant, writable. The grant mapping holds the frame.</summary>
    GrantMapRw = 3,
    /// <summary>Another domain's frame mapped through a grant, read-only.</summary>
    GrantMapRo = 4,
}

/// <summary>
/// One domain's pseudo-physical map (p2m): guest frame number → machine frame number and type.
/// Dense for the domain's RAM range, sparse (bounded by the caller) above it for frames the
/// guest places with <c>XENMEM_add_to_physmap</c>. Entries change atomically: a concurrent reader
/// sees the old or the new mapping, never a torn one.
/// </summary>
public sealed class PhysMap
{
    /// <summary>The highest guest frame number a domain may use: 2^40 frames, x86-64's 52 physical address bits.</summary>
    public const ulong MaxGfn = (1UL << 40) - 1;

    private const int TypeShift = 56;
    private const ulong MfnMask = (1UL << TypeShift) - 1;

    private readonly ulong[] _dense;
    private readonly Dictionary<ulong, ulong> _sparse = new();
    private readonly Lock _sparseLock = new();

    public PhysMap(long denseFrames)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(denseFrames);
        _dense = new ulong[denseFrames];
    }

    /// <summary>Guest frames below this are stored densely (the RAM range).</summary>
    public long DenseFrames => _dense.Length;

    /// <summary>Entries placed above the dense range.</summary>
    public int SparseCount
    {
        get
        {
            lock (_sparseLock)
            {
                return _sparse.Count;
            }
        }
    }

    /// <summary>
    /// True if <paramref name="gfn"/> is in the dense range and its entry still maps
    /// <paramref name="mfn"/> as <paramref name="type"/>: one plain read, for callers that hold the
    /// frame and only need to know the mapping has not changed since they looked it up.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal bool DenseStillMaps(ulong gfn, ulong mfn, P2mType type) =>
        gfn < (ulong)_dense.Length && Volatile.Read(ref _dense[gfn]) == (mfn | ((ulong)type << TypeShift));

    public bool TryLookup(ulong gfn, out ulong mfn, out P2mType type)
    {
        ulong entry;
        if (gfn < (ulong)_dense.Length)
        {
            entry = Volatile.Read(ref _dense[gfn]);
        }
        else
        {
            lock (_sparseLock)
            {
                _sparse.TryGetValue(gfn, out entry);
            }
        }

        type = (P2mType)(entry >> TypeShift);
        mfn = entry & MfnMask;
        return type != P2mType.Invalid;
    }

    /// <summary>Sets an entry and returns the one it replaced (<see cref="P2mType.Invalid"/> if none).</summary>
    public (ulong Mfn, P2mType Type) Set(ulong gfn, ulong mfn, P2mType type)
    {
        if (gfn > MaxGfn)
        {
            throw new ArgumentOutOfRangeException(nameof(gfn), gfn, $"guest frame above the highest allowed ({MaxGfn:x})");
        }

        if (type == P2mType.Invalid || mfn > MfnMask)
        {
            throw new ArgumentException($"cannot map gfn {gfn:x} to mfn {mfn:x} as {type}", nameof(type));
        }

        return Exchange(gfn, mfn | ((ulong)type << TypeShift));
    }

    /// <summary>Removes an entry and returns what it held.</summary>
    public (ulong Mfn, P2mType Type) Clear(ulong gfn) => gfn > MaxGfn ? (0, P2mType.Invalid) : Exchange(gfn, 0);

    /// <summary>Every present entry, for teardown and accounting.</summary>
    public List<(ulong Gfn, ulong Mfn, P2mType Type)> Entries()
    {
        var list = new List<(ulong, ulong, P2mType)>();
        for (var gfn = 0; gfn < _dense.Length; gfn++)
        {
            var e = Volatile.Read(ref _dense[gfn]);
            if (e != 0)
            {
                list.Add(((ulong)gfn, e & MfnMask, (P2mType)(e >> TypeShift)));
            }
        }

        lock (_sparseLock)
        {
            foreach (var (gfn, e) in _sparse)
            {
                list.Add((gfn, e & MfnMask, (P2mType)(e >> TypeShift)));
            }
        }

        return list;
    }

    private (ulong, P2mType) Exchange(ulong gfn, ulong entry)
    {
        ulong old;
        if (gfn < (ulong)_dense.Length)
        {
            old = Interlocked.Exchange(ref _dense[gfn], entry);
        }
        else
        {
            lock (_sparseLock)
            {
                _sparse.TryGetValue(gfn, out old);
                if (entry == 0)
                {
                    _sparse.Remove(gfn);
                }
                else
                {
                    _sparse[gfn] = entry;
                }
            }
        }

        return (old & MfnMask, (P2mType)(old >> TypeShift));
    }
}
