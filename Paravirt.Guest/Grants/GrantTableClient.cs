using Paravirt.Core.Abi;

namespace Paravirt.Guest;

/// <summary>
/// The granting side of the grant table, as a frontend uses it (xen/grant_table.h): the table's
/// frames placed in the guest's memory, a free list of references, granting another domain
/// access to one of our frames, and ending that access, which fails while the other end still
/// has the page mapped or is copying (GTF_reading / GTF_writing).
/// <list type="bullet">
/// <item>Translated guests place the shared frames (and, for v2, the status frames) with
/// XENMEM_add_to_physmap(XENMAPSPACE_grant_table), after GNTTABOP_set_version for v2.</item>
/// <item>Classic PV gets machine frames from GNTTABOP_setup_table, which a kernel maps with its
/// page tables; a managed guest runs unpaged and cannot, so <see cref="Setup"/> refuses.</item>
/// </list>
/// The first <c>GNTTAB_NR_RESERVED_ENTRIES</c> (8) references are left to the toolstack.
/// </summary>
public sealed class GrantTableClient
{
    private const uint InUse = GrantTable.GTF_reading | GrantTable.GTF_writing;
    private readonly XenGuest _guest;
    private readonly ulong[] _shared;
    private readonly ulong[] _status;
    private readonly Stack<uint> _free = new();
    private readonly HashSet<uint> _granted = [];
    private readonly Lock _lock = new();

    private GrantTableClient(XenGuest guest, int version, ulong[] shared, ulong[] status)
    {
        _guest = guest;
        Version = version;
        _shared = shared;
        _status = status;
        var perFrame = version == 1 ? PageAllocator.PageSize / 8 : PageAllocator.PageSize / 16;
        Capacity = (uint)(shared.Length * perFrame);
        for (var r = Capacity; r-- > GrantTable.GNTTAB_NR_RESERVED_ENTRIES;)
        {
            _free.Push(r);
        }
    }

    /// <summary>The table format: 1 (8-byte entries) or 2 (16-byte entries and separate status frames).</summary>
    public int Version { get; }

    /// <summary>References the table holds (including the reserved ones).</summary>
    public uint Capacity { get; }

    /// <summary>Guest addresses of the shared frames.</summary>
    public IReadOnlyList<ulong> SharedFrames => _shared;

    /// <summary>Guest addresses of the v2 status frames (empty for v1).</summary>
    public IReadOnlyList<ulong> StatusFrames => _status;

    /// <summary>References free to grant.</summary>
    public int FreeCount
    {
        get
        {
            lock (_lock)
            {
                return _free.Count;
            }
        }
    }

    /// <summary>
    /// Sets up the grant table: <paramref name="version"/> 1 or 2, <paramref name="frames"/>
    /// shared frames placed above RAM.
    /// </summary>
    /// <exception cref="InvalidOperationException">A hypercall failed (the message has its errno or GNTST status), or the guest is classic PV.</exception>
    public static GrantTableClient Setup(XenGuest guest, int version = 1, int frames = 1)
    {
        ArgumentNullException.ThrowIfNull(guest);
        if (version is not (1 or 2))
        {
            throw new ArgumentOutOfRangeException(nameof(version), version, "grant table versions are 1 and 2");
        }

        var hc = guest.Hypercalls;
        if (!guest.IsAutoTranslated)
        {
            // Ask anyway, as a PV kernel would, so the message can say what Xen gave.
            Span<ulong> mfns = stackalloc ulong[frames];
            var rc = hc.GnttabSetupTable(mfns, out var st);
            throw new InvalidOperationException(
                $"classic PV: GNTTABOP_setup_table returned {XenGuest.ErrnoName(rc)}/GNTST {st} with machine frame {(frames > 0 ? mfns[0] : 0)}; " +
                "a PV kernel maps these MFNs with its page tables (mmu_update), which an unpaged managed guest cannot do");
        }

        XenGuest.Check(hc.GnttabSetVersion((uint)version, out var current), $"GNTTABOP_set_version({version})");
        if (current != version)
        {
            throw new InvalidOperationException($"GNTTABOP_set_version({version}) left version {current}");
        }

        var shared = new ulong[frames];
        for (var i = 0; i < frames; i++)
        {
            var slot = guest.Pages.AllocatePhysmapSlot();
            XenGuest.Check(hc.AddToPhysmap(XenMem.XENMAPSPACE_grant_table, (ulong)i, slot), $"XENMEM_add_to_physmap(XENMAPSPACE_grant_table, {i})");
            shared[i] = slot << PageAllocator.PageShift;
        }

        var status = Array.Empty<ulong>();
        if (version == 2)
        {
            var count = ((frames * (PageAllocator.PageSize / 16)) + (PageAllocator.PageSize / 2) - 1) / (PageAllocator.PageSize / 2);
            status = new ulong[count];
            for (var i = 0; i < count; i++)
            {
                var slot = guest.Pages.AllocatePhysmapSlot();
                XenGuest.Check(hc.AddToPhysmap(XenMem.XENMAPSPACE_grant_table, (ulong)i | XenMem.XENMAPIDX_grant_table_status, slot), $"XENMEM_add_to_physmap(grant status frame {i})");
                status[i] = slot << PageAllocator.PageShift;
            }
        }

        return new GrantTableClient(guest, version, shared, status);
    }

    private ulong EntryAddress(uint gref)
    {
        if (gref >= Capacity)
        {
            throw new ArgumentOutOfRangeException(nameof(gref), gref, $"the table has {Capacity} references");
        }

        var size = Version == 1 ? 8u : 16u;
        var perFrame = (uint)PageAllocator.PageSize / size;
        return _shared[gref / perFrame] + ((gref % perFrame) * size);
    }

    private ulong StatusAddress(uint gref)
    {
        const uint PerFrame = PageAllocator.PageSize / 2;
        return _status[gref / PerFrame] + ((gref % PerFrame) * 2);
    }

    /// <summary>
    /// gnttab_grant_foreign_access: takes a free reference and lets <paramref name="domid"/> map
    /// or copy <paramref name="frame"/> (a <see cref="GuestPage.Frame"/>: GFN or MFN). The entry's
    /// domid and frame are written first, the flags (GTF_permit_access, GTF_readonly) last, so Xen
    /// never sees a live entry half-written. Returns 0 with the reference, or -ENOSPC when none is free.
    /// </summary>
    public long GrantAccess(ushort domid, ulong frame, bool readOnly, out uint gref)
    {
        lock (_lock)
        {
            if (!_free.TryPop(out gref))
            {
                return -(long)Errno.ENOSPC;
            }

            _granted.Add(gref);
        }

        var mem = _guest.Memory;
        var entry = EntryAddress(gref);
        mem.WriteVolatile(entry + 2, 2, domid);
        if (Version == 1)
        {
            mem.WriteVolatile(entry + 4, 4, (uint)frame);
        }
        else
        {
            mem.WriteVolatile(entry + 8, 8, frame);
        }

        mem.WriteVolatile(entry, 2, GrantTable.GTF_permit_access | (readOnly ? GrantTable.GTF_readonly : 0));
        return 0;
    }

    /// <summary>Grants access to <paramref name="page"/> (its frame number as Xen wants it).</summary>
    public long GrantAccess(ushort domid, GuestPage page, bool readOnly, out uint gref) => GrantAccess(domid, page.Frame, readOnly, out gref);

    /// <summary>The entry's flags (for v2, with the status frame's GTF_reading/GTF_writing folded in).</summary>
    public ushort Flags(uint gref)
    {
        var flags = (ushort)_guest.Memory.ReadVolatile(EntryAddress(gref), 2);
        return Version == 1 ? flags : (ushort)(flags | _guest.Memory.ReadVolatile(StatusAddress(gref), 2));
    }

    /// <summary>True while the other end has the grant mapped or is copying (GTF_reading / GTF_writing).</summary>
    public bool IsInUse(uint gref) => (Flags(gref) & InUse) != 0;

    /// <summary>
    /// gnttab_end_foreign_access_ref: revoke the grant. v1: the flags word is cleared with a
    /// compare-exchange only while neither GTF_reading nor GTF_writing is set (Xen sets them with
    /// its own compare-exchange when it maps or copies). v2: the flags are cleared, then the status
    /// frame says whether the other end still uses the page. Returns 0 and frees the reference, or
    /// -EBUSY while it is in use (the reference stays allocated: end it again later).
    /// </summary>
    public long EndAccess(uint gref)
    {
        lock (_lock)
        {
            if (!_granted.Contains(gref))
            {
                return -(long)Errno.EINVAL;
            }
        }

        var mem = _guest.Memory;
        var entry = EntryAddress(gref);
        if (Version == 1)
        {
            // flags and domid share one aligned 32-bit word: compare-exchange it whole.
            var word = (uint)mem.ReadVolatile(entry, 4);
            for (var i = 0; ; i++)
            {
                if ((word & InUse) != 0)
                {
                    return -(long)Errno.EBUSY;
                }

                var seen = mem.CompareExchange32(entry, word & 0xFFFF_0000u, word);
                if (seen == word)
                {
                    break;
                }

                word = seen;
                if (i > 10_000)
                {
                    return -(long)Errno.EBUSY;
                }
            }
        }
        else
        {
            mem.WriteVolatile(entry, 2, 0);
            Thread.MemoryBarrier();
            if ((mem.ReadVolatile(StatusAddress(gref), 2) & InUse) != 0)
            {
                return -(long)Errno.EBUSY;
            }
        }

        lock (_lock)
        {
            _granted.Remove(gref);
            _free.Push(gref);
        }

        return 0;
    }

    /// <summary>GNTTABOP_query_size: frames in use and the domain's maximum.</summary>
    public long Query(out uint frames, out uint maxFrames)
    {
        var rc = _guest.Hypercalls.GnttabQuerySize(out frames, out maxFrames, out var status);
        return rc < 0 ? rc : status;
    }
}
