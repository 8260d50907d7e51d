using System.Runtime.CompilerServices;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// One connection of a block frontend: its ring page (mapped by grant, writable), its event
/// channel, and the requests in flight. A dispatcher takes requests (each copied out once),
/// validates the copy and hands valid ones to the thread pool; each completes on its own and
/// answers in whatever order it finishes (responses carry the request's id). A barrier waits for
/// everything before it and holds back everything after it. A producer index more than a ring
/// ahead is a protocol error: nothing more is taken and the frontend's domain is crashed.
/// </summary>
internal sealed class BlkifConnection : XenBus.IBackendConnection
{
    private readonly BlkBack _owner;
    private readonly Hypervisor _hv;
    private readonly Domain _guest;
    private readonly IBlockDevice _device;
    private readonly HostGrantMapping _ringMapping;
    private readonly HostEventChannel _channel;
    private readonly BackRing<blkif_request, blkif_response> _ring;
    private readonly Lock _ringLock = new();
    private readonly Stack<BlkifRequestSlot> _free;
    private readonly System.Threading.Channels.Channel<bool> _kick = System.Threading.Channels.Channel.CreateBounded<bool>(new System.Threading.Channels.BoundedChannelOptions(1)
    {
        FullMode = System.Threading.Channels.BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly int _sectorSize;
    private readonly int _sectorsPerPage;
    private int _inFlight; // under _ringLock
    private int _idleAt; // under _ringLock
    private TaskCompletionSource? _idle; // under _ringLock
    private Task _dispatcher = Task.CompletedTask;
    private int _stopping;

    private BlkifConnection(BlkBack owner, HostGrantMapping ringMapping, HostEventChannel channel)
    {
        _owner = owner;
        _hv = owner.Hypervisor;
        _guest = owner.Domain;
        _device = owner.Device;
        _ringMapping = ringMapping;
        _channel = channel;
        _ring = new BackRing<blkif_request, blkif_response>(new GrantPageMemory(ringMapping).Memory);
        SynchronousDevice = _device as ISynchronousBlockDevice;
        _sectorSize = _device.SectorSize;
        _sectorsPerPage = Memory.MachineMemory.PageSize / _sectorSize;
        _free = new Stack<BlkifRequestSlot>(_ring.Size);
        for (var i = 0; i < _ring.Size; i++)
        {
            _free.Push(new BlkifRequestSlot(this));
        }
    }

    /// <summary>Maps the ring (grant <paramref name="ringRef"/>, writable) and binds the frontend's port <paramref name="port"/>.</summary>
    public static BlkifConnection Open(BlkBack owner, uint ringRef, uint port)
    {
        HostGrantMapping mapping;
        try
        {
            mapping = owner.Hypervisor.HostGrants.Map(owner.Domain, ringRef, readOnly: false);
        }
        catch (GrantException e)
        {
            throw new InvalidOperationException($"cannot map the ring: grant {ringRef} of domain {owner.Domain.Id} must be a writable grant to domain 0 ({e.Message}, {e.Status})", e);
        }

        try
        {
            var channel = owner.Hypervisor.Host.BindInterdomain(owner.Domain, port);
            return new BlkifConnection(owner, mapping, channel);
        }
        catch (Exception e) when (e is XenException)
        {
            mapping.Dispose();
            throw new InvalidOperationException($"cannot bind event channel {port} of domain {owner.Domain.Id}: {e.Message}", e);
        }
        catch
        {
            mapping.Dispose();
            throw;
        }
    }

    /// <summary>The device, if it may be read and written on the calling thread (see <see cref="Execute"/>).</summary>
    internal ISynchronousBlockDevice? SynchronousDevice { get; }

    /// <summary>Entries in the ring: the most requests in flight at once.</summary>
    public int RingSize => _ring.Size;

    public void Start()
    {
        _dispatcher = Task.Run(DispatchAsync);
    }

    /// <summary>
    /// Stops taking requests, waits for those in flight to finish and answers them, then unmaps
    /// the ring and closes the event channel. Safe to call more than once and from any thread.
    /// </summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0)
        {
            await _stopped.Task.ConfigureAwait(false);
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        Kick();
        await _dispatcher.ConfigureAwait(false);
        await WaitInFlightAtMostAsync(0).ConfigureAwait(false);
        _channel.Dispose();
        _ringMapping.Dispose();
        _stop.Dispose();
        _stopped.SetResult();
    }

    private void Kick() => _kick.Writer.TryWrite(true);

    private async Task DispatchAsync()
    {
        try
        {
            await DispatchLoopAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // Stopping while waiting for the frontend.
        }
    }

    private async Task DispatchLoopAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            var status = TakeRequests(out var barrier);
            if (barrier is not null)
            {
                // io/blkif.h: every write before the barrier completes first, none after it starts
                // until it is done. Nothing more is taken until it has run.
                await WaitInFlightAtMostAsync(1).ConfigureAwait(false);
                await ExecuteAsync(barrier).ConfigureAwait(false);
                continue;
            }

            if (status == RingStatus.Ok)
            {
                // A ring's worth taken in one pass: let other work run before the next (a frontend
                // that keeps producing bad requests does not keep a thread to itself).
                await Task.Yield();
                continue;
            }

            if (status == RingStatus.ProtocolError)
            {
                _owner.OnProtocolError($"the frontend's request producer is more than a ring ({_ring.Size} entries) ahead of the responses (io/ring.h: RING_REQUEST_PROD_OVERFLOW)");
                return;
            }

            bool more, slotFree;
            lock (_ringLock)
            {
                // RING_FINAL_CHECK_FOR_REQUESTS sets req_event so the frontend notifies the next request;
                // with every slot busy a completion wakes the dispatcher instead.
                slotFree = _free.Count > 0;
                more = slotFree && _ring.FinalCheckForRequests();
            }

            if (more)
            {
                continue;
            }

            if (slotFree)
            {
                // Only the frontend can bring work now: wait on its port here, not through a
                // separate pump that would wake this task in turn (one thread hop per
                // notification instead of two). A notification that came meanwhile is pending.
                if (!await _channel.WaitAsync(ct).ConfigureAwait(false))
                {
                    return; // our end was closed (the frontend's domain is going)
                }
            }
            else
            {
                // Every slot is busy: a completion frees one and kicks. No token: an uncancellable
                // wait reuses the channel's waiter (no allocation); StopAsync cancels and then
                // kicks, and the loop checks the token.
                await _kick.Reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false);
                _kick.Reader.TryRead(out _);
            }
        }
    }

    /// <summary>Takes requests while there are free slots; answers invalid ones at once, queues valid ones, stops at a barrier.</summary>
    /// <returns>Ok after a ring's worth (more may wait), Empty when nothing (or no slot) is left, ProtocolError on an overrun.</returns>
    private RingStatus TakeRequests(out BlkifRequestSlot? barrier)
    {
        barrier = null;
        for (var taken = 0; taken < _ring.Size && !_stop.IsCancellationRequested; taken++)
        {
            BlkifRequestSlot slot;
            lock (_ringLock)
            {
                if (_free.Count == 0)
                {
                    return RingStatus.Empty;
                }

                var status = _ring.TryTakeRequest(out var request);
                if (status != RingStatus.Ok)
                {
                    return status;
                }

                slot = _free.Pop();
                slot.Request = request;
                _inFlight++;
            }

            Interlocked.Increment(ref _owner.Counters.Requests);
            var verdict = Validate(slot);
            if (verdict != Blkif.BLKIF_RSP_OKAY)
            {
                Complete(slot, verdict);
                continue;
            }

            if (slot.Request.operation == Blkif.BLKIF_OP_WRITE_BARRIER)
            {
                barrier = slot;
                return RingStatus.Ok;
            }

            ThreadPool.UnsafeQueueUserWorkItem(slot, preferLocal: false);
        }

        return _stop.IsCancellationRequested ? RingStatus.Empty : RingStatus.Ok;
    }

    /// <summary>Checks the slot's copy of the request: BLKIF_RSP_OKAY to run it, else the status to answer with.</summary>
    private short Validate(BlkifRequestSlot slot)
    {
        ref readonly var r = ref slot.Request;
        var writes = false;
        int minSegments;
        switch (r.operation)
        {
            case Blkif.BLKIF_OP_READ:
                minSegments = 1;
                break;
            case Blkif.BLKIF_OP_WRITE:
                minSegments = 1;
                writes = true;
                break;
            case Blkif.BLKIF_OP_FLUSH_DISKCACHE or Blkif.BLKIF_OP_WRITE_BARRIER:
                // Without segments a pure flush/barrier; with segments a write that carries one (as Linux's blkfront sends them).
                minSegments = 0;
                writes = r.nr_segments > 0;
                break;
            case Blkif.BLKIF_OP_DISCARD:
                return ValidateDiscard(slot);
            default:
                // BLKIF_OP_INDIRECT (feature-max-indirect-segments is not advertised), the reserved op and unknown ones.
                return Blkif.BLKIF_RSP_EOPNOTSUPP;
        }

        if (r.nr_segments < minSegments || r.nr_segments > Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        if (writes && _device.IsReadOnly)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        long sectors = 0;
        for (var i = 0; i < r.nr_segments; i++)
        {
            var seg = r.seg[i];
            if (seg.first_sect > seg.last_sect || seg.last_sect >= _sectorsPerPage)
            {
                return Blkif.BLKIF_RSP_ERROR;
            }

            sectors += seg.last_sect - seg.first_sect + 1;
        }

        slot.Sectors = sectors;
        if (sectors == 0)
        {
            slot.Sector = 0; // sector_number means nothing without data
            return Blkif.BLKIF_RSP_OKAY;
        }

        return SetRange(slot, r.sector_number, (ulong)sectors);
    }

    private short ValidateDiscard(BlkifRequestSlot slot)
    {
        if (!_device.SupportsDiscard)
        {
            return Blkif.BLKIF_RSP_EOPNOTSUPP; // feature-discard is 0
        }

        if (_device.IsReadOnly)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        // blkif_request_discard lies over the same bytes of the copy; BLKIF_DISCARD_SECURE is ignored as discard-secure is 0.
        ref readonly var d = ref Unsafe.As<blkif_request, blkif_request_discard>(ref slot.Request);
        return SetRange(slot, d.sector_number, d.nr_sectors);
    }

    private short SetRange(BlkifRequestSlot slot, ulong sector, ulong sectors)
    {
        var disk = (ulong)_device.SectorCount;
        if (sector > disk || sectors > disk - sector)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        slot.Sector = (long)sector;
        slot.Sectors = (long)sectors;
        return Blkif.BLKIF_RSP_OKAY;
    }

    /// <summary>
    /// Runs a validated request on the thread-pool worker the dispatcher queued it to, and answers
    /// it. Reads and writes of a device that may run on this thread (<see cref="ISynchronousBlockDevice"/>)
    /// are done right here, without async state: a served request allocates nothing. Everything
    /// else goes through the device's async API.
    /// </summary>
    internal void Execute(BlkifRequestSlot slot)
    {
        var op = slot.Request.operation;
        if (SynchronousDevice is not { } disk || (op != Blkif.BLKIF_OP_READ && op != Blkif.BLKIF_OP_WRITE))
        {
            _ = ExecuteAsync(slot);
            return;
        }

        short status;
        try
        {
            status = op == Blkif.BLKIF_OP_READ ? ReadDirect(slot) : WriteDirect(slot, disk);
        }
#pragma warning disable CA1031 // any failure of the disk is the guest's -EIO, never the host's exception
        catch (Exception e)
#pragma warning restore CA1031
        {
            _owner.Log($"request {slot.Request.id} (op {op}) failed: {e.Message}");
            status = Blkif.BLKIF_RSP_ERROR;
        }

        Complete(slot, status);
    }

    /// <summary>
    /// A read as one grant copy per segment whose source is the disk: each segment's sectors are
    /// read straight into the granted page while the grant is claimed (no bounce buffer). A bad
    /// grant stops the request with an error; segments before it may hold their data, which an
    /// error response leaves undefined anyway (io/blkif.h).
    /// </summary>
    private short ReadDirect(BlkifRequestSlot slot)
    {
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        var sector = slot.Sector;
        var bytes = 0;
        for (var i = 0; i < slot.Request.nr_segments; i++)
        {
            var seg = slot.Request.seg[i];
            var sectors = seg.last_sect - seg.first_sect + 1;
            var length = sectors * _sectorSize;
            var rc = GrantOps.HostCopy(_hv.HostDomain, _guest, seg.gref, seg.first_sect * _sectorSize, length, toGuest: true,
                slot.AtSector(sector).DiskToGuest!);
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"request {slot.Request.id}: grant {seg.gref} of segment {i}: {rc}");
                return Blkif.BLKIF_RSP_ERROR;
            }

            sector += sectors;
            bytes += length;
        }

        _guest.Meter.CountBlockRead(bytes);
        Interlocked.Add(ref _owner.Counters.BytesRead, bytes);
        Interlocked.Increment(ref _owner.Counters.Reads);
        return Blkif.BLKIF_RSP_OKAY;
    }

    /// <summary>
    /// A write: every segment is grant-copied into the slot's buffer first, so a bad grant in any
    /// segment fails the request before the disk changes, then one write on this thread.
    /// </summary>
    private short WriteDirect(BlkifRequestSlot slot, ISynchronousBlockDevice disk)
    {
        var bytes = (int)(slot.Sectors * _sectorSize);
        if (!CopySegments(slot, toGuest: false))
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        disk.Write(slot.Sector, slot.Buffer.AsSpan(0, bytes));
        CountWrite(bytes);
        Interlocked.Increment(ref _owner.Counters.Writes);
        return Blkif.BLKIF_RSP_OKAY;
    }

    /// <summary>Runs a validated request through the device's async API and answers it.</summary>
    internal async Task ExecuteAsync(BlkifRequestSlot slot)
    {
        short status;
        try
        {
            status = await PerformAsync(slot).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // any failure of the disk is the guest's -EIO, never the host's exception
        catch (Exception e)
#pragma warning restore CA1031
        {
            _owner.Log($"request {slot.Request.id} (op {slot.Request.operation}) failed: {e.Message}");
            status = Blkif.BLKIF_RSP_ERROR;
        }

        Complete(slot, status);
    }

    private async ValueTask<short> PerformAsync(BlkifRequestSlot slot)
    {
        var counters = _owner.Counters;
        var bytes = (int)(slot.Sectors * _sectorSize);
        var data = slot.Buffer.AsMemory(0, bytes);
        switch (slot.Request.operation)
        {
            case Blkif.BLKIF_OP_READ:
                await _device.ReadAsync(slot.Sector, data, CancellationToken.None).ConfigureAwait(false);
                if (!CopySegments(slot, toGuest: true))
                {
                    return Blkif.BLKIF_RSP_ERROR;
                }

                _guest.Meter.CountBlockRead(bytes);
                Interlocked.Add(ref counters.BytesRead, bytes);
                Interlocked.Increment(ref counters.Reads);
                return Blkif.BLKIF_RSP_OKAY;

            case Blkif.BLKIF_OP_WRITE:
                if (!CopySegments(slot, toGuest: false))
                {
                    return Blkif.BLKIF_RSP_ERROR;
                }

                await _device.WriteAsync(slot.Sector, data, CancellationToken.None).ConfigureAwait(false);
                CountWrite(bytes);
                Interlocked.Increment(ref counters.Writes);
                return Blkif.BLKIF_RSP_OKAY;

            case Blkif.BLKIF_OP_FLUSH_DISKCACHE:
                if (bytes > 0)
                {
                    if (!CopySegments(slot, toGuest: false))
                    {
                        return Blkif.BLKIF_RSP_ERROR;
                    }

                    // A flush carrying data: what completed before is made durable, then this write is, too.
                    await _device.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                    await _device.WriteAsync(slot.Sector, data, CancellationToken.None).ConfigureAwait(false);
                    CountWrite(bytes);
                }

                await _device.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                Interlocked.Increment(ref counters.Flushes);
                return Blkif.BLKIF_RSP_OKAY;

            case Blkif.BLKIF_OP_WRITE_BARRIER:
                // Everything before has completed (the dispatcher drained it); make it durable, then this.
                await _device.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                if (bytes > 0)
                {
                    if (!CopySegments(slot, toGuest: false))
                    {
                        return Blkif.BLKIF_RSP_ERROR;
                    }

                    await _device.WriteAsync(slot.Sector, data, CancellationToken.None).ConfigureAwait(false);
                    await _device.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                    CountWrite(bytes);
                }

                Interlocked.Increment(ref counters.Barriers);
                return Blkif.BLKIF_RSP_OKAY;

            case Blkif.BLKIF_OP_DISCARD:
                await _device.DiscardAsync(slot.Sector, slot.Sectors, CancellationToken.None).ConfigureAwait(false);
                Interlocked.Increment(ref counters.Discards);
                return Blkif.BLKIF_RSP_OKAY;

            default:
                return Blkif.BLKIF_RSP_EOPNOTSUPP; // not reached: validation answered it
        }
    }

    private void CountWrite(int bytes)
    {
        _guest.Meter.CountBlockWritten(bytes);
        Interlocked.Add(ref _owner.Counters.BytesWritten, bytes);
    }

    /// <summary>Grant-copies every segment between the slot's buffer and the guest's granted pages; false at the first bad grant.</summary>
    private bool CopySegments(BlkifRequestSlot slot, bool toGuest)
    {
        // A domain destroyed meanwhile has no grants to copy (HostGrants' own liveness check).
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            return false;
        }

        var offset = 0;
        for (var i = 0; i < slot.Request.nr_segments; i++)
        {
            var seg = slot.Request.seg[i];
            var length = (seg.last_sect - seg.first_sect + 1) * _sectorSize;
            var slotAt = slot.At(offset);
            var rc = GrantOps.HostCopy(_hv.HostDomain, _guest, seg.gref, seg.first_sect * _sectorSize, length, toGuest,
                toGuest ? slotAt.ToGuest : slotAt.FromGuest);
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"request {slot.Request.id}: grant {seg.gref} of segment {i}: {rc}");
                return false;
            }

            offset += length;
        }

        return true;
    }

    /// <summary>Queues and pushes the response, frees the slot and notifies the frontend if it asked.</summary>
    private void Complete(BlkifRequestSlot slot, short status)
    {
        if (status == Blkif.BLKIF_RSP_ERROR)
        {
            Interlocked.Increment(ref _owner.Counters.Errors);
        }
        else if (status == Blkif.BLKIF_RSP_EOPNOTSUPP)
        {
            Interlocked.Increment(ref _owner.Counters.Unsupported);
        }

        var response = new blkif_response { id = slot.Request.id, operation = slot.Request.operation, status = status };
        bool notify;
        lock (_ringLock)
        {
            _ring.TryQueueResponse(response);
            notify = _ring.PushResponses();
            _free.Push(slot);
            _inFlight--;
            if (_idle is not null && _inFlight <= _idleAt)
            {
                _idle.TrySetResult();
                _idle = null;
            }
        }

        if (notify)
        {
            try
            {
                _channel.Notify();
            }
            catch (Exception e) when (e is XenException or ObjectDisposedException)
            {
                // The guest's end is gone (its domain is being destroyed): nobody to tell.
            }
        }

        Kick();
    }

    private Task WaitInFlightAtMostAsync(int count)
    {
        lock (_ringLock)
        {
            if (_inFlight <= count)
            {
                return Task.CompletedTask;
            }

            _idleAt = count;
            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task;
        }
    }
}
