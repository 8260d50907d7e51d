using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// One ring (queue) of a block frontend: its ring page (mapped by grant, writable), its event
/// channel, the requests in flight and, when the frontend took persistent grants, the grants it
/// keeps mapped. A dispatcher takes requests (each copied out once), validates the copy and hands
/// valid ones to the thread pool; each completes on its own and answers in whatever order it
/// finishes (responses carry the request's id). A barrier waits for everything before it and
/// holds back everything after it. A producer index more than a ring ahead is a protocol error:
/// nothing more is taken and the frontend's domain is crashed. Rings of one frontend share
/// nothing but the disk.
/// </summary>
internal sealed class BlkifRing
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
    private long _requests;
    private readonly PersistentGrants? _persistent;

    private BlkifRing(BlkBack owner, HostGrantMapping ringMapping, HostEventChannel channel, bool persistent)
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
        if (persistent)
        {
            var options = owner.Options;
            _persistent = new PersistentGrants(_hv, _guest, owner.Counters, options.MaxPersistentGrants, options.PersistentGrantUnusedTime, options.Time ?? TimeProvider.System);
        }

        _free = new Stack<BlkifRequestSlot>(_ring.Size);
        for (var i = 0; i < _ring.Size; i++)
        {
            _free.Push(new BlkifRequestSlot(this, persistent));
        }
    }

    /// <summary>
    /// Maps the ring (grant <paramref name="ringRef"/>, writable) and binds the frontend's port
    /// <paramref name="port"/>; with <paramref name="persistent"/> the ring's data grants are mapped and kept.
    /// </summary>
    public static BlkifRing Open(BlkBack owner, uint ringRef, uint port, bool persistent)
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
            return new BlkifRing(owner, mapping, channel, persistent);
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

    /// <summary>Requests taken from this ring.</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>Grants this ring keeps mapped now (0 without persistent grants).</summary>
    public int PersistentGrantCount => _persistent?.Count ?? 0;

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
        _persistent?.UnmapAll();
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
            // blkback's LRU pass over the persistent grants, before taking what woke us.
            _persistent?.PurgeIfDue();
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
            Interlocked.Increment(ref _requests);
            var verdict = Validate(slot);
            if (verdict == Blkif.BLKIF_RSP_OKAY && _persistent is not null && slot.SegmentCount > 0)
            {
                verdict = MapSegments(slot);
            }

            if (verdict != Blkif.BLKIF_RSP_OKAY)
            {
                Complete(slot, verdict);
                continue;
            }

            if (slot.Operation == Blkif.BLKIF_OP_WRITE_BARRIER)
            {
                barrier = slot;
                return RingStatus.Ok;
            }

            ThreadPool.UnsafeQueueUserWorkItem(slot, preferLocal: false);
        }

        return _stop.IsCancellationRequested ? RingStatus.Empty : RingStatus.Ok;
    }

    /// <summary>
    /// Checks the slot's copy of the request, as Linux's blkback's dispatch does: BLKIF_RSP_OKAY to
    /// run it (its segments in <see cref="BlkifRequestSlot.Segments"/>), else the status to answer with.
    /// </summary>
    private short Validate(BlkifRequestSlot slot)
    {
        ref readonly var r = ref slot.Request;
        slot.Operation = r.operation;
        slot.SegmentCount = 0;
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
            case Blkif.BLKIF_OP_INDIRECT:
                return ValidateIndirect(slot);
            default:
                // The reserved op and unknown ones (blkback's dispatch_other_io).
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

        for (var i = 0; i < r.nr_segments; i++)
        {
            slot.Segments[i] = r.seg[i];
        }

        slot.SegmentCount = r.nr_segments;
        return ValidateSegments(slot);
    }

    /// <summary>
    /// A <c>blkif_request_indirect</c> (feature-max-indirect-segments): <c>indirect_op</c> must be
    /// READ or WRITE, 1..<see cref="BlkBack.MaxIndirectSegments"/> segments, read once out of the
    /// granted indirect pages (512 to a page), then the same checks as inline segments. Every
    /// failure is BLKIF_RSP_ERROR, answered with <c>indirect_op</c> as blkback answers it.
    /// </summary>
    private short ValidateIndirect(BlkifRequestSlot slot)
    {
        ref readonly var r = ref Unsafe.As<blkif_request, blkif_request_indirect>(ref slot.Request);
        slot.Operation = r.indirect_op;
        Interlocked.Increment(ref _owner.Counters.IndirectRequests);
        if (r.indirect_op is not (Blkif.BLKIF_OP_READ or Blkif.BLKIF_OP_WRITE))
        {
            return Blkif.BLKIF_RSP_ERROR; // "Invalid indirect operation"
        }

        int count = r.nr_segments;
        if (count == 0 || count > BlkBack.MaxIndirectSegments)
        {
            return Blkif.BLKIF_RSP_ERROR; // "Bad number of segments in request"
        }

        var segments = MemoryMarshal.AsBytes(slot.Segments.AsSpan(0, count));
        for (var page = 0; page * SegmentsPerIndirectPage < count; page++)
        {
            var bytes = segments.Slice(page * Memory.MachineMemory.PageSize, Math.Min(segments.Length - (page * Memory.MachineMemory.PageSize), Memory.MachineMemory.PageSize));
            if (!ReadIndirectPage(IndirectGref(ref slot.Request, page), bytes))
            {
                return Blkif.BLKIF_RSP_ERROR;
            }
        }

        if (r.indirect_op == Blkif.BLKIF_OP_WRITE && _device.IsReadOnly)
        {
            return Blkif.BLKIF_RSP_ERROR;
        }

        slot.SegmentCount = count;
        return ValidateSegments(slot); // sector_number lies at the same offset in both layouts
    }

    private static readonly int IndirectGrefsOffset = (int)Marshal.OffsetOf<blkif_request_indirect>(nameof(blkif_request_indirect.indirect_grefs));

    /// <summary>indirect_grefs[<paramref name="page"/>] of the copy (page &lt; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST), read without a fixed-buffer pointer.</summary>
    private static uint IndirectGref(ref blkif_request request, int page)
    {
        var bytes = MemoryMarshal.AsBytes(MemoryMarshal.CreateReadOnlySpan(ref request, 1));
        return MemoryMarshal.Read<uint>(bytes[(IndirectGrefsOffset + (page * sizeof(uint)))..]);
    }

    /// <summary>blkif_request_segment entries in one indirect page (io/blkif.h: PAGE_SIZE / sizeof(struct blkif_request_segment)).</summary>
    private static int SegmentsPerIndirectPage => Memory.MachineMemory.PageSize / Unsafe.SizeOf<blkif_request_segment>();

    /// <summary>
    /// Copies the start of an indirect page into <paramref name="destination"/>: held through the
    /// persistent grants when the ring keeps them (blkback maps indirect pages that way too), else
    /// by grant copy. False when the grant is not one domain 0 may read.
    /// </summary>
    private bool ReadIndirectPage(uint gref, Span<byte> destination)
    {
        if (_persistent is not null)
        {
            var rc = _persistent.Acquire(gref, out var held);
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"indirect page grant {gref}: {rc}");
                return false;
            }

            _hv.Machine.Frame(held.Mfn)[..destination.Length].CopyTo(destination);
            _persistent.Release(ref held);
            return true;
        }

        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            return false;
        }

        var status = GrantOps.HostCopyOut(_hv.HostDomain, _guest, gref, 0, destination);
        if (status != GrantStatus.Okay)
        {
            _owner.Log($"indirect page grant {gref}: {status}");
            return false;
        }

        return true;
    }

    /// <summary>Every segment <c>first_sect &lt;= last_sect &lt; page/sector-size</c>; the range they cover inside the disk.</summary>
    private short ValidateSegments(BlkifRequestSlot slot)
    {
        long sectors = 0;
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            var seg = slot.Segments[i];
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

        return SetRange(slot, slot.Request.sector_number, (ulong)sectors);
    }

    /// <summary>
    /// Holds every segment's grant (persistent grants: kept ones reused, new ones mapped writable),
    /// as blkback maps a request's segments before any I/O: one that cannot be held fails the
    /// request with BLKIF_RSP_ERROR and nothing is held.
    /// </summary>
    private short MapSegments(BlkifRequestSlot slot)
    {
        var mappings = slot.Mappings!;
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            var rc = _persistent!.Acquire(slot.Segments[i].gref, out mappings[i]);
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"request {slot.Request.id}: grant {slot.Segments[i].gref} of segment {i}: {rc}");
                for (var j = 0; j < i; j++)
                {
                    _persistent.Release(ref mappings[j]);
                }

                return Blkif.BLKIF_RSP_ERROR;
            }
        }

        slot.Mapped = true;
        return Blkif.BLKIF_RSP_OKAY;
    }

    private void ReleaseSegments(BlkifRequestSlot slot)
    {
        var mappings = slot.Mappings!;
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            _persistent!.Release(ref mappings[i]);
        }

        slot.Mapped = false;
    }

    /// <summary>The bytes of segment <paramref name="i"/> in its mapped frame.</summary>
    private Span<byte> MappedSegment(BlkifRequestSlot slot, int i)
    {
        var seg = slot.Segments[i];
        return _hv.Machine.Frame(slot.Mappings![i].Mfn).Slice(seg.first_sect * _sectorSize, (seg.last_sect - seg.first_sect + 1) * _sectorSize);
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
        var op = slot.Operation;
        if (SynchronousDevice is not { } disk || (op != Blkif.BLKIF_OP_READ && op != Blkif.BLKIF_OP_WRITE))
        {
            _ = ExecuteAsync(slot);
            return;
        }

        short status;
        try
        {
            status = op != Blkif.BLKIF_OP_READ ? WriteDirect(slot, disk)
                : slot.Mapped ? ReadMapped(slot, disk)
                : ReadDirect(slot);
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
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            var seg = slot.Segments[i];
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

        CountRead(bytes);
        return Blkif.BLKIF_RSP_OKAY;
    }

    /// <summary>A read into mapped (persistent) grants: each segment's sectors read straight into the frame the ring holds.</summary>
    private short ReadMapped(BlkifRequestSlot slot, ISynchronousBlockDevice disk)
    {
        var sector = slot.Sector;
        var bytes = 0;
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            var window = MappedSegment(slot, i);
            disk.Read(sector, window);
            sector += window.Length / _sectorSize;
            bytes += window.Length;
        }

        CountRead(bytes);
        return Blkif.BLKIF_RSP_OKAY;
    }

    /// <summary>
    /// A write: every segment is copied into the slot's buffer first (by grant copy, so a bad grant
    /// in any segment fails the request before the disk changes; or out of the frames the ring
    /// holds mapped), then one write on this thread.
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
            _owner.Log($"request {slot.Request.id} (op {slot.Operation}) failed: {e.Message}");
            status = Blkif.BLKIF_RSP_ERROR;
        }

        Complete(slot, status);
    }

    private async ValueTask<short> PerformAsync(BlkifRequestSlot slot)
    {
        var counters = _owner.Counters;
        if (slot.Operation == Blkif.BLKIF_OP_DISCARD)
        {
            // Its sectors are a range of the disk, not data in the slot (they may be the whole disk).
            await _device.DiscardAsync(slot.Sector, slot.Sectors, CancellationToken.None).ConfigureAwait(false);
            Interlocked.Increment(ref counters.Discards);
            return Blkif.BLKIF_RSP_OKAY;
        }

        var bytes = (int)(slot.Sectors * _sectorSize);
        var data = slot.EnsureBuffer(bytes).AsMemory(0, bytes);
        switch (slot.Operation)
        {
            case Blkif.BLKIF_OP_READ:
                await _device.ReadAsync(slot.Sector, data, CancellationToken.None).ConfigureAwait(false);
                if (!CopySegments(slot, toGuest: true))
                {
                    return Blkif.BLKIF_RSP_ERROR;
                }

                CountRead(bytes);
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

            default:
                return Blkif.BLKIF_RSP_EOPNOTSUPP; // not reached: validation answered it
        }
    }

    private void CountRead(int bytes)
    {
        _guest.Meter.CountBlockRead(bytes);
        Interlocked.Add(ref _owner.Counters.BytesRead, bytes);
        Interlocked.Increment(ref _owner.Counters.Reads);
    }

    private void CountWrite(int bytes)
    {
        _guest.Meter.CountBlockWritten(bytes);
        Interlocked.Add(ref _owner.Counters.BytesWritten, bytes);
    }

    /// <summary>
    /// Moves every segment between the slot's buffer and the guest's pages: through the frames the
    /// ring holds mapped (persistent grants), else by grant copy (false at the first bad grant).
    /// </summary>
    private bool CopySegments(BlkifRequestSlot slot, bool toGuest)
    {
        var buffer = slot.EnsureBuffer((int)(slot.Sectors * _sectorSize));
        if (slot.Mapped)
        {
            var at = 0;
            for (var i = 0; i < slot.SegmentCount; i++)
            {
                var window = MappedSegment(slot, i);
                if (toGuest)
                {
                    buffer.AsSpan(at, window.Length).CopyTo(window);
                }
                else
                {
                    window.CopyTo(buffer.AsSpan(at, window.Length));
                }

                at += window.Length;
            }

            return true;
        }

        // A domain destroyed meanwhile has no grants to copy (HostGrants' own liveness check).
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            return false;
        }

        var offset = 0;
        for (var i = 0; i < slot.SegmentCount; i++)
        {
            var seg = slot.Segments[i];
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

        if (slot.Mapped)
        {
            ReleaseSegments(slot); // as blkback unmaps (or gives back) before it responds
        }

        var response = new blkif_response { id = slot.Request.id, operation = slot.Operation, status = status };
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
