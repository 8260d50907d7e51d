using System.Buffers;
using System.Globalization;
using System.Numerics;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>What <see cref="BlockFrontend.Connect(GuestRuntime, XenBusDevice, BlockFrontendOptions?)"/> may change.</summary>
public sealed record BlockFrontendOptions
{
    /// <summary>How long each step of the XenBus handshake may wait for the backend.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// blkfront: the guest end of Xen's block split driver (xen/io/blkif.h) on the guest stub.
/// <list type="bullet">
/// <item>Handshake (io/xenbus.h, io/blkif.h): wait for the backend's InitWait; publish
/// <c>ring-ref</c>, <c>event-channel</c>, <c>protocol</c> = <c>x86_64-abi</c> and
/// <c>feature-large-sector-size</c> = 1 in one transaction; Initialised; wait for Connected; read
/// <c>sectors</c>, <c>sector-size</c>, <c>info</c>, <c>feature-flush-cache</c>,
/// <c>feature-discard</c>; Connected. <see cref="Close"/>: Closing, backend Closed, Closed;
/// <see cref="Reconnect"/> starts over from Initialising.</item>
/// <item>One ring page granted to the backend; one request slot per ring entry (32), each with
/// its own 11 data pages granted writable to the backend for the life of the connection (as
/// Linux's persistent grants, but the backend need not know: it sees ordinary grants). Data is
/// copied between the caller's buffer and the slot's pages; ending every grant on close must
/// succeed, and is checked.</item>
/// <item>Requests carry the slot number as id. Responses are taken in the event channel's
/// handler (interrupt context: it copies read data out and completes, never blocks). A response
/// producer beyond what was requested, or an id that is not a request in flight, is a protocol
/// error: the frontend stops using the ring and fails everything in flight.</item>
/// </list>
/// All sector numbers are in <see cref="SectorSize"/> units (the frontend writes
/// <c>feature-large-sector-size</c>). Call it from one flow of the guest (a kernel's block layer
/// serialises submission the same way); completions arrive in the event handler.
/// </summary>
public sealed class BlockFrontend : IDisposable
{
    /// <summary>Segments (pages) per ring request.</summary>
    public const int MaxSegments = Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST;

    /// <summary>Ring requests that can be in flight at once (the ring's size).</summary>
    public const int MaxInFlight = Ring.RING_SIZE_blkif;

    private const int PageSize = PageAllocator.PageSize;
    private const int MaxRequestBytes = MaxSegments * PageSize;
    private const uint AllSlots = uint.MaxValue; // MaxInFlight == 32 bits

    private readonly GuestRuntime _rt;
    private readonly XenGuest _guest;
    private readonly GrantTableClient _grants;
    private readonly BlockFrontendOptions _options;
    private readonly Slot[] _slots = new Slot[MaxInFlight];
    private readonly Lock _lock = new();
    private readonly BlockOperation _syncOp = new();
    private readonly Func<bool> _slotFreeOrBroken;
    private readonly Func<bool> _idleOrBroken;
    private GuestPage _ringPage;
    private GuestFrontRing<blkif_request, blkif_response>? _ring;
    private uint _ringRef;
    private uint _port;
    private uint _freeMask;
    private bool _connected;
    private string? _broken;

    private sealed class Slot
    {
        public readonly GuestPage[] Pages = new GuestPage[MaxSegments];
        public readonly uint[] Grefs = new uint[MaxSegments];
        public BlockOperation? Op;
        public Memory<byte> ReadDestination;
    }

    private BlockFrontend(GuestRuntime rt, XenBusDevice device, BlockFrontendOptions options)
    {
        _rt = rt;
        _guest = rt.Guest;
        _grants = rt.Grants ?? throw new InvalidOperationException("blkfront needs a grant table (a translated guest with GuestKernelOptions.GrantFrames > 0)");
        _options = options;
        Device = device;
        _slotFreeOrBroken = () => _freeMask != 0 || _broken is not null || !_connected;
        _idleOrBroken = () => _freeMask == AllSlots || _broken is not null;
        for (var i = 0; i < _slots.Length; i++)
        {
            var slot = new Slot();
            for (var s = 0; s < MaxSegments; s++)
            {
                slot.Pages[s] = _guest.Pages.Allocate();
            }

            _slots[i] = slot;
        }
    }

    /// <summary>The XenBus device (<c>device/vbd/&lt;id&gt;</c>).</summary>
    public XenBusDevice Device { get; }

    /// <summary>The disk's size in <see cref="SectorSize"/> units (backend's <c>sectors</c>).</summary>
    public long SectorCount { get; private set; }

    /// <summary>Bytes per sector (backend's <c>sector-size</c>).</summary>
    public int SectorSize { get; private set; } = 512;

    /// <summary>The backend says the disk is read-only (<c>info</c> has VDISK_READONLY). Writes are still sent; the backend refuses them.</summary>
    public bool ReadOnly { get; private set; }

    /// <summary>The backend offers <c>BLKIF_OP_FLUSH_DISKCACHE</c> (<c>feature-flush-cache</c>).</summary>
    public bool SupportsFlush { get; private set; }

    /// <summary>The backend offers <c>BLKIF_OP_DISCARD</c> (<c>feature-discard</c>).</summary>
    public bool SupportsDiscard { get; private set; }

    /// <summary>True between a completed handshake and <see cref="Close"/>.</summary>
    public bool IsConnected => _connected;

    /// <summary>The event channel of the current connection.</summary>
    public uint Port => _port;

    /// <summary>Ring requests in flight now.</summary>
    public int InFlight => BitOperations.PopCount(~_freeMask);

    /// <summary>Why the frontend stopped using its ring (a protocol error by the backend), or null.</summary>
    public string? Broken => _broken;

    /// <summary>Connects the first <c>vbd</c> device the runtime found.</summary>
    public static BlockFrontend Connect(GuestRuntime rt, BlockFrontendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rt);
        var device = rt.Devices.FirstOrDefault(d => d.Type == "vbd")
            ?? throw new InvalidOperationException("this domain has no device/vbd in XenStore");
        return Connect(rt, device, options);
    }

    /// <summary>Probes <paramref name="device"/> and runs the handshake; returns a connected frontend.</summary>
    /// <exception cref="InvalidOperationException">The backend refused (its <c>error</c> node is in the message) or did not answer in time.</exception>
    public static BlockFrontend Connect(GuestRuntime rt, XenBusDevice device, BlockFrontendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rt);
        ArgumentNullException.ThrowIfNull(device);
        var rc = device.Probe();
        if (rc < 0)
        {
            throw new InvalidOperationException($"{device.NodeName}: reading backend/backend-id failed with {XenGuest.ErrnoName(rc)}");
        }

        var fe = new BlockFrontend(rt, device, options ?? new BlockFrontendOptions());
        try
        {
            fe.Handshake();
        }
        catch
        {
            fe.FreePages();
            throw;
        }

        return fe;
    }

    private ulong Deadline() => _guest.Clock.SystemTimeNs() + ((ulong)_options.HandshakeTimeout.Ticks * 100);

    /// <summary>talk_to_blkback + connect: everything from the backend's InitWait to our Connected.</summary>
    private void Handshake()
    {
        Device.WaitForBackendState(s => s == XenbusState.InitWait, "InitWait", _options.HandshakeTimeout);
        var backend = Device.BackendId;

        _ringPage = _guest.Pages.Allocate();
        _ring = new GuestFrontRing<blkif_request, blkif_response>(_guest.Memory, _ringPage.Address, Ring.RING_SIZE_blkif);
        Device.Check(_grants.GrantAccess(backend, _ringPage, readOnly: false, out _ringRef), "granting the ring page");
        foreach (var slot in _slots)
        {
            for (var s = 0; s < MaxSegments; s++)
            {
                Device.Check(_grants.GrantAccess(backend, slot.Pages[s], readOnly: false, out slot.Grefs[s]), "granting a data page");
            }
        }

        Device.Check(_rt.Events.AllocUnbound(backend, OnEvent, out _port), $"EVTCHNOP_alloc_unbound for domain {backend}");
        _broken = null;
        _freeMask = AllSlots;

        var node = Device.NodeName;
        Device.Check(
            Device.Client.Transaction(t =>
            {
                long r;
                if ((r = t.Write($"{node}/ring-ref", _ringRef.ToString(CultureInfo.InvariantCulture))) < 0 ||
                    (r = t.Write($"{node}/event-channel", _port.ToString(CultureInfo.InvariantCulture))) < 0 ||
                    (r = t.Write($"{node}/protocol", Protocols.XEN_IO_PROTO_ABI_X86_64)) < 0 ||
                    (r = t.Write($"{node}/feature-large-sector-size", "1")) < 0)
                {
                    return r;
                }

                return 0;
            }),
            "publishing ring-ref/event-channel/protocol");
        Device.Check(Device.SwitchState(XenbusState.Initialised), "switching to Initialised");

        var state = Device.WaitForBackendState(s => s is XenbusState.Connected or XenbusState.Closing or XenbusState.Closed, "Connected", _options.HandshakeTimeout);
        if (state != XenbusState.Connected)
        {
            var reason = Device.ReadBackend("error", out var error) >= 0 ? error : "no error node";
            throw new InvalidOperationException($"{Device.NodeName}: the backend refused the connection and is {state}: {reason}");
        }

        SectorCount = ReadBackendLong("sectors", required: true);
        SectorSize = (int)ReadBackendLong("sector-size", required: false, 512);
        if (SectorSize is < 512 or > PageSize || !BitOperations.IsPow2(SectorSize))
        {
            throw new InvalidOperationException($"{Device.NodeName}: the backend's sector-size {SectorSize} is not a power of two from 512 to 4096");
        }

        ReadOnly = (ReadBackendLong("info", required: false) & Blkif.VDISK_READONLY) != 0;
        SupportsFlush = ReadBackendLong("feature-flush-cache", required: false) == 1;
        SupportsDiscard = ReadBackendLong("feature-discard", required: false) == 1;
        Device.Check(Device.SwitchState(XenbusState.Connected), "switching to Connected");
        _connected = true;
    }

    private long ReadBackendLong(string key, bool required, long fallback = 0)
    {
        if (Device.ReadBackend(key, out var text) < 0)
        {
            return required ? throw new InvalidOperationException($"{Device.NodeName}: the backend has no {key}") : fallback;
        }

        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v >= 0
            ? v
            : throw new InvalidOperationException($"{Device.NodeName}: the backend's {key} is '{text}', expected a non-negative number");
    }

    /// <summary>
    /// blkfront's disconnect: waits for every request in flight, Closing, waits for the backend's
    /// Closed, Closed; closes the port and ends every grant (which must succeed: the backend has
    /// let go of the pages).
    /// </summary>
    public void Close()
    {
        if (!_connected)
        {
            return;
        }

        _guest.WaitFor(_idleOrBroken, Deadline());
        Device.Check(Device.SwitchState(XenbusState.Closing), "switching to Closing");
        Device.WaitForBackendState(s => s is XenbusState.Closing or XenbusState.Closed or XenbusState.Unknown, "Closing", _options.HandshakeTimeout);
        _connected = false;
        Device.Check(Device.SwitchState(XenbusState.Closed), "switching to Closed");
        Device.WaitForBackendState(s => s is XenbusState.Closed or XenbusState.Unknown, "Closed", _options.HandshakeTimeout);
        Device.Check(_rt.Events.Unbind(_port), $"closing port {_port}");
        EndGrants();
    }

    /// <summary>Starts over after <see cref="Close"/> (closing first if still connected): Initialising, then the handshake.</summary>
    public void Reconnect()
    {
        Close();
        Device.Check(Device.SwitchState(XenbusState.Initialising), "switching to Initialising");
        Handshake();
    }

    private void EndGrants()
    {
        var busy = 0;
        if (_grants.EndAccess(_ringRef) != 0)
        {
            busy++;
        }

        foreach (var slot in _slots)
        {
            foreach (var gref in slot.Grefs)
            {
                if (_grants.EndAccess(gref) != 0)
                {
                    busy++;
                }
            }
        }

        if (busy != 0)
        {
            throw new InvalidOperationException($"{Device.NodeName}: {busy} grants are still in use by domain {Device.BackendId} after it closed (GTF_reading/GTF_writing set)");
        }

        _guest.Pages.Free(_ringPage);
        _ring = null;
    }

    private void FreePages()
    {
        // Only when the handshake failed before any grant could be in use; grants that were made stay
        // allocated (their pages too) rather than risk freeing a page the backend may still hold.
        if (_ring is null)
        {
            foreach (var slot in _slots)
            {
                foreach (var p in slot.Pages)
                {
                    _guest.Pages.Free(p);
                }
            }
        }
    }

    /// <summary>Closes the connection (see <see cref="Close"/>).</summary>
    public void Dispose() => Close();

    // ---------------------------------------------------------------- submission

    /// <summary>Starts a read of <c>destination.Length</c> bytes (whole sectors) from <paramref name="sector"/>; the data lands in <paramref name="destination"/> before the operation completes.</summary>
    public BlockOperation SubmitRead(long sector, Memory<byte> destination, BlockOperation? reuse = null)
    {
        var op = reuse ?? new BlockOperation();
        SubmitData(Blkif.BLKIF_OP_READ, sector, destination, default, op);
        return op;
    }

    /// <summary>Starts a write of <paramref name="source"/> (whole sectors) at <paramref name="sector"/>; the data is copied before this returns.</summary>
    public BlockOperation SubmitWrite(long sector, ReadOnlySpan<byte> source, BlockOperation? reuse = null)
    {
        var op = reuse ?? new BlockOperation();
        SubmitData(Blkif.BLKIF_OP_WRITE, sector, default, source, op);
        return op;
    }

    /// <summary>Starts a cache flush (<c>BLKIF_OP_FLUSH_DISKCACHE</c>, no segments).</summary>
    /// <exception cref="NotSupportedException">The backend does not offer feature-flush-cache.</exception>
    public BlockOperation SubmitFlush(BlockOperation? reuse = null)
    {
        if (!SupportsFlush)
        {
            throw new NotSupportedException($"{Device.NodeName}: the backend does not offer feature-flush-cache");
        }

        var op = reuse ?? new BlockOperation();
        op.Begin(Blkif.BLKIF_OP_FLUSH_DISKCACHE, 0, 0);
        try
        {
            var slot = AcquireSlot(op);
            Publish(new blkif_request { operation = Blkif.BLKIF_OP_FLUSH_DISKCACHE, id = (ulong)slot, handle = Handle });
        }
        finally
        {
            op.EndSubmit();
        }

        return op;
    }

    /// <summary>Starts a discard of <paramref name="count"/> sectors from <paramref name="sector"/> (the blkif_request_discard layout).</summary>
    /// <exception cref="NotSupportedException">The backend does not offer feature-discard.</exception>
    public BlockOperation SubmitDiscard(long sector, long count, BlockOperation? reuse = null)
    {
        if (!SupportsDiscard)
        {
            throw new NotSupportedException($"{Device.NodeName}: the backend does not offer feature-discard");
        }

        CheckRange(sector, count);
        var op = reuse ?? new BlockOperation();
        op.Begin(Blkif.BLKIF_OP_DISCARD, sector, count);
        try
        {
            var slot = AcquireSlot(op);
            Publish(new blkif_request_discard
            {
                operation = Blkif.BLKIF_OP_DISCARD,
                id = (ulong)slot,
                handle = Handle,
                sector_number = (ulong)sector,
                nr_sectors = (ulong)count,
            });
        }
        finally
        {
            op.EndSubmit();
        }

        return op;
    }

    private ushort Handle => ushort.TryParse(Device.Id, NumberStyles.None, CultureInfo.InvariantCulture, out var h) ? h : (ushort)0;

    private void CheckRange(long sector, long count)
    {
        if (sector < 0 || count < 0 || sector > SectorCount || count > SectorCount - sector)
        {
            throw new ArgumentOutOfRangeException(nameof(sector), sector, $"{count} sectors from {sector} are not inside the disk's {SectorCount} sectors");
        }
    }

    private void SubmitData(int operation, long sector, Memory<byte> destination, ReadOnlySpan<byte> source, BlockOperation op)
    {
        var length = operation == Blkif.BLKIF_OP_READ ? destination.Length : source.Length;
        if (length % SectorSize != 0)
        {
            throw new ArgumentException($"{length} bytes is not a whole number of {SectorSize}-byte sectors", operation == Blkif.BLKIF_OP_READ ? nameof(destination) : nameof(source));
        }

        CheckRange(sector, length / SectorSize);
        op.Begin(operation, sector, length);
        try
        {
            for (var offset = 0; offset < length; offset += MaxRequestBytes)
            {
                var bytes = Math.Min(MaxRequestBytes, length - offset);
                var slotIndex = AcquireSlot(op);
                var slot = _slots[slotIndex];
                var request = new blkif_request
                {
                    operation = (byte)operation,
                    handle = Handle,
                    id = (ulong)slotIndex,
                    sector_number = (ulong)(sector + (offset / SectorSize)),
                };
                var segments = (bytes + PageSize - 1) / PageSize;
                request.nr_segments = (byte)segments;
                for (var s = 0; s < segments; s++)
                {
                    var segBytes = Math.Min(PageSize, bytes - (s * PageSize));
                    request.seg[s] = new blkif_request_segment
                    {
                        gref = slot.Grefs[s],
                        first_sect = 0,
                        last_sect = (byte)((segBytes / SectorSize) - 1),
                    };
                    if (operation == Blkif.BLKIF_OP_WRITE)
                    {
                        _guest.Memory.Write(slot.Pages[s].Address, source.Slice(offset + (s * PageSize), segBytes));
                    }
                }

                slot.ReadDestination = operation == Blkif.BLKIF_OP_READ ? destination.Slice(offset, bytes) : default;
                Publish(request);
            }
        }
        finally
        {
            op.EndSubmit();
        }
    }

    /// <summary>Takes a free request slot, sleeping until a response frees one.</summary>
    private int AcquireSlot(BlockOperation op)
    {
        while (true)
        {
            ThrowIfUnusable();
            using (_guest.IrqsOff())
            {
                lock (_lock)
                {
                    if (_freeMask != 0)
                    {
                        var i = BitOperations.TrailingZeroCount(_freeMask);
                        _freeMask &= ~(1u << i);
                        _slots[i].Op = op;
                        op.AddPart();
                        return i;
                    }
                }
            }

            _guest.WaitFor(_slotFreeOrBroken);
        }
    }

    private void ThrowIfUnusable()
    {
        if (_broken is { } why)
        {
            throw new InvalidOperationException($"{Device.NodeName}: the frontend stopped using its ring: {why}");
        }

        if (!_connected)
        {
            throw new InvalidOperationException($"{Device.NodeName}: not connected");
        }
    }

    private void Publish(in blkif_request request)
    {
        bool notify;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                _ring!.Queue(request);
                notify = _ring.PushRequestsAndCheckNotify();
            }

            if (notify)
            {
                _rt.Events.Send(_port);
            }
        }
    }

    private void Publish(in blkif_request_discard request)
    {
        bool notify;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                _ring!.QueueVariant(request);
                notify = _ring.PushRequestsAndCheckNotify();
            }

            if (notify)
            {
                _rt.Events.Send(_port);
            }
        }
    }

    // ---------------------------------------------------------------- completion (interrupt context)

    private void OnEvent(uint port)
    {
        lock (_lock)
        {
            if (port != _port || _ring is null || _broken is not null)
            {
                return;
            }

            // Bounded: each pass takes at most what is outstanding.
            for (var pass = 0; pass <= MaxInFlight + 1; pass++)
            {
                int got;
                while ((got = _ring.TryTakeResponse(out var response)) == 1)
                {
                    if (!CompleteResponse(response))
                    {
                        return;
                    }
                }

                if (got < 0)
                {
                    Fail("the backend's response producer is ahead of the requests in flight");
                    return;
                }

                if (!_ring.FinalCheckForResponses())
                {
                    return;
                }
            }
        }
    }

    private bool CompleteResponse(in blkif_response response)
    {
        var id = response.id;
        if (id >= MaxInFlight || (_freeMask & (1u << (int)id)) != 0 || _slots[(int)id].Op is not { } op)
        {
            Fail($"a response names id {id}, which is not a request in flight");
            return false;
        }

        var slot = _slots[(int)id];
        if (response.status == Blkif.BLKIF_RSP_OKAY && !slot.ReadDestination.IsEmpty)
        {
            var dest = slot.ReadDestination.Span;
            for (var s = 0; s * PageSize < dest.Length; s++)
            {
                var n = Math.Min(PageSize, dest.Length - (s * PageSize));
                _guest.Memory.Read(slot.Pages[s].Address, dest.Slice(s * PageSize, n));
            }
        }

        slot.Op = null;
        slot.ReadDestination = default;
        _freeMask |= 1u << (int)id;
        op.Complete(response.status);
        return true;
    }

    /// <summary>A protocol error by the backend: stop using the ring; fail what is in flight (its slots stay taken: the backend may still hold them).</summary>
    private void Fail(string why)
    {
        _broken = why;
        foreach (var slot in _slots)
        {
            if (slot.Op is { } op)
            {
                slot.Op = null;
                op.Complete(Blkif.BLKIF_RSP_ERROR, why);
            }
        }
    }

    // ---------------------------------------------------------------- waiting and the simple API

    /// <summary>Sleeps until <paramref name="op"/> completes, then throws <see cref="BlockIOException"/> if it failed.</summary>
    public void Wait(BlockOperation op)
    {
        ArgumentNullException.ThrowIfNull(op);
        _guest.WaitFor(op.IsDoneCondition);
        op.ThrowIfFailed();
    }

    /// <summary>Sleeps until every operation completes, then throws the first failure.</summary>
    public void WaitAll(ReadOnlySpan<BlockOperation> ops)
    {
        foreach (var op in ops)
        {
            _guest.WaitFor(op.IsDoneCondition);
        }

        foreach (var op in ops)
        {
            op.ThrowIfFailed();
        }
    }

    /// <summary>Reads <c>destination.Length</c> bytes (whole sectors) from <paramref name="sector"/>, with up to a ring's worth of requests in flight.</summary>
    public void Read(long sector, Span<byte> destination)
    {
        // The handler copies into a Memory<byte>; a Span cannot wait on the heap, so read through a
        // pooled window of a full ring's worth and copy.
        const int Window = MaxInFlight * MaxRequestBytes;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Min(Window, destination.Length));
        try
        {
            for (var offset = 0; offset < destination.Length; offset += Window)
            {
                var n = Math.Min(Window, destination.Length - offset);
                var op = SubmitRead(sector + (offset / SectorSize), buffer.AsMemory(0, n), _syncOp);
                Wait(op);
                buffer.AsSpan(0, n).CopyTo(destination.Slice(offset, n));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Writes <paramref name="source"/> (whole sectors) at <paramref name="sector"/>, split into 11-page requests with up to a ring's worth in flight.</summary>
    public void Write(long sector, ReadOnlySpan<byte> source) => Wait(SubmitWrite(sector, source, _syncOp));

    /// <summary>Flushes the backend's cache (<c>BLKIF_OP_FLUSH_DISKCACHE</c>).</summary>
    public void Flush() => Wait(SubmitFlush(_syncOp));

    /// <summary>Discards <paramref name="count"/> sectors from <paramref name="sector"/>.</summary>
    public void Discard(long sector, long count) => Wait(SubmitDiscard(sector, count, _syncOp));
}
