namespace Paravirt.Core.Backends.Block;

/// <summary>What the frontend asked for at connect time: one ring (queue) each, and whether it reuses its grants.</summary>
/// <param name="Rings">Each queue's ring-ref and event channel, queue 0 first.</param>
/// <param name="PersistentGrants">Both ends wrote feature-persistent = 1.</param>
internal sealed record BlkifConnectRequest(IReadOnlyList<(uint RingRef, uint Port)> Rings, bool PersistentGrants);

/// <summary>
/// One connection of a block frontend: its rings, one per queue (io/blkif.h multi-queue; a
/// frontend that asked for none has one), each served on its own (<see cref="BlkifRing"/>: own
/// page, port, dispatcher, requests in flight and persistent grants), as Linux's blkback runs a
/// thread per ring. Started and stopped together.
/// </summary>
internal sealed class BlkifConnection : XenBus.IBackendConnection
{
    private readonly BlkifRing[] _rings;

    private BlkifConnection(BlkifRing[] rings, bool persistent)
    {
        _rings = rings;
        PersistentGrants = persistent;
    }

    public IReadOnlyList<BlkifRing> Rings => _rings;

    public bool PersistentGrants { get; }

    /// <summary>Grants kept mapped now, over every ring.</summary>
    public int PersistentGrantCount
    {
        get
        {
            var n = 0;
            foreach (var r in _rings)
            {
                n += r.PersistentGrantCount;
            }

            return n;
        }
    }

    /// <summary>Maps every ring and binds every port; if one cannot be, those done are undone and the reason thrown (naming the queue when there are several).</summary>
    public static BlkifConnection Open(BlkBack owner, BlkifConnectRequest request)
    {
        var rings = new BlkifRing[request.Rings.Count];
        var opened = 0;
        try
        {
            for (; opened < rings.Length; opened++)
            {
                var (ringRef, port) = request.Rings[opened];
                try
                {
                    rings[opened] = BlkifRing.Open(owner, ringRef, port, request.PersistentGrants);
                }
                catch (InvalidOperationException e) when (rings.Length > 1)
                {
                    throw new InvalidOperationException($"queue {opened}: {e.Message}", e);
                }
            }
        }
        catch
        {
            for (var i = 0; i < opened; i++)
            {
                _ = rings[i].StopAsync(); // never started: unmaps and closes at once
            }

            throw;
        }

        return new BlkifConnection(rings, request.PersistentGrants);
    }

    public void Start()
    {
        foreach (var r in _rings)
        {
            r.Start();
        }
    }

    /// <summary>Stops every ring: each stops taking requests, answers those in flight, unmaps its grants and ring, closes its port.</summary>
    public Task StopAsync()
    {
        var stops = new Task[_rings.Length];
        for (var i = 0; i < _rings.Length; i++)
        {
            stops[i] = _rings[i].StopAsync();
        }

        return Task.WhenAll(stops);
    }
}
