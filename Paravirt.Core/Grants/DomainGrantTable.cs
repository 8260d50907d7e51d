using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Grants;

/// <summary>
/// One domain's grant table (Xen's <c>struct grant_table</c>), in both of its roles:
/// <list type="bullet">
/// <item>as a granter: the shared frames the domain writes its grant entries into (hypervisor pages
/// owned by the domain, like shared_info, not counted in tot_pages), the v2 status frames, and the
/// active entries recording who has pinned each grant;</item>
/// <item>as a mapper: the maptrack, one handle per grant this domain has mapped from someone else.</item>
/// </list>
/// The guest changes its entries at any moment, so the header word is only ever read once per
/// decision and changed with compare-exchange (Xen's _set_status); the hypervisor's own flag
/// updates are single atomic instructions. One lock per table stands for Xen's grant lock and
/// active-entry locks; the maptrack has its own; no code holds two tables' locks at once.
/// </summary>
internal sealed class DomainGrantTable
{
    /// <summary>grant_entry_v1 is 8 bytes.</summary>
    public const int EntriesPerFrameV1 = MachineMemory.PageSize / 8;

    /// <summary>grant_entry_v2 is 16 bytes.</summary>
    public const int EntriesPerFrameV2 = MachineMemory.PageSize / 16;

    /// <summary>grant_status_t is 16 bits.</summary>
    public const int StatusPerFrame = MachineMemory.PageSize / 2;

    /// <summary>Xen's MAPTRACK_PER_PAGE: struct grant_mapping is 8 bytes.</summary>
    public const int MaptrackPerFrame = MachineMemory.PageSize / 8;

    // Pin counts of an active entry, 8 bits each (Xen's GNTPIN_*): host write, host read, device write, device read.
    public const uint PinHostWrite = 1u << 0;
    public const uint PinHostRead = 1u << 8;
    public const uint PinDeviceWrite = 1u << 16;
    public const uint PinDeviceRead = 1u << 24;
    private const uint PinWriteMask = (0xFFu * PinHostWrite) | (0xFFu * PinDeviceWrite);

    private const ushort CacheFlags = (ushort)(GrantTable.GTF_PAT | GrantTable.GTF_PWT | GrantTable.GTF_PCD);

    private readonly Domain _domain;
    private readonly Lock _lock = new();
    private readonly List<PinnedPage> _shared = [];
    private readonly List<PinnedPage> _status = [];
    private Active[] _active = [];
    private int _version = 1;
    private bool _released;

    private readonly Lock _maptrackLock = new();
    private readonly List<GrantMapping?> _maptrack = [];
    private readonly Stack<uint> _freeHandles = new();

    public DomainGrantTable(Domain domain) => _domain = domain;

    private struct Active
    {
        public uint Pin;
        public ushort Domid;
        public ulong Mfn;
        public ushort Start;
        public ushort Length;
        public bool IsSubPage;
    }

    /// <summary>The grant table version (1 or 2).</summary>
    public int Version
    {
        get
        {
            lock (_lock)
            {
                return _version;
            }
        }
    }

    /// <summary>Shared frames now (Xen's nr_grant_frames).</summary>
    public int FrameCount
    {
        get
        {
            lock (_lock)
            {
                return _shared.Count;
            }
        }
    }

    /// <summary>Status frames now (0 under version 1).</summary>
    public int StatusFrameCount
    {
        get
        {
            lock (_lock)
            {
                return _status.Count;
            }
        }
    }

    public int MaxFrames => _domain.Limits.MaxGrantFrames;

    /// <summary>The most grants this domain may have mapped at once: max_maptrack_frames × MAPTRACK_PER_PAGE.</summary>
    public int MaptrackLimit => (int)Math.Min((long)Math.Max(0, _domain.Limits.MaxMaptrackFrames) * MaptrackPerFrame, int.MaxValue);

    /// <summary>Handles in use.</summary>
    public int MappingCount
    {
        get
        {
            lock (_maptrackLock)
            {
                return _maptrack.Count - _freeHandles.Count;
            }
        }
    }

    /// <summary>grant_table_init: one frame (INITIAL_NR_GRANT_FRAMES) from the start.</summary>
    public bool Initialise()
    {
        lock (_lock)
        {
            return GrowLocked(1);
        }
    }

    private int EntriesLocked => _version == 1 ? _shared.Count * EntriesPerFrameV1 : _shared.Count * EntriesPerFrameV2;

    private static int StatusFramesFor(int grantFrames) =>
        (int)(((long)grantFrames * EntriesPerFrameV2 + StatusPerFrame - 1) / StatusPerFrame);

    /// <summary>gnttab_grow_table: all new frames or none.</summary>
    private bool GrowLocked(int frames)
    {
        frames = Math.Max(frames, 1);
        if (_released || frames > MaxFrames)
        {
            return false;
        }

        var added = new List<PinnedPage>();
        var addedStatus = new List<PinnedPage>();
        var ok = true;
        for (var i = _shared.Count; ok && i < frames; i++)
        {
            ok = Allocate(added);
        }

        if (ok && _version == 2)
        {
            for (var i = _status.Count; ok && i < StatusFramesFor(frames); i++)
            {
                ok = Allocate(addedStatus);
            }
        }

        if (!ok)
        {
            added.ForEach(Free);
            addedStatus.ForEach(Free);
            return false;
        }

        _shared.AddRange(added);
        _status.AddRange(addedStatus);
        var entries = _shared.Count * EntriesPerFrameV1;
        if (_active.Length < entries)
        {
            Array.Resize(ref _active, entries);
        }

        return true;
    }

    private bool Allocate(List<PinnedPage> into)
    {
        var frames = _domain.Hypervisor.Frames;
        if (!frames.TryAllocate(_domain.Id, out var mfn))
        {
            return false;
        }

        into.Add(PinnedPage.TryPin(frames, mfn, _domain.Id) ?? throw new InvalidOperationException("a frame just allocated could not be pinned"));
        return true;
    }

    private void Free(PinnedPage page)
    {
        var mfn = page.Mfn;
        page.Dispose();
        _domain.Hypervisor.Frames.Release(mfn);
    }

    /// <summary>The number a guest uses for a frame: its GFN (m2p, ~0 when not placed) if translated, else the MFN (Xen's mfn_to_gfn).</summary>
    private ulong GuestNumber(ulong mfn) => _domain.IsTranslated ? _domain.Hypervisor.Frames.MachineToPhys(mfn) : mfn;

    /// <summary>Frees every frame when the domain is destroyed; later operations on this table fail.</summary>
    public void ReleaseFrames()
    {
        lock (_lock)
        {
            _released = true;
            _shared.ForEach(Free);
            _status.ForEach(Free);
            _shared.Clear();
            _status.Clear();
            _active = [];
        }
    }

    // ---- Table-level operations (setup_table, query_size, set_version, get_status_frames, map_frame) ----

    /// <summary>gnttab_setup_table: grows to <paramref name="nrFrames"/> and returns their guest numbers.</summary>
    public GrantStatus SetupTable(uint nrFrames, out ulong[] frames)
    {
        frames = [];
        lock (_lock)
        {
            if (_released || nrFrames > (uint)MaxFrames)
            {
                return GrantStatus.GeneralError;
            }

            var n = (int)nrFrames;
            if ((n > _shared.Count || (_version == 2 && StatusFramesFor(n) > _status.Count)) && !GrowLocked(n))
            {
                return GrantStatus.GeneralError;
            }

            frames = new ulong[n];
            for (var i = 0; i < n; i++)
            {
                frames[i] = GuestNumber(_shared[i].Mfn);
            }

            return GrantStatus.Okay;
        }
    }

    /// <summary>gnttab_get_status_frames: at most as many as exist.</summary>
    public GrantStatus GetStatusFrames(uint nrFrames, out ulong[] frames)
    {
        frames = [];
        lock (_lock)
        {
            if (nrFrames > (uint)_status.Count)
            {
                return GrantStatus.GeneralError;
            }

            frames = new ulong[nrFrames];
            for (var i = 0; i < frames.Length; i++)
            {
                frames[i] = GuestNumber(_status[i].Mfn);
            }

            return GrantStatus.Okay;
        }
    }

    /// <summary>
    /// gnttab_map_frame_begin for XENMAPSPACE_grant_table: the MFN of shared frame
    /// <c>idx</c> (or status frame, with XENMAPIDX_grant_table_status under v2), growing
    /// the table up to the limit; a reference is taken on the frame for the caller to put.
    /// Xen takes the index as an unsigned int, and so does this.
    /// </summary>
    public Errno? AcquireFrameForPhysmap(ulong rawIdx, out ulong mfn)
    {
        mfn = 0;
        lock (_lock)
        {
            if (_released)
            {
                return Errno.EINVAL;
            }

            var idx = (uint)rawIdx;
            PinnedPage page;
            if (_version == 2 && (idx & XenMem.XENMAPIDX_grant_table_status) != 0)
            {
                idx &= ~XenMem.XENMAPIDX_grant_table_status;
                if (idx >= (uint)_status.Count)
                {
                    // Enough grant frames for status frame idx to exist.
                    var grant = (long)(idx + 1) * StatusPerFrame / EntriesPerFrameV2;
                    if (grant <= MaxFrames)
                    {
                        GrowLocked((int)grant);
                    }

                    if (idx >= (uint)_status.Count)
                    {
                        return Errno.EINVAL;
                    }
                }

                page = _status[(int)idx];
            }
            else
            {
                if (idx >= (uint)_shared.Count)
                {
                    if ((long)idx + 1 <= MaxFrames)
                    {
                        GrowLocked((int)idx + 1);
                    }

                    if (idx >= (uint)_shared.Count)
                    {
                        return Errno.EINVAL;
                    }
                }

                page = _shared[(int)idx];
            }

            mfn = page.Mfn;
            return _domain.Hypervisor.Frames.TryGet(mfn, _domain.Id) ? null : Errno.EBUSY;
        }
    }

    /// <summary>
    /// gnttab_set_version on the domain's own table: refused with -EBUSY while any grant above the
    /// 8 reserved ones is pinned; v2→v1 refuses (-ERANGE) reserved entries v1 cannot hold. The
    /// shared frames are cleared except the reserved entries, which are converted; v1→v2 adds
    /// status frames, v2→v1 frees them (leaving the guest's physmap).
    /// </summary>
    public Errno? SetVersion(uint version, out uint current)
    {
        lock (_lock)
        {
            var result = SetVersionLocked(version);
            current = (uint)_version;
            return result;
        }
    }

    private Errno? SetVersionLocked(uint version)
    {
        if (version is not (1 or 2))
        {
            return Errno.EINVAL;
        }

        if (_version == version)
        {
            return null;
        }

        if (_released)
        {
            return Errno.EINVAL;
        }

        var entries = EntriesLocked;
        for (var i = GrantTable.GNTTAB_NR_RESERVED_ENTRIES; i < entries; i++)
        {
            if (Volatile.Read(ref _active[i].Pin) != 0)
            {
                return Errno.EBUSY;
            }
        }

        var reserved = new grant_entry_v1[GrantTable.GNTTAB_NR_RESERVED_ENTRIES];
        if (_version == 1)
        {
            for (var i = 0; i < reserved.Length; i++)
            {
                reserved[i] = _shared[0].At<grant_entry_v1>(i * 8);
            }

            var added = new List<PinnedPage>();
            for (var i = 0; i < StatusFramesFor(_shared.Count); i++)
            {
                if (!Allocate(added))
                {
                    added.ForEach(Free);
                    return Errno.ENOMEM;
                }
            }

            _status.AddRange(added);
        }
        else
        {
            for (var i = 0; i < reserved.Length; i++)
            {
                var e = _shared[0].At<grant_entry_v2>(i * 16);
                var type = e.hdr.flags & GrantTable.GTF_type_mask;
                if ((type == GrantTable.GTF_permit_access && (e.full_page.frame >> 32) != 0) || type == GrantTable.GTF_transitive)
                {
                    return Errno.ERANGE;
                }

                reserved[i] = type == GrantTable.GTF_permit_access
                    ? new grant_entry_v1 { flags = (ushort)(e.hdr.flags | StatusWord(i)), domid = e.hdr.domid, frame = (uint)e.full_page.frame }
                    : default;
            }

            // gnttab_unpopulate_status_frames: out of the physmap first; a frame someone else still holds is -EBUSY.
            foreach (var page in _status)
            {
                _domain.UnmapSharedFrame(page.Mfn);
            }

            var frames = _domain.Hypervisor.Frames;
            if (_status.Any(p => frames.ReferenceCount(p.Mfn) > 2))
            {
                return Errno.EBUSY;
            }

            _status.ForEach(Free);
            _status.Clear();
        }

        foreach (var page in _shared)
        {
            page.Bytes.Clear();
        }

        var newVersion = (int)version;
        for (var i = 0; i < reserved.Length; i++)
        {
            var r = reserved[i];
            if (newVersion == 1)
            {
                _shared[0].At<grant_entry_v1>(i * 8) = r;
            }
            else
            {
                _status[0].At<ushort>(i * 2) = (ushort)(r.flags & (GrantTable.GTF_reading | GrantTable.GTF_writing));
                ref var e = ref _shared[0].At<grant_entry_v2>(i * 16);
                e.full_page.frame = r.frame;
                e.hdr.domid = r.domid;
                e.hdr.flags = (ushort)(r.flags & ~(GrantTable.GTF_reading | GrantTable.GTF_writing));
            }
        }

        _version = newVersion;
        return null;
    }

    // ---- Entry access (caller holds _lock and has bounds-checked the ref) ----

    private (PinnedPage Page, int Offset) HeaderAt(uint gref) => _version == 1
        ? (_shared[(int)(gref / EntriesPerFrameV1)], (int)(gref % EntriesPerFrameV1) * 8)
        : (_shared[(int)(gref / EntriesPerFrameV2)], (int)(gref % EntriesPerFrameV2) * 16);

    /// <summary>Where GTF_reading / GTF_writing live: the entry's flags (v1) or its status word (v2).</summary>
    private (PinnedPage Page, int Offset) StatusAt(uint gref) => _version == 1
        ? HeaderAt(gref)
        : (_status[(int)(gref / StatusPerFrame)], (int)(gref % StatusPerFrame) * 2);

    private ushort StatusWord(int gref)
    {
        var (page, offset) = StatusAt((uint)gref);
        return Volatile.Read(ref page.At<ushort>(offset));
    }

    /// <summary>The header word: flags in the low half, domid in the high half.</summary>
    private ref uint Header(uint gref)
    {
        var (page, offset) = HeaderAt(gref);
        return ref page.At<uint>(offset);
    }

    /// <summary>One atomic instruction on the 32-bit word holding a 16-bit flags field (Xen's lock andw / lock orw).</summary>
    private static void ClearFlags(PinnedPage page, int offset, uint clear) =>
        Interlocked.And(ref page.At<uint>(offset & ~3), ~((clear & 0xFFFF) << ((offset & 2) * 8)));

    private static void SetFlags(PinnedPage page, int offset, uint set) =>
        Interlocked.Or(ref page.At<uint>(offset & ~3), (set & 0xFFFF) << ((offset & 2) * 8));

    /// <summary>_set_status_v1: compare-exchange on the header, at most five tries against a guest changing it.</summary>
    private GrantStatus SetStatusV1(uint gref, bool readOnly, bool mapping, ushort ldom, bool pinned)
    {
        ref var raw = ref Header(gref);
        var mask = GrantTable.GTF_type_mask | (mapping ? GrantTable.GTF_sub_page : 0);
        var seen = Volatile.Read(ref raw);
        for (var retries = 0; ; retries++)
        {
            var flags = seen & 0xFFFF;
            if (!pinned && ((flags & mask) != GrantTable.GTF_permit_access || (seen >> 16) != ldom))
            {
                return GrantStatus.GeneralError;
            }

            var want = flags | GrantTable.GTF_reading;
            if (!readOnly)
            {
                if ((flags & GrantTable.GTF_readonly) != 0)
                {
                    return GrantStatus.GeneralError;
                }

                want |= GrantTable.GTF_writing;
            }

            var prev = Interlocked.CompareExchange(ref raw, (seen & 0xFFFF0000) | want, seen);
            if (prev == seen)
            {
                return GrantStatus.Okay;
            }

            if (retries == 4)
            {
                return GrantStatus.GeneralError;
            }

            seen = prev;
        }
    }

    /// <summary>_set_status_v2: set the status bits, then re-check the header the guest may have changed meanwhile.</summary>
    private GrantStatus SetStatusV2(uint gref, bool readOnly, bool mapping, ushort ldom, bool pinned)
    {
        ref var raw = ref Header(gref);
        var (statusPage, statusOffset) = StatusAt(gref);
        var mask = GrantTable.GTF_type_mask | (mapping ? GrantTable.GTF_sub_page : 0);

        bool Acceptable(uint word) =>
            ((word & mask) == GrantTable.GTF_permit_access || (!mapping && (word & mask) == GrantTable.GTF_transitive))
            && (word >> 16) == ldom;

        var seen = Volatile.Read(ref raw);
        if (!pinned && !Acceptable(seen))
        {
            return GrantStatus.GeneralError;
        }

        if (!readOnly && (seen & GrantTable.GTF_readonly) != 0)
        {
            return GrantStatus.GeneralError;
        }

        SetFlags(statusPage, statusOffset, readOnly ? GrantTable.GTF_reading : GrantTable.GTF_reading | GrantTable.GTF_writing);
        Interlocked.MemoryBarrier();
        seen = Volatile.Read(ref raw);
        if (!pinned)
        {
            if (!Acceptable(seen) || (!readOnly && (seen & GrantTable.GTF_readonly) != 0))
            {
                ClearFlags(statusPage, statusOffset, GrantTable.GTF_reading | GrantTable.GTF_writing);
                return GrantStatus.GeneralError;
            }
        }
        else if ((seen & GrantTable.GTF_readonly) != 0)
        {
            ClearFlags(statusPage, statusOffset, GrantTable.GTF_writing);
            return GrantStatus.GeneralError;
        }

        return GrantStatus.Okay;
    }

    private GrantStatus SetStatus(uint gref, bool readOnly, bool mapping, ushort ldom, bool pinned) => _version == 1
        ? SetStatusV1(gref, readOnly, mapping, ldom, pinned)
        : SetStatusV2(gref, readOnly, mapping, ldom, pinned);

    /// <summary>reduce_status_for_pin: drop GTF_reading once unpinned, GTF_writing once no writable pin is left.</summary>
    private void ReduceStatusForPin(uint gref, bool readOnly)
    {
        if (gref >= (uint)EntriesLocked)
        {
            return;
        }

        var pin = _active[gref].Pin;
        var clear = pin == 0 ? GrantTable.GTF_reading : 0;
        if (!readOnly && (pin & PinWriteMask) == 0)
        {
            clear |= GrantTable.GTF_writing;
        }

        if (clear != 0)
        {
            var (page, offset) = StatusAt(gref);
            ClearFlags(page, offset, clear);
        }
    }

    private static bool WouldOverflow(uint pin, uint increment)
    {
        for (var shift = 0; shift < 32; shift += 8)
        {
            if (((pin >> shift) & 0xFF) + ((increment >> shift) & 0xFF) > 0xFF)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>get_paged_frame: the granter's page behind <paramref name="gfn"/> (its RAM or one of its hypervisor pages), referenced.</summary>
    internal bool TryGetPagedFrame(ulong gfn, out ulong mfn)
    {
        if (_domain.IsTranslated)
        {
            if (!_domain.PhysMap.TryLookup(gfn, out mfn, out var type) || type is not (P2mType.Ram or P2mType.Shared))
            {
                return false;
            }
        }
        else
        {
            mfn = gfn;
        }

        return _domain.Hypervisor.Frames.TryGet(mfn, _domain.Id);
    }

    /// <summary>
    /// map_grant_ref's work on the granter's table: bounds, the active entry, _set_status, the frame.
    /// On success the caller holds one reference on <paramref name="mfn"/> and the pin is counted.
    /// </summary>
    public GrantStatus AcquireForMap(uint gref, ushort ldom, bool readOnly, uint pinIncrement, out ulong mfn, out uint cacheFlags)
    {
        mfn = 0;
        cacheFlags = 0;
        lock (_lock)
        {
            if (_released)
            {
                return GrantStatus.GeneralError;
            }

            if (gref >= (uint)EntriesLocked)
            {
                return GrantStatus.BadGntref;
            }

            ref var act = ref _active[gref];
            if (act.Pin != 0 && (act.Domid != ldom || WouldOverflow(act.Pin, pinIncrement) || act.IsSubPage))
            {
                return GrantStatus.GeneralError;
            }

            var haveRef = false;
            if (act.Pin == 0 || (!readOnly && (act.Pin & PinWriteMask) == 0))
            {
                var rc = SetStatus(gref, readOnly, mapping: true, ldom, pinned: act.Pin != 0);
                if (rc != GrantStatus.Okay)
                {
                    return rc;
                }

                if (act.Pin == 0)
                {
                    var (page, offset) = HeaderAt(gref);
                    var gfn = _version == 1 ? Volatile.Read(ref page.At<uint>(offset + 4)) : Volatile.Read(ref page.At<ulong>(offset + 8));
                    if (!TryGetPagedFrame(gfn, out var frame))
                    {
                        ReduceStatusForPin(gref, readOnly);
                        return GrantStatus.BadPage;
                    }

                    haveRef = true;
                    act.Domid = ldom;
                    act.Mfn = frame;
                    act.Start = 0;
                    act.Length = MachineMemory.PageSize;
                    act.IsSubPage = false;
                }
            }

            if (!haveRef && !_domain.Hypervisor.Frames.TryGet(act.Mfn, _domain.Id))
            {
                ReduceStatusForPin(gref, readOnly);
                return GrantStatus.GeneralError;
            }

            act.Pin += pinIncrement;
            mfn = act.Mfn;
            cacheFlags = Volatile.Read(ref Header(gref)) & CacheFlags;
            return GrantStatus.Okay;
        }
    }

    /// <summary>
    /// acquire_grant_for_copy (without transitive grants): as <see cref="AcquireForMap"/> with a
    /// host pin, accepting v2 sub-page grants, whose window comes back in <paramref name="start"/>
    /// and <paramref name="length"/>.
    /// </summary>
    public GrantStatus AcquireForCopy(uint gref, ushort ldom, bool readOnly, out ulong mfn, out ushort start, out ushort length)
    {
        mfn = 0;
        start = 0;
        length = 0;
        var increment = readOnly ? PinHostRead : PinHostWrite;
        lock (_lock)
        {
            if (_released)
            {
                return GrantStatus.GeneralError;
            }

            if (gref >= (uint)EntriesLocked)
            {
                return GrantStatus.BadGntref;
            }

            ref var act = ref _active[gref];
            if (act.Pin != 0 && (act.Domid != ldom || WouldOverflow(act.Pin, increment)))
            {
                return GrantStatus.GeneralError;
            }

            var oldPin = act.Pin;
            if (oldPin == 0 || (!readOnly && (oldPin & PinWriteMask) == 0))
            {
                var rc = SetStatus(gref, readOnly, mapping: false, ldom, pinned: oldPin != 0);
                if (rc != GrantStatus.Okay)
                {
                    return rc;
                }

                var (page, offset) = HeaderAt(gref);
                ulong gfn;
                bool subPage;
                ushort off = 0, len = MachineMemory.PageSize;
                if (_version == 1)
                {
                    gfn = Volatile.Read(ref page.At<uint>(offset + 4));
                    subPage = false;
                }
                else
                {
                    var flags = Volatile.Read(ref page.At<ushort>(offset));
                    if ((flags & GrantTable.GTF_type_mask) == GrantTable.GTF_transitive)
                    {
                        // Transitive grants are not followed here (Xen's path with transitivity off).
                        ReduceStatusForPin(gref, readOnly);
                        return GrantStatus.GeneralError;
                    }

                    gfn = Volatile.Read(ref page.At<ulong>(offset + 8));
                    subPage = (flags & GrantTable.GTF_sub_page) != 0;
                    if (subPage)
                    {
                        off = Volatile.Read(ref page.At<ushort>(offset + 4));
                        len = Volatile.Read(ref page.At<ushort>(offset + 6));
                    }
                }

                if (!TryGetPagedFrame(gfn, out var frame))
                {
                    ReduceStatusForPin(gref, readOnly);
                    return GrantStatus.BadPage;
                }

                if (oldPin == 0)
                {
                    act.Domid = ldom;
                    act.IsSubPage = subPage;
                    act.Start = off;
                    act.Length = len;
                    act.Mfn = frame;
                }
                else if (act.Mfn != frame || (act.IsSubPage && (!subPage || act.Start != off || act.Length != len)))
                {
                    _domain.Hypervisor.Frames.Put(frame);
                    ReduceStatusForPin(gref, readOnly);
                    return GrantStatus.GeneralError;
                }
            }
            else if (!_domain.Hypervisor.Frames.TryGet(act.Mfn, _domain.Id))
            {
                ReduceStatusForPin(gref, readOnly);
                return GrantStatus.BadDomain;
            }

            act.Pin += increment;
            mfn = act.Mfn;
            start = act.Start;
            length = act.Length;
            return GrantStatus.Okay;
        }
    }

    /// <summary>Drops a pin taken by <see cref="AcquireForMap"/> or <see cref="AcquireForCopy"/> (unmap_common_complete / release_grant_for_copy).</summary>
    public void ReleasePin(uint gref, bool readOnly, uint pinDecrement)
    {
        lock (_lock)
        {
            if (_released || gref >= (uint)_active.Length)
            {
                return;
            }

            ref var act = ref _active[gref];
            act.Pin = act.Pin >= pinDecrement ? act.Pin - pinDecrement : 0;
            ReduceStatusForPin(gref, readOnly);
        }
    }

    /// <summary>GNTTABOP_swap_grant_ref on the domain's own table.</summary>
    public GrantStatus Swap(uint a, uint b)
    {
        lock (_lock)
        {
            var entries = (uint)EntriesLocked;
            if (_released || a >= entries || b >= entries)
            {
                return GrantStatus.BadGntref;
            }

            if (a == b)
            {
                return GrantStatus.Okay;
            }

            if (_active[a].Pin != 0 || _active[b].Pin != 0)
            {
                return GrantStatus.Eagain;
            }

            if (_version == 1)
            {
                var (pa, oa) = HeaderAt(a);
                var (pb, ob) = HeaderAt(b);
                (pa.At<grant_entry_v1>(oa), pb.At<grant_entry_v1>(ob)) = (pb.At<grant_entry_v1>(ob), pa.At<grant_entry_v1>(oa));
            }
            else
            {
                var (pa, oa) = HeaderAt(a);
                var (pb, ob) = HeaderAt(b);
                (pa.At<grant_entry_v2>(oa), pb.At<grant_entry_v2>(ob)) = (pb.At<grant_entry_v2>(ob), pa.At<grant_entry_v2>(oa));
                var (sa, soa) = StatusAt(a);
                var (sb, sob) = StatusAt(b);
                (sa.At<ushort>(soa), sb.At<ushort>(sob)) = (sb.At<ushort>(sob), sa.At<ushort>(soa));
            }

            return GrantStatus.Okay;
        }
    }

    /// <summary>Whether <paramref name="mapper"/> has a grant of this domain's on <paramref name="mfn"/> pinned (grant_map_exists).</summary>
    public bool IsPinnedBy(ushort mapper, ulong mfn)
    {
        lock (_lock)
        {
            var entries = EntriesLocked;
            for (var i = 0; i < entries; i++)
            {
                if (_active[i].Pin != 0 && _active[i].Domid == mapper && _active[i].Mfn == mfn)
                {
                    return true;
                }
            }

            return false;
        }
    }

    // ---- Maptrack (this domain as the mapper) ----

    /// <summary>get_maptrack_handle: a free handle, or false at the limit (GNTST_no_space).</summary>
    public bool TryReserveHandle(out uint handle)
    {
        lock (_maptrackLock)
        {
            if (_freeHandles.TryPop(out handle))
            {
                return true;
            }

            if (_maptrack.Count >= MaptrackLimit)
            {
                return false;
            }

            _maptrack.Add(null);
            handle = (uint)(_maptrack.Count - 1);
            return true;
        }
    }

    public void Publish(uint handle, GrantMapping mapping)
    {
        lock (_maptrackLock)
        {
            _maptrack[(int)handle] = mapping;
        }
    }

    public void FreeHandle(uint handle)
    {
        lock (_maptrackLock)
        {
            if (handle < (uint)_maptrack.Count)
            {
                _maptrack[(int)handle] = null;
                _freeHandles.Push(handle);
            }
        }
    }

    /// <summary>
    /// unmap_common's bookkeeping on the maptrack entry: which of the host and device mappings go
    /// (the caller has undone the host mapping through <paramref name="removeHost"/>), freeing the
    /// handle when none is left. Serialised, so one mapping is only ever unmapped once.
    /// </summary>
    public GrantStatus TakeComponents(uint handle, bool host, ulong devBusAddr, Func<GrantMapping, bool> removeHost, out GrantMapping? mapping, out uint done)
    {
        done = 0;
        lock (_maptrackLock)
        {
            mapping = handle < (uint)_maptrack.Count ? _maptrack[(int)handle] : null;
            if (mapping is null)
            {
                return GrantStatus.BadHandle;
            }

            var flags = mapping.Flags;
            var device = devBusAddr != 0 && (flags & GrantTable.GNTMAP_device_map) != 0;
            if (device && devBusAddr != mapping.Mfn << MachineMemory.PageShift)
            {
                return GrantStatus.BadDevAddr;
            }

            if (host && (flags & GrantTable.GNTMAP_host_map) != 0)
            {
                if (!removeHost(mapping))
                {
                    return GrantStatus.GeneralError;
                }

                mapping.Flags &= ~(uint)GrantTable.GNTMAP_host_map;
                done |= (uint)GrantTable.GNTMAP_host_map;
            }

            if (device)
            {
                mapping.Flags &= ~(uint)GrantTable.GNTMAP_device_map;
                done |= (uint)GrantTable.GNTMAP_device_map;
            }

            if ((mapping.Flags & (GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_host_map)) == 0)
            {
                _maptrack[(int)handle] = null;
                _freeHandles.Push(handle);
            }

            return GrantStatus.Okay;
        }
    }

    /// <summary>Every live mapping, removed from the maptrack (gnttab_release_mappings when the mapper dies).</summary>
    public List<GrantMapping> TakeAllMappings()
    {
        lock (_maptrackLock)
        {
            var all = _maptrack.OfType<GrantMapping>().ToList();
            _maptrack.Clear();
            _freeHandles.Clear();
            return all;
        }
    }

    /// <summary>A mapping of <paramref name="mfn"/> owned by <paramref name="granter"/>, if this domain holds one.</summary>
    public bool HasMappingOf(ushort granter, ulong mfn)
    {
        lock (_maptrackLock)
        {
            return _maptrack.Any(m => m is not null && m.Granter.Id == granter && m.Mfn == mfn);
        }
    }
}

/// <summary>One maptrack entry: a grant this domain mapped (Xen's struct grant_mapping plus what unmapping needs).</summary>
internal sealed class GrantMapping
{
    public required Domain Granter { get; init; }

    public required uint Ref { get; init; }

    /// <summary>GNTMAP_* still in force (host_map and/or device_map, readonly).</summary>
    public required uint Flags { get; set; }

    public required ulong Mfn { get; init; }

    /// <summary>Where a translated mapper has the frame in its physmap (host_addr &gt;&gt; 12).</summary>
    public ulong HostGfn { get; init; }

    public bool ReadOnly => (Flags & GrantTable.GNTMAP_readonly) != 0;
}
