using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// One connection of a network frontend, and its port on the switch: the transmit and receive
/// rings (mapped by grant, writable), one or two event channels, and one worker that serves both
/// directions.
/// <list type="bullet">
/// <item>Transmit (guest → switch): each packet's slots are copied out of the ring once (first
/// request, extra-info slots, NETTXF_more_data fragments), validated on that copy, its data
/// grant-copied into one preallocated frame buffer and switched; every slot is answered
/// (NETIF_RSP_NULL for extra-info slots). With a <c>rate</c>, a packet beyond the window's credit
/// waits (its slots stay taken) until the next window.</item>
/// <item>Receive (switch → guest): frames wait in the port's bounded queue; each is grant-copied
/// into the next buffer the frontend posted and answered in that request's slot.</item>
/// <item>A ring the frontend overruns, or a packet whose slots run past what it published, is a
/// fatal protocol error: nothing more is taken and the frontend's domain is crashed.</item>
/// </list>
/// </summary>
internal sealed class NetifConnection : SwitchPort, XenBus.IBackendConnection
{
    /// <summary>Packets (or receive frames) taken per pass before the worker yields.</summary>
    private const int Budget = 64;

    private readonly NetBack _owner;
    private readonly Hypervisor _hv;
    private readonly Domain _guest;
    private readonly HostGrantMapping _txMapping;
    private readonly HostGrantMapping _rxMapping;
    private readonly HostEventChannel _txChannel;
    private readonly HostEventChannel _rxChannel;
    private readonly BackRing<netif_tx_request, netif_tx_response> _txRing;
    private readonly BackRing<netif_rx_request, netif_rx_response> _rxRing;
    private readonly Channel<bool> _kick = System.Threading.Channels.Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CreditLimiter? _limiter;
    private readonly Timer? _creditTimer;

    // The packet being transmitted: its slots as copied out of the ring, once.
    private readonly netif_tx_request[] _slots;
    private readonly bool[] _isExtra;
    private readonly byte[] _frame = new byte[VirtualSwitch.MaxFrameBytes];
    private readonly FrameAction _fromGuest;
    private readonly FrameAction _toGuest;
    private int _slotCount;
    private bool _deferred; // a packet waits for credit
    private int _copyAt;
    private byte[] _rxSource = [];
    private netif_rx_request _heldRx; // a buffer taken while its frame vanished (the port detached under us)
    private bool _haveHeldRx;

    private Task _worker = Task.CompletedTask;
    private Task _txPump = Task.CompletedTask;
    private Task _rxPump = Task.CompletedTask;
    private int _stopping;

    private NetifConnection(NetBack owner, HostGrantMapping tx, HostGrantMapping rx, HostEventChannel txChannel, HostEventChannel rxChannel)
        : base(owner.Switch, $"vif{owner.Domain.Id}.{owner.DevId}", owner.QueueFrames)
    {
        _owner = owner;
        _hv = owner.Hypervisor;
        _guest = owner.Domain;
        _txMapping = tx;
        _rxMapping = rx;
        _txChannel = txChannel;
        _rxChannel = rxChannel;
        _txRing = new BackRing<netif_tx_request, netif_tx_response>(new GrantPageMemory(tx).Memory);
        _rxRing = new BackRing<netif_rx_request, netif_rx_response>(new GrantPageMemory(rx).Memory);
        _slots = new netif_tx_request[_txRing.Size];
        _isExtra = new bool[_txRing.Size];
        _fromGuest = window =>
        {
            window.CopyTo(_frame.AsSpan(_copyAt));
            _copyAt += window.Length;
        };
        _toGuest = window => _rxSource.AsSpan(0, window.Length).CopyTo(window);
        if (owner.CreditBytes is { } credit)
        {
            _limiter = new CreditLimiter(credit, owner.CreditWindow!.Value, Stopwatch.GetTimestamp());
            _creditTimer = new Timer(static s => ((NetifConnection)s!).Kick(), this, Timeout.Infinite, Timeout.Infinite);
        }
    }

    /// <summary>Maps both rings (writable grants) and binds the frontend's port(s).</summary>
    public static NetifConnection Open(NetBack owner, uint txRef, uint rxRef, uint txPort, uint rxPort)
    {
        var hv = owner.Hypervisor;
        HostGrantMapping? tx = null, rx = null;
        HostEventChannel? txChannel = null, rxChannel = null;
        try
        {
            tx = MapRing(owner, txRef, "tx");
            rx = MapRing(owner, rxRef, "rx");
            txChannel = Bind(owner, txPort);
            rxChannel = rxPort == txPort ? txChannel : Bind(owner, rxPort);
            return new NetifConnection(owner, tx, rx, txChannel, rxChannel);
        }
        catch
        {
            if (rxChannel != txChannel)
            {
                rxChannel?.Dispose();
            }

            txChannel?.Dispose();
            rx?.Dispose();
            tx?.Dispose();
            throw;
        }
    }

    private static HostGrantMapping MapRing(NetBack owner, uint gref, string which)
    {
        try
        {
            return owner.Hypervisor.HostGrants.Map(owner.Domain, gref, readOnly: false);
        }
        catch (GrantException e)
        {
            throw new InvalidOperationException($"cannot map the {which} ring: grant {gref} of domain {owner.Domain.Id} must be a writable grant to domain 0 ({e.Message}, {e.Status})", e);
        }
    }

    private static HostEventChannel Bind(NetBack owner, uint port)
    {
        try
        {
            return owner.Hypervisor.Host.BindInterdomain(owner.Domain, port);
        }
        catch (XenException e)
        {
            throw new InvalidOperationException($"cannot bind event channel {port} of domain {owner.Domain.Id}: {e.Message}", e);
        }
    }

    public void Start()
    {
        _txPump = Task.Run(() => PumpEventsAsync(_txChannel));
        _rxPump = _rxChannel == _txChannel ? Task.CompletedTask : Task.Run(() => PumpEventsAsync(_rxChannel));
        _worker = Task.Run(RunAsync);
    }

    /// <summary>Stops the worker, takes the port off the switch (queued frames are released), unmaps the rings and closes the ports. Idempotent.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0)
        {
            await _stopped.Task.ConfigureAwait(false);
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        Kick();
        await _worker.ConfigureAwait(false);
        await _txPump.ConfigureAwait(false);
        await _rxPump.ConfigureAwait(false);
        Switch.Detach(this);
        CloseQueue(); // not attached (a refused connect): still release anything queued
        if (_creditTimer is not null)
        {
            await _creditTimer.DisposeAsync().ConfigureAwait(false);
        }

        if (_rxChannel != _txChannel)
        {
            _rxChannel.Dispose();
        }

        _txChannel.Dispose();
        _rxMapping.Dispose();
        _txMapping.Dispose();
        _stop.Dispose();
        _stopped.SetResult();
    }

    private void Kick() => _kick.Writer.TryWrite(true);

    private protected override void OnFrameQueued() => Kick();

    private async Task PumpEventsAsync(HostEventChannel channel)
    {
        try
        {
            while (await channel.WaitAsync(_stop.Token).ConfigureAwait(false))
            {
                Kick();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
    }

    private async Task RunAsync()
    {
        try
        {
            await ServeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // a failure of one vif's worker must not fault the disconnect that awaits it: report it
        catch (Exception e)
#pragma warning restore CA1031
        {
            _owner.Log($"the worker stopped: {e}");
        }
    }

    private async Task ServeAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            var tx = ServiceTx();
            if (tx == Progress.Fatal)
            {
                return;
            }

            var rx = ServiceRx();
            if (rx == Progress.Fatal)
            {
                return;
            }

            if (tx == Progress.More || rx == Progress.More)
            {
                await Task.Yield(); // a budget's worth done: let other vifs' workers run
                continue;
            }

            // RING_FINAL_CHECK_FOR_REQUESTS on each ring the worker is waiting on: the frontend then
            // notifies the next request. Receive waits on the guest only while frames are queued.
            var more = !_deferred && _txRing.FinalCheckForRequests();
            if (Queue.TryPeek(out _, out _, out _))
            {
                more |= _rxRing.FinalCheckForRequests();
            }

            if (!more)
            {
                await _kick.Reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false);
                _kick.Reader.TryRead(out _);
            }
        }
    }

    private enum Progress
    {
        /// <summary>Nothing left that can be done now.</summary>
        Idle,

        /// <summary>The budget ran out with more to do.</summary>
        More,

        /// <summary>A fatal protocol error: the guest is being crashed.</summary>
        Fatal,
    }

    // ------------------------------------------------------------------ transmit

    private Progress ServiceTx()
    {
        var result = Progress.Idle;
        var answered = false;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!_deferred)
            {
                var taken = TakePacket();
                if (taken == RingStatus.Empty)
                {
                    break;
                }

                if (taken == RingStatus.ProtocolError)
                {
                    result = Progress.Fatal;
                    break;
                }
            }

            if (!TransmitPacket())
            {
                break; // waits for credit; the timer kicks the worker
            }

            answered = true;
            if (n == Budget - 1)
            {
                result = Progress.More;
            }
        }

        if (answered && _txRing.PushResponses())
        {
            Notify(_txChannel);
        }

        return result;
    }

    /// <summary>
    /// Copies one packet's slots out of the ring: the first request, its extra-info slots (while
    /// XEN_NETIF_EXTRA_FLAG_MORE), then fragments (while NETTXF_more_data). Empty when no packet
    /// is published; ProtocolError (and the guest crashed) on an overrun or a packet that runs past
    /// the published requests.
    /// </summary>
    private RingStatus TakePacket()
    {
        _slotCount = 0;
        var status = _txRing.TryTakeRequest(out var first);
        if (status != RingStatus.Ok)
        {
            if (status == RingStatus.ProtocolError)
            {
                Overrun("transmit");
            }

            return status;
        }

        Add(first, extra: false);
        if ((first.flags & Netif.NETTXF_extra_info) != 0)
        {
            while (true)
            {
                if (!TakeNext(out var slot))
                {
                    return RingStatus.ProtocolError;
                }

                Add(slot, extra: true);
                var info = Unsafe.As<netif_tx_request, netif_extra_info>(ref slot);
                if ((info.flags & Netif.XEN_NETIF_EXTRA_FLAG_MORE) == 0)
                {
                    break;
                }
            }
        }

        var last = first;
        while ((last.flags & Netif.NETTXF_more_data) != 0)
        {
            if (!TakeNext(out last))
            {
                return RingStatus.ProtocolError;
            }

            Add(last, extra: false);
        }

        return RingStatus.Ok;
    }

    private void Add(in netif_tx_request slot, bool extra)
    {
        _slots[_slotCount] = slot;
        _isExtra[_slotCount] = extra;
        _slotCount++;
    }

    private bool TakeNext(out netif_tx_request slot)
    {
        // At most a ring's worth can be outstanding: the ring refuses more (Empty), which for a
        // packet still flagged to continue means its slots run past what was published.
        slot = default;
        var status = _slotCount < _slots.Length ? _txRing.TryTakeRequest(out slot) : RingStatus.Empty;
        if (status == RingStatus.Ok)
        {
            return true;
        }

        slot = default;
        if (status == RingStatus.ProtocolError)
        {
            Overrun("transmit");
        }
        else
        {
            Fatal($"a transmit packet continues (NETTXF_more_data or extra info) past the {_slotCount} requests published (io/netif.h: a packet's slots are published together)");
        }

        return false;
    }

    /// <summary>Validates the packet's copy, sends it (or waits for credit) and answers every slot. False when it must wait for credit.</summary>
    private bool TransmitPacket()
    {
        var status = Validate(out var total, out var dataSlots);
        if (status == Netif.NETIF_RSP_OKAY && total > VirtualSwitch.MaxFrameBytes)
        {
            status = Netif.NETIF_RSP_DROPPED; // well-formed, but longer than the switch's MTU allows
            Interlocked.Increment(ref _owner.Counters.TxDropped);
        }
        else if (status == Netif.NETIF_RSP_ERROR)
        {
            Interlocked.Increment(ref _owner.Counters.TxErrors);
        }

        if (status == Netif.NETIF_RSP_OKAY)
        {
            if (_limiter is not null && !_limiter.TryConsume(total, Stopwatch.GetTimestamp(), out var retryAt))
            {
                if (!_deferred)
                {
                    Interlocked.Increment(ref _owner.Counters.TxRateLimited);
                }

                _deferred = true;
                var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), retryAt);
                _creditTimer!.Change(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
                return false;
            }

            _deferred = false;
            status = CopyAndSwitch(total, dataSlots);
        }

        for (var i = 0; i < _slotCount; i++)
        {
            var response = _isExtra[i]
                ? new netif_tx_response { id = 0, status = (short)Netif.NETIF_RSP_NULL }
                : new netif_tx_response { id = _slots[i].id, status = (short)status };
            _txRing.TryQueueResponse(response);
        }

        _slotCount = 0;
        return true;
    }

    /// <summary>
    /// io/netif.h on the copy: the first request's size is the whole packet (at least ETH_HLEN);
    /// fragments' sizes add up to no more than that (the first slot holds the rest); every slot's
    /// offset + its bytes stays in its page; at most XEN_NETIF_NR_SLOTS_MIN data slots; no extra
    /// info (no feature that uses it is advertised).
    /// </summary>
    private int Validate(out int total, out int dataSlots)
    {
        total = _slots[0].size;
        dataSlots = 0;
        var fragments = 0;
        var extra = false;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_isExtra[i])
            {
                extra = true;
                continue;
            }

            dataSlots++;
            if (dataSlots > 1)
            {
                fragments += _slots[i].size;
            }
        }

        if (extra || dataSlots > Netif.XEN_NETIF_NR_SLOTS_MIN || total < VirtualSwitch.MinFrameBytes || fragments > total)
        {
            return Netif.NETIF_RSP_ERROR;
        }

        var firstBytes = total - fragments;
        var data = 0;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_isExtra[i])
            {
                continue;
            }

            var bytes = data++ == 0 ? firstBytes : _slots[i].size;
            if (_slots[i].offset + bytes > MachineMemory.PageSize)
            {
                return Netif.NETIF_RSP_ERROR;
            }
        }

        return Netif.NETIF_RSP_OKAY;
    }

    private int CopyAndSwitch(int total, int dataSlots)
    {
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            return Netif.NETIF_RSP_ERROR; // destroyed meanwhile: no grants to copy
        }

        _copyAt = 0;
        var firstBytes = total;
        for (var i = 1; i < _slotCount; i++)
        {
            if (!_isExtra[i])
            {
                firstBytes -= _slots[i].size;
            }
        }

        var data = 0;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_isExtra[i])
            {
                continue;
            }

            var s = _slots[i];
            var bytes = data++ == 0 ? firstBytes : s.size;
            if (bytes == 0)
            {
                continue;
            }

            var rc = GrantOps.HostCopy(_hv.HostDomain, _guest, s.gref, s.offset, bytes, toGuest: false, _fromGuest);
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"transmit request {s.id}: grant {s.gref}: {rc}");
                Interlocked.Increment(ref _owner.Counters.TxErrors);
                return Netif.NETIF_RSP_ERROR;
            }
        }

        // Checksum state travels with the frame: a blank checksum stays blank and validated (as Linux passes CHECKSUM_PARTIAL on).
        var flags = _slots[0].flags;
        ushort rxFlags = 0;
        if ((flags & Netif.NETTXF_csum_blank) != 0)
        {
            rxFlags = Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated;
        }
        else if ((flags & Netif.NETTXF_data_validated) != 0)
        {
            rxFlags = Netif.NETRXF_data_validated;
        }

        Switch.Forward(this, _frame.AsSpan(0, total), rxFlags);
        Interlocked.Increment(ref _owner.Counters.TxPackets);
        Interlocked.Add(ref _owner.Counters.TxBytes, total);
        _guest.Meter.CountNetSent(total);
        return Netif.NETIF_RSP_OKAY;
    }

    // ------------------------------------------------------------------ receive

    private Progress ServiceRx()
    {
        var result = Progress.Idle;
        var answered = false;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!Queue.TryPeek(out _, out _, out _))
            {
                break;
            }

            netif_rx_request request;
            if (_haveHeldRx)
            {
                request = _heldRx;
                _haveHeldRx = false;
            }
            else
            {
                var status = _rxRing.TryTakeRequest(out request);
                if (status == RingStatus.Empty)
                {
                    break; // no buffer posted: frames wait in the queue (and drop when it is full)
                }

                if (status == RingStatus.ProtocolError)
                {
                    Overrun("receive");
                    result = Progress.Fatal;
                    break;
                }
            }

            if (!Queue.TryPeek(out var frame, out var length, out var flags))
            {
                // The switch discarded the queue (it is being disposed): keep the buffer for later.
                _heldRx = request;
                _haveHeldRx = true;
                break;
            }

            _rxRing.TryQueueResponse(Deliver(request, frame, length, flags));
            Queue.Release();
            answered = true;
            if (n == Budget - 1)
            {
                result = Progress.More;
            }
        }

        if (answered && _rxRing.PushResponses())
        {
            Notify(_rxChannel);
        }

        return result;
    }

    private netif_rx_response Deliver(in netif_rx_request request, byte[] frame, int length, ushort flags)
    {
        var rc = _hv.FindDomain(_guest.Id) != _guest
            ? GrantStatus.BadDomain
            : CopyToGuest(request.gref, frame, length);
        if (rc != GrantStatus.Okay)
        {
            _owner.Log($"receive request {request.id}: grant {request.gref}: {rc}");
            Interlocked.Increment(ref _owner.Counters.RxErrors);
            return new netif_rx_response { id = request.id, status = (short)Netif.NETIF_RSP_ERROR };
        }

        Interlocked.Increment(ref _owner.Counters.RxPackets);
        Interlocked.Add(ref _owner.Counters.RxBytes, length);
        _guest.Meter.CountNetReceived(length);
        return new netif_rx_response { id = request.id, offset = 0, flags = flags, status = (short)length };
    }

    private GrantStatus CopyToGuest(uint gref, byte[] frame, int length)
    {
        _rxSource = frame;
        try
        {
            return GrantOps.HostCopy(_hv.HostDomain, _guest, gref, 0, length, toGuest: true, _toGuest);
        }
        finally
        {
            _rxSource = [];
        }
    }

    // ------------------------------------------------------------------ errors and events

    private void Overrun(string ring) =>
        Fatal($"the frontend's {ring} request producer is more than a ring ({_txRing.Size} entries) ahead of the responses (io/ring.h: RING_REQUEST_PROD_OVERFLOW)");

    private void Fatal(string what) => _owner.OnProtocolError(what);

    private static void Notify(HostEventChannel channel)
    {
        try
        {
            channel.Notify();
        }
        catch (Exception e) when (e is XenException or ObjectDisposedException)
        {
            // The guest's end is gone (its domain is being destroyed): nobody to tell.
        }
    }
}
