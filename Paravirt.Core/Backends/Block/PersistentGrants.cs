using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;

namespace Paravirt.Core.Backends.Block;

/// <summary>How one segment's grant is held while its request runs (a persistent grant, or a mapping of its own).</summary>
internal struct SegmentMapping
{
    /// <summary>The granted frame, referenced by the mapping.</summary>
    public ulong Mfn;

    /// <summary>The maptrack handle of a mapping made for this request only (unmapped when it completes).</summary>
    public uint Handle;

    /// <summary>The persistent grant serving the segment, or null for a mapping of its own.</summary>
    public PersistentGrants.Entry? Persistent;
}

/// <summary>
/// The grants one ring keeps mapped for a frontend that wrote <c>feature-persistent</c> = 1
/// (io/blkif.h), kept as Linux's blkback keeps them (drivers/block/xen-blkback/blkback.c):
/// <list type="bullet">
/// <item>keyed by grant reference; a grant is mapped (GNTTABOP_map_grant_ref, host map, always
/// writable: io/blkif.h lets the backend map a persistent frontend's grants with write access)
/// the first time a request names it, and stays mapped, so the frontend's entry shows
/// GTF_reading|GTF_writing and its gnttab_end_foreign_access fails until the ring is disconnected;</item>
/// <item>at most <see cref="Limit"/> per ring (max_persistent_grants, 1056). A grant named when
/// the table is full, or one already in use by another request, is mapped for that request only
/// and unmapped when it completes;</item>
/// <item>at most every 100 ms (LRU_INTERVAL) the ring purges: grants unused for
/// <c>persistent_grant_unused_seconds</c> (60 s) go, and a full table that had to turn a grant
/// away also gives up 5 % of its limit (LRU_PERCENT_CLEAN), oldest grant references first as
/// Linux's tree walk does, never one in use;</item>
/// <item>every grant is unmapped when the ring is disconnected (after its requests finished).</item>
/// </list>
/// Only the ring's dispatcher maps, looks up and purges; completions (any thread) give grants
/// back; one lock keeps the two apart.
/// </summary>
internal sealed class PersistentGrants
{
    /// <summary>Linux blkback's max_persistent_grants default: the most grants a ring keeps mapped.</summary>
    public const int DefaultLimit = 1056;

    /// <summary>Linux blkback's LRU_INTERVAL: how often a ring looks at its persistent grants.</summary>
    public static readonly TimeSpan PurgeInterval = TimeSpan.FromMilliseconds(100);

    private const int PercentCleaned = 5; // LRU_PERCENT_CLEAN

    private readonly Hypervisor _hv;
    private readonly Domain _guest;
    private readonly BlkBackCounters _counters;
    private readonly TimeProvider _time;
    private readonly long _unusedTicks;
    private readonly long _intervalTicks;
    private readonly Dictionary<uint, Entry> _grants = [];
    private readonly List<Entry> _purge = [];
    private readonly Lock _lock = new();
    private bool _overflow; // a grant was turned away because the table was full (overflow_max_grants)
    private long _nextPurge;

    public PersistentGrants(Hypervisor hv, Domain guest, BlkBackCounters counters, int limit, TimeSpan unused, TimeProvider time)
    {
        _hv = hv;
        _guest = guest;
        _counters = counters;
        Limit = limit;
        _time = time;
        _unusedTicks = (long)(unused.TotalSeconds * time.TimestampFrequency);
        _intervalTicks = (long)(PurgeInterval.TotalSeconds * time.TimestampFrequency);
        _nextPurge = time.GetTimestamp() + _intervalTicks;
    }

    /// <summary>The most grants kept mapped.</summary>
    public int Limit { get; }

    /// <summary>Grants mapped persistently now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _grants.Count;
            }
        }
    }

    /// <summary>
    /// Holds grant <paramref name="gref"/> for one segment: the persistent grant if it is kept and
    /// free, else a new writable mapping, kept if there is room. A grant that cannot be mapped
    /// gives Xen's status and nothing is held.
    /// </summary>
    public GrantStatus Acquire(uint gref, out SegmentMapping mapping)
    {
        lock (_lock)
        {
            if (_grants.TryGetValue(gref, out var kept) && !kept.Active)
            {
                kept.Active = true;
                mapping = new SegmentMapping { Mfn = kept.Mfn, Handle = kept.Handle, Persistent = kept };
                Interlocked.Increment(ref _counters.PersistentGrantsReused);
                return GrantStatus.Okay;
            }
        }

        mapping = default;
        var granter = _hv.FindDomain(_guest.Id) == _guest ? _guest : null;
        var rc = GrantOps.Map(_hv.HostDomain, granter, gref, GrantTable.GNTMAP_host_map, 0, out var handle, out var mfn);
        if (rc != GrantStatus.Okay)
        {
            return rc;
        }

        mapping.Mfn = mfn;
        mapping.Handle = handle;
        lock (_lock)
        {
            if (_grants.Count < Limit && !_grants.ContainsKey(gref))
            {
                var entry = new Entry { Ref = gref, Handle = handle, Mfn = mfn, Active = true };
                _grants.Add(gref, entry);
                mapping.Persistent = entry;
                Interlocked.Increment(ref _counters.PersistentGrantsMapped);
                return GrantStatus.Okay;
            }

            // Full: blkback notes the overflow (the next purge makes room). A grant that is kept
            // but busy with another request is simply mapped a second time, for this one.
            _overflow |= _grants.Count >= Limit;
        }

        Interlocked.Increment(ref _counters.TransientGrantMaps);
        return GrantStatus.Okay;
    }

    /// <summary>Gives back what <see cref="Acquire"/> held: a persistent grant becomes free (and used now), a mapping of its own is unmapped.</summary>
    public void Release(ref SegmentMapping mapping)
    {
        if (mapping.Persistent is { } kept)
        {
            lock (_lock)
            {
                kept.Active = false;
                kept.LastUsed = _time.GetTimestamp();
            }
        }
        else
        {
            GrantOps.Unmap(_hv.HostDomain, mapping.Handle, hostAddr: 1, devBusAddr: 0);
        }

        mapping = default;
    }

    /// <summary>Purges (<see cref="Purge"/>) if <see cref="PurgeInterval"/> has passed since the last look.</summary>
    public void PurgeIfDue()
    {
        var now = _time.GetTimestamp();
        if (now < _nextPurge)
        {
            return;
        }

        _nextPurge = now + _intervalTicks;
        Purge(now);
    }

    /// <summary>
    /// purge_persistent_gnt: free grants unused for too long go; when the table is full and turned
    /// a grant away, at least 5 % of the limit goes too, lowest grant references first.
    /// </summary>
    private void Purge(long now)
    {
        lock (_lock)
        {
            var count = _grants.Count;
            var clean = 0;
            if (count > Limit || (count == Limit && _overflow))
            {
                clean = Math.Min(count, (Limit / 100 * PercentCleaned) + count - Limit);
            }

            _purge.Clear();
            foreach (var e in _grants.Values)
            {
                if (!e.Active)
                {
                    _purge.Add(e);
                }
            }

            var taken = 0;
            foreach (var e in _purge)
            {
                if (_unusedTicks > 0 && now - e.LastUsed >= _unusedTicks)
                {
                    e.Purged = true;
                    taken++;
                }
            }

            if (taken < clean)
            {
                _purge.Sort(static (a, b) => a.Ref.CompareTo(b.Ref));
            }

            foreach (var e in _purge)
            {
                if (taken >= clean)
                {
                    break;
                }

                if (!e.Purged)
                {
                    e.Purged = true;
                    taken++;
                }
            }

            if (taken == 0)
            {
                _purge.Clear();
                return;
            }

            _overflow = false;
            foreach (var e in _purge)
            {
                if (e.Purged)
                {
                    _grants.Remove(e.Ref);
                }
            }
        }

        // Nobody else reaches the removed entries: only the dispatcher acquires, and they were free.
        foreach (var e in _purge)
        {
            if (e.Purged)
            {
                GrantOps.Unmap(_hv.HostDomain, e.Handle, hostAddr: 1, devBusAddr: 0);
                Interlocked.Increment(ref _counters.PersistentGrantsPurged);
            }
        }

        _purge.Clear();
    }

    /// <summary>Unmaps every persistent grant (the ring is disconnected and nothing is in flight).</summary>
    public void UnmapAll()
    {
        lock (_lock)
        {
            foreach (var e in _grants.Values)
            {
                GrantOps.Unmap(_hv.HostDomain, e.Handle, hostAddr: 1, devBusAddr: 0);
            }

            _grants.Clear();
        }
    }

    /// <summary>One grant kept mapped.</summary>
    internal sealed class Entry
    {
        public uint Ref;
        public uint Handle;
        public ulong Mfn;

        /// <summary>In use by a request (no other request gets it; it is not purged).</summary>
        public bool Active;

        /// <summary>When a request last gave it back (<see cref="TimeProvider.GetTimestamp"/>).</summary>
        public long LastUsed;

        public bool Purged;
    }
}
