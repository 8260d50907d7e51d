using System.Globalization;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>What <see cref="NetFrontend.Connect(GuestRuntime, XenBusDevice, NetFrontendOptions?)"/> may change.</summary>
public sealed record NetFrontendOptions
{
    /// <summary>How long each step of the XenBus handshake may wait for the backend.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Receive buffers (pages) kept posted in the rx ring (1..256).</summary>
    public int RxBuffers { get; init; } = 64;

    /// <summary>Transmit slots (one page each): frames in flight at most (1..256).</summary>
    public int TxSlots { get; init; } = 64;
}

/// <summary>What one netfront has carried (a snapshot).</summary>
/// <param name="TxPackets">Frames sent that the backend answered NETIF_RSP_OKAY.</param>
/// <param name="TxBytes">Their bytes.</param>
/// <param name="TxErrors">Frames the backend answered with an error (NETIF_RSP_ERROR or DROPPED).</param>
/// <param name="RxPackets">Frames received and handed to the program.</param>
/// <param name="RxBytes">Their bytes.</param>
/// <param name="RxErrors">Receive responses that carried an error or an impossible size/offset (the buffer is posted again).</param>
public readonly record struct NetFrontendStats(long TxPackets, long TxBytes, long TxErrors, long RxPackets, long RxBytes, long RxErrors);

/// <summary>
/// netfront: the guest end of Xen's network split driver (xen/io/netif.h) on the guest stub.
/// <list type="bullet">
/// <item>Handshake: wait for the backend's InitWait; it must offer <c>feature-rx-copy</c>; read
/// <c>mac</c> from our own directory; publish <c>tx-ring-ref</c>, <c>rx-ring-ref</c>,
/// <c>event-channel</c>, <c>request-rx-copy</c> = 1, <c>feature-rx-notify</c> = 1 and
/// <c>feature-no-csum-offload</c> = 1 (frames reach the program as they are: a blank checksum must
/// be finished by the backend) in one transaction; Initialised; wait for Connected; Connected. No
/// <c>feature-sg</c> or <c>feature-gso-*</c>: every frame comes in one buffer, GSO frames as segments.</item>
/// <item>Receive: <see cref="NetFrontendOptions.RxBuffers"/> pages granted writable to the backend
/// stay posted in the rx ring; the event handler takes responses (interrupt context: it only
/// records them); <see cref="Receive"/> copies a frame out of its page and posts the page again.</item>
/// <item>Transmit: <see cref="NetFrontendOptions.TxSlots"/> pages granted read-only; a frame is copied
/// into a free slot's page and sent as one request (a frame of up to 1514 bytes fits one slot);
/// the handler frees the slot on its response.</item>
/// <item>A response producer beyond what was requested, or an id that is not in flight, is a
/// protocol error: the frontend stops using its rings (<see cref="Broken"/>).</item>
/// </list>
/// Call it from one flow of the guest; completions arrive in the event handler.
/// </summary>
public sealed class NetFrontend : IDisposable
{
    /// <summary>ETH_HLEN: the shortest frame.</summary>
    public const int MinFrameBytes = 14;

    /// <summary>The longest frame (MTU 1500 plus the header).</summary>
    public const int MaxFrameBytes = 1514;

    private const int PageSize = PageAllocator.PageSize;

    private readonly GuestRuntime _rt;
    private readonly XenGuest _guest;
    private readonly GrantTableClient _grants;
    private readonly NetFrontendOptions _options;
    private readonly Lock _lock = new();
    private readonly byte[] _mac = new byte[6];

    private readonly GuestPage[] _txPages;
    private readonly uint[] _txGrefs;
    private readonly int[] _txLength; // 0: free, else the frame's length in flight
    private readonly int[] _txFree;
    private int _txFreeCount;

    private readonly GuestPage[] _rxPages;
    private readonly uint[] _rxGrefs;
    private readonly bool[] _rxPosted;
    private readonly netif_rx_response[] _rxDone; // FIFO of filled buffers, RxBuffers long
    private int _rxDoneHead;
    private int _rxDoneCount;

    private readonly Func<bool> _txSlotFree;
    private readonly Func<bool> _frameReady;
    private readonly Func<bool> _txIdle;
    private GuestPage _txRingPage;
    private GuestPage _rxRingPage;
    private GuestFrontRing<netif_tx_request, netif_tx_response>? _tx;
    private GuestFrontRing<netif_rx_request, netif_rx_response>? _rx;
    private uint _txRingRef;
    private uint _rxRingRef;
    private uint _port;
    private bool _connected;
    private string? _broken;
    private long _txPackets, _txBytes, _txErrors, _rxPackets, _rxBytes, _rxErrors;

    private NetFrontend(GuestRuntime rt, XenBusDevice device, NetFrontendOptions options)
    {
        if (options.RxBuffers is < 1 or > Ring.RING_SIZE_netif_rx || options.TxSlots is < 1 or > Ring.RING_SIZE_netif_tx)
        {
            throw new ArgumentException($"RxBuffers {options.RxBuffers} and TxSlots {options.TxSlots}: each must be 1..256 (the ring's size)", nameof(options));
        }

        _rt = rt;
        _guest = rt.Guest;
        _grants = rt.Grants ?? throw new InvalidOperationException("netfront needs a grant table (a translated guest with GuestKernelOptions.GrantFrames > 0)");
        _options = options;
        Device = device;
        _txPages = _guest.Pages.Allocate(options.TxSlots);
        _txGrefs = new uint[options.TxSlots];
        _txLength = new int[options.TxSlots];
        _txFree = new int[options.TxSlots];
        _rxPages = _guest.Pages.Allocate(options.RxBuffers);
        _rxGrefs = new uint[options.RxBuffers];
        _rxPosted = new bool[options.RxBuffers];
        _rxDone = new netif_rx_response[options.RxBuffers];
        _txSlotFree = () => _txFreeCount > 0 || _broken is not null || !_connected;
        _frameReady = () => _rxDoneCount > 0 || _broken is not null || !_connected;
        _txIdle = () => _txFreeCount == _txFree.Length || _broken is not null || !_connected;
    }

    /// <summary>The XenBus device (<c>device/vif/&lt;id&gt;</c>).</summary>
    public XenBusDevice Device { get; }

    /// <summary>Our MAC address (the <c>mac</c> node the toolstack wrote), six octets.</summary>
    public ReadOnlySpan<byte> Mac => _mac;

    /// <summary>The MAC address as <c>aa:bb:cc:dd:ee:ff</c>.</summary>
    public string MacText { get; private set; } = "";

    /// <summary>True between a completed handshake and <see cref="Close"/>.</summary>
    public bool IsConnected => _connected;

    /// <summary>The event channel of the current connection.</summary>
    public uint Port => _port;

    /// <summary>Frames sent and not yet answered.</summary>
    public int TxInFlight => _txFree.Length - _txFreeCount;

    /// <summary>Why the frontend stopped using its rings (a protocol error by the backend), or null.</summary>
    public string? Broken => _broken;

    /// <summary>Frames and bytes carried, and errors seen.</summary>
    public NetFrontendStats Stats => new(_txPackets, _txBytes, _txErrors, _rxPackets, _rxBytes, _rxErrors);

    /// <summary>Connects the first <c>vif</c> device the runtime found.</summary>
    public static NetFrontend Connect(GuestRuntime rt, NetFrontendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rt);
        var device = rt.Devices.FirstOrDefault(d => d.Type == "vif")
            ?? throw new InvalidOperationException("this domain has no device/vif in XenStore");
        return Connect(rt, device, options);
    }

    /// <summary>Connects vif <paramref name="devid"/>.</summary>
    public static NetFrontend Connect(GuestRuntime rt, int devid, NetFrontendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rt);
        var id = devid.ToString(CultureInfo.InvariantCulture);
        var device = rt.Devices.FirstOrDefault(d => d.Type == "vif" && d.Id == id)
            ?? throw new InvalidOperationException($"this domain has no device/vif/{devid} in XenStore");
        return Connect(rt, device, options);
    }

    /// <summary>Probes <paramref name="device"/> and runs the handshake; returns a connected frontend.</summary>
    /// <exception cref="InvalidOperationException">The backend refused (its <c>error</c> node is in the message) or did not answer in time.</exception>
    public static NetFrontend Connect(GuestRuntime rt, XenBusDevice device, NetFrontendOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rt);
        ArgumentNullException.ThrowIfNull(device);
        var rc = device.Probe();
        if (rc < 0)
        {
            throw new InvalidOperationException($"{device.NodeName}: reading backend/backend-id failed with {XenGuest.ErrnoName(rc)}");
        }

        var fe = new NetFrontend(rt, device, options ?? new NetFrontendOptions());
        fe.Handshake();
        return fe;
    }

    private ulong Deadline() => _guest.Clock.SystemTimeNs() + ((ulong)_options.HandshakeTimeout.Ticks * 100);

    private void Handshake()
    {
        Device.WaitForBackendState(s => s == XenbusState.InitWait, "InitWait", _options.HandshakeTimeout);
        var backend = Device.BackendId;
        if (Device.ReadBackend("feature-rx-copy", out var rxCopy) < 0 || rxCopy != "1")
        {
            throw new InvalidOperationException($"{Device.NodeName}: the backend does not offer feature-rx-copy (receive by copy is the only mode netfront uses)");
        }

        Device.Check(Device.ReadOwn("mac", out var macText), "reading mac");
        if (!TryParseMac(macText, _mac))
        {
            throw new InvalidOperationException($"{Device.NodeName}: mac '{macText}' is not six hex octets separated by ':'");
        }

        MacText = macText;
        _txRingPage = _guest.Pages.Allocate();
        _rxRingPage = _guest.Pages.Allocate();
        _tx = new GuestFrontRing<netif_tx_request, netif_tx_response>(_guest.Memory, _txRingPage.Address, Ring.RING_SIZE_netif_tx);
        _rx = new GuestFrontRing<netif_rx_request, netif_rx_response>(_guest.Memory, _rxRingPage.Address, Ring.RING_SIZE_netif_rx);
        Device.Check(_grants.GrantAccess(backend, _txRingPage, readOnly: false, out _txRingRef), "granting the tx ring page");
        Device.Check(_grants.GrantAccess(backend, _rxRingPage, readOnly: false, out _rxRingRef), "granting the rx ring page");
        for (var i = 0; i < _txPages.Length; i++)
        {
            Device.Check(_grants.GrantAccess(backend, _txPages[i], readOnly: true, out _txGrefs[i]), "granting a transmit page");
            _txFree[i] = _txPages.Length - 1 - i;
            _txLength[i] = 0;
        }

        _txFreeCount = _txPages.Length;
        for (var i = 0; i < _rxPages.Length; i++)
        {
            Device.Check(_grants.GrantAccess(backend, _rxPages[i], readOnly: false, out _rxGrefs[i]), "granting a receive page");
        }

        Device.Check(_rt.Events.AllocUnbound(backend, OnEvent, out _port), $"EVTCHNOP_alloc_unbound for domain {backend}");
        _broken = null;
        _rxDoneHead = 0;
        _rxDoneCount = 0;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                // Fill the rx ring before the backend connects (as netfront does): nothing to notify yet.
                for (var i = 0; i < _rxPages.Length; i++)
                {
                    _rxPosted[i] = true;
                    _rx.Queue(new netif_rx_request { id = (ushort)i, gref = _rxGrefs[i] });
                }

                _rx.PushRequestsAndCheckNotify();
            }
        }

        var node = Device.NodeName;
        Device.Check(
            Device.Client.Transaction(t =>
            {
                long r;
                if ((r = t.Write($"{node}/tx-ring-ref", _txRingRef.ToString(CultureInfo.InvariantCulture))) < 0 ||
                    (r = t.Write($"{node}/rx-ring-ref", _rxRingRef.ToString(CultureInfo.InvariantCulture))) < 0 ||
                    (r = t.Write($"{node}/event-channel", _port.ToString(CultureInfo.InvariantCulture))) < 0 ||
                    (r = t.Write($"{node}/request-rx-copy", "1")) < 0 ||
                    (r = t.Write($"{node}/feature-rx-notify", "1")) < 0 ||
                    (r = t.Write($"{node}/feature-no-csum-offload", "1")) < 0)
                {
                    return r;
                }

                return 0;
            }),
            "publishing tx-ring-ref/rx-ring-ref/event-channel");
        Device.Check(Device.SwitchState(XenbusState.Initialised), "switching to Initialised");

        var state = Device.WaitForBackendState(s => s is XenbusState.Connected or XenbusState.Closing or XenbusState.Closed, "Connected", _options.HandshakeTimeout);
        if (state != XenbusState.Connected)
        {
            var reason = Device.ReadBackend("error", out var error) >= 0 ? error : "no error node";
            throw new InvalidOperationException($"{Device.NodeName}: the backend refused the connection and is {state}: {reason}");
        }

        Device.Check(Device.SwitchState(XenbusState.Connected), "switching to Connected");
        _connected = true;
    }

    private static bool TryParseMac(string text, Span<byte> mac)
    {
        if (text.Length != 17)
        {
            return false;
        }

        for (var i = 0; i < 6; i++)
        {
            if ((i > 0 && text[(i * 3) - 1] != ':') ||
                !byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out mac[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Waits for frames in flight, Closing, waits for the backend's Closed, Closed; closes the port and ends every grant (which must succeed).</summary>
    public void Close()
    {
        if (!_connected)
        {
            return;
        }

        _guest.WaitFor(_txIdle, Deadline());
        Device.Check(Device.SwitchState(XenbusState.Closing), "switching to Closing");
        Device.WaitForBackendState(s => s is XenbusState.Closing or XenbusState.Closed or XenbusState.Unknown, "Closing", _options.HandshakeTimeout);
        _connected = false;
        Device.Check(Device.SwitchState(XenbusState.Closed), "switching to Closed");
        Device.WaitForBackendState(s => s is XenbusState.Closed or XenbusState.Unknown, "Closed", _options.HandshakeTimeout);
        Device.Check(_rt.Events.Unbind(_port), $"closing port {_port}");
        var busy = 0;
        foreach (var gref in (ReadOnlySpan<uint>)[_txRingRef, _rxRingRef, .. _txGrefs, .. _rxGrefs])
        {
            if (_grants.EndAccess(gref) != 0)
            {
                busy++;
            }
        }

        if (busy != 0)
        {
            throw new InvalidOperationException($"{Device.NodeName}: {busy} grants are still in use by domain {Device.BackendId} after it closed (GTF_reading/GTF_writing set)");
        }

        _guest.Pages.Free(_txRingPage);
        _guest.Pages.Free(_rxRingPage);
        _tx = null;
        _rx = null;
    }

    /// <summary>Closes the connection (see <see cref="Close"/>).</summary>
    public void Dispose() => Close();

    // ---------------------------------------------------------------- transmit

    /// <summary>Sends one raw Ethernet frame (14..1514 bytes), waiting for a free transmit slot.</summary>
    public void Send(ReadOnlySpan<byte> frame)
    {
        CheckFrame(frame.Length);
        while (!TrySend(frame))
        {
            _guest.WaitFor(_txSlotFree);
        }
    }

    /// <summary>Sends one frame if a transmit slot is free; false (nothing sent) if none is.</summary>
    public bool TrySend(ReadOnlySpan<byte> frame)
    {
        CheckFrame(frame.Length);
        ThrowIfUnusable();
        int slot;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                if (_txFreeCount == 0)
                {
                    return false;
                }

                slot = _txFree[--_txFreeCount];
                _txLength[slot] = frame.Length;
            }
        }

        // The slot is ours until its response: fill its page, then publish.
        _guest.Memory.Write(_txPages[slot].Address, frame);
        bool notify;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                _tx!.Queue(new netif_tx_request { gref = _txGrefs[slot], offset = 0, flags = 0, id = (ushort)slot, size = (ushort)frame.Length });
                notify = _tx.PushRequestsAndCheckNotify();
            }

            if (notify)
            {
                _rt.Events.Send(_port);
            }
        }

        return true;
    }

    /// <summary>Waits until every frame sent has been answered by the backend.</summary>
    public void Flush()
    {
        ThrowIfUnusable();
        _guest.WaitFor(_txIdle);
    }

    private static void CheckFrame(int length)
    {
        if (length is < MinFrameBytes or > MaxFrameBytes)
        {
            throw new ArgumentException($"a frame of {length} bytes: an Ethernet frame is {MinFrameBytes} to {MaxFrameBytes} bytes (header and payload, no FCS)");
        }
    }

    private void ThrowIfUnusable()
    {
        if (_broken is { } why)
        {
            throw new InvalidOperationException($"{Device.NodeName}: the frontend stopped using its rings: {why}");
        }

        if (!_connected)
        {
            throw new InvalidOperationException($"{Device.NodeName}: not connected");
        }
    }

    // ---------------------------------------------------------------- receive

    /// <summary>Waits for the next frame, copies it into <paramref name="buffer"/> and returns its length.</summary>
    public int Receive(Span<byte> buffer)
    {
        int length;
        while (!TryReceive(buffer, out length))
        {
            _guest.WaitFor(_frameReady);
        }

        return length;
    }

    /// <summary>Waits at most <paramref name="timeout"/> for the next frame; false if none came.</summary>
    public bool TryReceive(Span<byte> buffer, TimeSpan timeout, out int length)
    {
        var deadline = _guest.Clock.SystemTimeNs() + ((ulong)timeout.Ticks * 100);
        while (!TryReceive(buffer, out length))
        {
            if (!_guest.WaitFor(_frameReady, deadline))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Takes the next received frame if there is one: copies it into <paramref name="buffer"/> and posts its page again.</summary>
    /// <exception cref="ArgumentException"><paramref name="buffer"/> is smaller than the frame (which stays queued).</exception>
    public bool TryReceive(Span<byte> buffer, out int length)
    {
        length = 0;
        while (true)
        {
            ThrowIfUnusable();
            netif_rx_response r;
            using (_guest.IrqsOff())
            {
                lock (_lock)
                {
                    if (_rxDoneCount == 0)
                    {
                        return false;
                    }

                    r = _rxDone[_rxDoneHead];
                    if (r.status > buffer.Length && r.offset + r.status <= PageSize)
                    {
                        throw new ArgumentException($"the next frame is {r.status} bytes and the buffer only {buffer.Length}: pass at least {MaxFrameBytes}", nameof(buffer));
                    }

                    _rxDoneHead = (_rxDoneHead + 1) % _rxDone.Length;
                    _rxDoneCount--;
                }
            }

            var good = r.status >= MinFrameBytes && r.offset + r.status <= PageSize && (r.flags & (Netif.NETRXF_more_data | Netif.NETRXF_extra_info)) == 0;
            if (good)
            {
                _guest.Memory.Read(_rxPages[r.id].Address + r.offset, buffer[..r.status]);
                length = r.status;
                _rxPackets++;
                _rxBytes += length;
            }
            else
            {
                _rxErrors++; // an error response, or a size/offset/flag we never asked for: drop it
            }

            Repost(r.id);
            if (good)
            {
                return true;
            }
        }
    }

    private void Repost(int id)
    {
        bool notify;
        using (_guest.IrqsOff())
        {
            lock (_lock)
            {
                if (_rx is null || _broken is not null)
                {
                    return;
                }

                _rxPosted[id] = true;
                _rx.Queue(new netif_rx_request { id = (ushort)id, gref = _rxGrefs[id] });
                notify = _rx.PushRequestsAndCheckNotify();
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
            if (port != _port || _tx is null || _rx is null || _broken is not null)
            {
                return;
            }

            // Bounded: each pass takes at most what is outstanding on either ring.
            for (var pass = 0; pass <= Ring.RING_SIZE_netif_tx + 1; pass++)
            {
                if (!DrainTx() || !DrainRx())
                {
                    return;
                }

                var more = _tx.FinalCheckForResponses();
                more |= _rx.FinalCheckForResponses();
                if (!more)
                {
                    return;
                }
            }
        }
    }

    private bool DrainTx()
    {
        int got;
        while ((got = _tx!.TryTakeResponse(out var r)) == 1)
        {
            if (r.status == Netif.NETIF_RSP_NULL)
            {
                continue; // the slot of an extra-info request (we send none)
            }

            if (r.id >= _txLength.Length || _txLength[r.id] == 0)
            {
                Fail($"a transmit response names id {r.id}, which is not in flight");
                return false;
            }

            if (r.status == Netif.NETIF_RSP_OKAY)
            {
                _txPackets++;
                _txBytes += _txLength[r.id];
            }
            else
            {
                _txErrors++;
            }

            _txLength[r.id] = 0;
            _txFree[_txFreeCount++] = r.id;
        }

        if (got < 0)
        {
            Fail("the backend's transmit response producer is ahead of the requests in flight");
            return false;
        }

        return true;
    }

    private bool DrainRx()
    {
        int got;
        while ((got = _rx!.TryTakeResponse(out var r)) == 1)
        {
            if (r.id >= _rxPosted.Length || !_rxPosted[r.id])
            {
                Fail($"a receive response names id {r.id}, which is not a posted buffer");
                return false;
            }

            _rxPosted[r.id] = false;
            _rxDone[(_rxDoneHead + _rxDoneCount) % _rxDone.Length] = r;
            _rxDoneCount++;
        }

        if (got < 0)
        {
            Fail("the backend's receive response producer is ahead of the buffers posted");
            return false;
        }

        return true;
    }

    private void Fail(string why) => _broken = why;
}
