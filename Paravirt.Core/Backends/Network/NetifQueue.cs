using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// One queue of a vif: a transmit and a receive ring (mapped by grant, writable), one or two
/// event channels, its share of the vif's switch port (one of the port's frame queues) and one
/// worker that serves both directions, as each of Linux netback's queues has its own NAPI
/// instance and receive thread.
/// <list type="bullet">
/// <item>Transmit (guest → switch), as netback's <c>xenvif_tx_build_gops</c>: each packet's slots
/// are copied out of the ring once (first request, extra-info slots, then NETTXF_more_data
/// fragments), validated on that copy, its data grant-copied into one preallocated 64 KiB buffer,
/// its checksum and GSO request checked against its headers, and switched through the vif's one
/// port; every slot is answered (NETIF_RSP_NULL for extra-info slots). Multicast filter requests
/// (XEN_NETIF_EXTRA_TYPE_MCAST_ADD/DEL) change the vif's filter and go nowhere. With a
/// <c>rate</c>, a packet beyond the window's credit waits (its slots stay taken).</item>
/// <item>Receive (switch → guest), as netback's <c>xenvif_rx_skb</c>: frames wait in this queue's
/// share of the port; each is grant-copied into as many posted buffers as it needs (one page each,
/// NETRXF_more_data on all but the last), with its extra-info slots (GSO, hash) after the first.
/// A GSO frame the frontend cannot take whole is cut into TCP segments first; a blank checksum the
/// frontend cannot finish is computed first.</item>
/// <item>A ring the frontend overruns, a packet whose slots run past what it published, and the
/// malformed packets netback treats as fatal (<c>xenvif_fatal_tx_err</c>) are fatal protocol
/// errors: nothing more is taken and the frontend's domain is crashed.</item>
/// </list>
/// </summary>
internal sealed class NetifQueue
{
    /// <summary>Packets (or receive frames) taken per pass before the worker yields.</summary>
    private const int Budget = 64;

    /// <summary>XEN_NETBK_LEGACY_SLOTS_MAX: fragments (after the first slot) a packet may have; more are answered NETIF_RSP_ERROR.</summary>
    private const int LegacySlotsMax = Netif.XEN_NETIF_NR_SLOTS_MIN;

    /// <summary>netback's fatal_skb_slots: this many fragments after the first slot or more is a malicious frontend.</summary>
    private const int FatalSkbSlots = 20;

    /// <summary>The smallest GSO segment size forwarded (Linux's tcp_min_snd_mss): smaller ones would make a 64 KiB frame into over a thousand segments.</summary>
    private const int MinGsoSize = 48;

    private const int PageSize = MachineMemory.PageSize;

    /// <summary>netback's rx_drain_timeout_msecs: a frame waiting longer for receive buffers is dropped.</summary>
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(10);

    /// <summary>netback's drain timeout for a frontend without feature-rx-notify, which also makes it look at the ring that often.</summary>
    private static readonly TimeSpan PollingDrainTimeout = TimeSpan.FromMilliseconds(30);

    private readonly NetifConnection _vif;
    private readonly NetBack _owner;
    private readonly NetBackCounters _counters;
    private readonly Hypervisor _hv;
    private readonly Domain _guest;
    private readonly HostGrantMapping _txMapping;
    private readonly HostGrantMapping _rxMapping;
    private readonly HostEventChannel _txChannel;
    private readonly HostEventChannel _rxChannel;
    private readonly BackRing<netif_tx_request, netif_tx_response> _txRing;
    private readonly BackRing<netif_rx_request, netif_rx_response> _rxRing;
    private readonly FrameQueue _frames;
    private readonly Channel<bool> _kick = System.Threading.Channels.Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly CancellationTokenSource _stop = new();
    private readonly Timer? _creditTimer;
    private readonly Timer _drainTimer;
    private readonly long _drainTicks;

    // The packet being transmitted: its slots as copied out of the ring, once, and its extra-info slots by type.
    private readonly netif_tx_request[] _slots;
    private readonly bool[] _isExtra;
    private readonly netif_extra_info[] _extras = new netif_extra_info[Netif.XEN_NETIF_EXTRA_TYPE_MAX - 1];
    private readonly bool[] _hasExtra = new bool[Netif.XEN_NETIF_EXTRA_TYPE_MAX - 1];
    private readonly byte[] _frame = new byte[VirtualSwitch.MaxLargeFrameBytes];
    private int _slotCount;
    private int _firstBytes; // the first slot's own bytes (its size less the fragments')
    private bool _deferred; // a packet waits for credit

    // Receive: the next segment of the GSO frame at the head of the queue, and where segments are made.
    private byte[] _segment = [];
    private int _nextSegment;
    private int _rxNeeded; // requests the head frame waits for (0: none waiting)

    private Task _worker = Task.CompletedTask;
    private Task _txPump = Task.CompletedTask;
    private Task _rxPump = Task.CompletedTask;

    public NetifQueue(NetifConnection vif, int id, HostGrantMapping tx, HostGrantMapping rx, HostEventChannel txChannel, HostEventChannel rxChannel)
    {
        _vif = vif;
        _owner = vif.Owner;
        _counters = _owner.Counters;
        _hv = _owner.Hypervisor;
        _guest = _owner.Domain;
        Id = id;
        _txMapping = tx;
        _rxMapping = rx;
        _txChannel = txChannel;
        _rxChannel = rxChannel;
        _txRing = new BackRing<netif_tx_request, netif_tx_response>(new Block.GrantPageMemory(tx).Memory);
        _rxRing = new BackRing<netif_rx_request, netif_rx_response>(new Block.GrantPageMemory(rx).Memory);
        _frames = vif.QueueAt(id);
        _slots = new netif_tx_request[_txRing.Size];
        _isExtra = new bool[_txRing.Size];
        _drainTicks = (long)((vif.Features.RxNotify ? DrainTimeout : PollingDrainTimeout).TotalSeconds * Stopwatch.Frequency);
        _drainTimer = new Timer(static s => ((NetifQueue)s!).Kick(), this, Timeout.Infinite, Timeout.Infinite);
        if (vif.HasCreditLimit)
        {
            _creditTimer = new Timer(static s => ((NetifQueue)s!).Kick(), this, Timeout.Infinite, Timeout.Infinite);
        }
    }

    public int Id { get; }

    public void Start()
    {
        _txPump = Task.Run(() => PumpEventsAsync(_txChannel));
        _rxPump = _rxChannel == _txChannel ? Task.CompletedTask : Task.Run(() => PumpEventsAsync(_rxChannel));
        _worker = Task.Run(RunAsync);
    }

    /// <summary>Stops the worker and the event pumps (the rings stay mapped until <see cref="ReleaseAsync"/>).</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        Kick();
        await _worker.ConfigureAwait(false);
        await _txPump.ConfigureAwait(false);
        await _rxPump.ConfigureAwait(false);
    }

    /// <summary>After <see cref="StopAsync"/>: unmaps the rings, closes the ports, stops the timers.</summary>
    public async Task ReleaseAsync()
    {
        await _drainTimer.DisposeAsync().ConfigureAwait(false);
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
    }

    public void Kick() => _kick.Writer.TryWrite(true);

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
#pragma warning disable CA1031 // a failure of one queue's worker must not fault the disconnect that awaits it: report it
        catch (Exception e)
#pragma warning restore CA1031
        {
            _owner.Log($"queue {Id}: the worker stopped: {e}");
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
                await Task.Yield(); // a budget's worth done: let other queues' workers run
                continue;
            }

            // RING_FINAL_CHECK_FOR_REQUESTS on each ring the worker is waiting on: the frontend then
            // notifies the next request. Receive waits on the guest only while a frame waits, and
            // for as many requests as that frame needs.
            var more = !_deferred && _txRing.FinalCheckForRequests();
            if (_rxNeeded > 0)
            {
                more |= _rxRing.FinalCheckForRequests(_rxNeeded);
            }

            if (!more)
            {
                ArmDrainTimer();
                await _kick.Reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false);
                _kick.Reader.TryRead(out _);
            }
        }
    }

    /// <summary>While frames wait for buffers, wakes the worker when the oldest would expire (and, without feature-rx-notify, to look at the ring).</summary>
    private void ArmDrainTimer()
    {
        if (_frames.OldestQueuedAt is not { } queuedAt)
        {
            return;
        }

        var due = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), queuedAt + _drainTicks);
        _drainTimer.Change(due > TimeSpan.Zero ? due : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
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

    private enum TxStep
    {
        /// <summary>No packet is published.</summary>
        Empty,

        /// <summary>Every slot of the packet was answered (refused, or a multicast filter change).</summary>
        Answered,

        /// <summary>Well-formed: copy, check and switch it.</summary>
        Ready,

        /// <summary>A fatal protocol error: the guest is being crashed.</summary>
        Fatal,
    }

    private Progress ServiceTx()
    {
        var result = Progress.Idle;
        var answered = false;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!_deferred)
            {
                var step = TakePacket();
                if (step == TxStep.Empty)
                {
                    break;
                }

                if (step == TxStep.Fatal)
                {
                    result = Progress.Fatal;
                    break;
                }

                if (step == TxStep.Answered)
                {
                    answered = true;
                    result = n == Budget - 1 ? Progress.More : result;
                    continue;
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
    /// Copies one packet's slots out of the ring and judges them as netback does: the first
    /// request; its extra-info slots (while XEN_NETIF_EXTRA_FLAG_MORE; a type outside 1..4 is
    /// fatal); a multicast filter change is answered at once (its fragments, if any, are not its);
    /// then fragments while NETTXF_more_data (<c>xenvif_count_requests</c>: more than 18 answered
    /// NETIF_RSP_ERROR, 20 or more fatal, one larger than what is left of the packet answered
    /// NETIF_RSP_ERROR, one crossing its page fatal); the first slot's own bytes at least ETH_HLEN
    /// (else NETIF_RSP_ERROR) and within its page (else fatal); a GSO slot with a size and a TCP type
    /// (else fatal). Empty when no packet is published.
    /// </summary>
    private TxStep TakePacket()
    {
        _slotCount = 0;
        Array.Clear(_hasExtra);
        var status = _txRing.TryTakeRequest(out var first);
        if (status != RingStatus.Ok)
        {
            if (status == RingStatus.ProtocolError)
            {
                Overrun("transmit");
                return TxStep.Fatal;
            }

            return TxStep.Empty;
        }

        Add(first, extra: false);
        if ((first.flags & Netif.NETTXF_extra_info) != 0)
        {
            while (true)
            {
                if (!TakeNext(out var slot))
                {
                    return TxStep.Fatal;
                }

                Add(slot, extra: true);
                var info = Unsafe.As<netif_tx_request, netif_extra_info>(ref slot);
                if (info.type is Netif.XEN_NETIF_EXTRA_TYPE_NONE or >= Netif.XEN_NETIF_EXTRA_TYPE_MAX)
                {
                    Fatal($"transmit request {first.id} has an extra-info slot of type {info.type} (io/netif.h: XEN_NETIF_EXTRA_TYPE_GSO..HASH, 1 to {Netif.XEN_NETIF_EXTRA_TYPE_MAX - 1})");
                    return TxStep.Fatal;
                }

                _extras[info.type - 1] = info;
                _hasExtra[info.type - 1] = true;
                if ((info.flags & Netif.XEN_NETIF_EXTRA_FLAG_MORE) == 0)
                {
                    break;
                }
            }
        }

        if (_hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1] || _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL - 1])
        {
            // A dummy request carrying a filter change: answered with its extra slots, nothing more taken.
            Interlocked.Increment(ref _counters.TxMulticastRequests);
            var ok = _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1]
                ? _vif.AddMulticast(Mac(_extras[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1]))
                : _vif.RemoveMulticast(Mac(_extras[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL - 1]));
            Answer(ok ? Netif.NETIF_RSP_OKAY : Netif.NETIF_RSP_ERROR);
            return TxStep.Answered;
        }

        var remaining = (int)first.size;
        var fragments = 0;
        var refuse = false;
        var last = first;
        while ((last.flags & Netif.NETTXF_more_data) != 0)
        {
            if (fragments >= FatalSkbSlots)
            {
                Fatal($"transmit request {first.id} goes on for more than {FatalSkbSlots} fragments after its first slot (netback's fatal_skb_slots: a malicious frontend)");
                return TxStep.Fatal;
            }

            if (!TakeNext(out last))
            {
                return TxStep.Fatal;
            }

            Add(last, extra: false);
            refuse |= fragments >= LegacySlotsMax || last.size > remaining; // too many slots, or more bytes than the packet has left
            remaining -= last.size;
            fragments++;
            if (last.offset + last.size > PageSize)
            {
                Fatal($"transmit request {last.id}: offset {last.offset} + {last.size} bytes crosses the end of its page");
                return TxStep.Fatal;
            }
        }

        if (refuse || remaining < VirtualSwitch.MinFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxErrors);
            Answer(Netif.NETIF_RSP_ERROR);
            return TxStep.Answered;
        }

        if (first.offset + remaining > PageSize)
        {
            Fatal($"transmit request {first.id}: offset {first.offset} + {remaining} bytes crosses the end of its page");
            return TxStep.Fatal;
        }

        if (_hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1])
        {
            var gso = _extras[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1].u.gso;
            if (gso.size == 0)
            {
                Fatal($"transmit request {first.id}: GSO size 0 (netback: GSO size must not be zero)");
                return TxStep.Fatal;
            }

            if (gso.type is not (Netif.XEN_NETIF_GSO_TYPE_TCPV4 or Netif.XEN_NETIF_GSO_TYPE_TCPV6))
            {
                Fatal($"transmit request {first.id}: GSO type {gso.type} (netback takes XEN_NETIF_GSO_TYPE_TCPV4 and _TCPV6)");
                return TxStep.Fatal;
            }
        }

        _firstBytes = remaining;
        return TxStep.Ready;
    }

    private static MacAddress Mac(in netif_extra_info info)
    {
        var copy = info;
        return MacAddress.Read(MemoryMarshal.AsBytes(new Span<netif_extra_info>(ref copy))[2..8]);
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

    /// <summary>Answers every slot of the packet: <paramref name="status"/> for data slots, NETIF_RSP_NULL for extra-info slots.</summary>
    private void Answer(int status)
    {
        for (var i = 0; i < _slotCount; i++)
        {
            var response = _isExtra[i]
                ? new netif_tx_response { id = 0, status = (short)Netif.NETIF_RSP_NULL }
                : new netif_tx_response { id = _slots[i].id, status = (short)status };
            _txRing.TryQueueResponse(response);
        }

        _slotCount = 0;
    }

    /// <summary>Sends a well-formed packet (or waits for credit) and answers every slot. False when it must wait for credit.</summary>
    private bool TransmitPacket()
    {
        var total = (int)_slots[0].size;
        var gso = _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1];
        if (!gso && total > _vif.MaxFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxDropped); // well-formed, but longer than the vif's MTU allows
            Answer(Netif.NETIF_RSP_DROPPED);
            return true;
        }

        if (!_vif.TryConsumeCredit(total, out var retryAt))
        {
            if (!_deferred)
            {
                Interlocked.Increment(ref _counters.TxRateLimited);
            }

            _deferred = true;
            var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), retryAt);
            _creditTimer!.Change(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
            return false;
        }

        _deferred = false;
        Answer(CopyAndSwitch(total, gso));
        return true;
    }

    private int CopyAndSwitch(int total, bool gso)
    {
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            Interlocked.Increment(ref _counters.TxErrors);
            return Netif.NETIF_RSP_ERROR; // destroyed meanwhile: no grants to copy
        }

        var at = 0;
        var data = 0;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_isExtra[i])
            {
                continue;
            }

            var s = _slots[i];
            var bytes = data++ == 0 ? _firstBytes : s.size;
            if (bytes == 0)
            {
                continue;
            }

            var rc = GrantOps.HostCopyOut(_hv.HostDomain, _guest, s.gref, s.offset, _frame.AsSpan(at, bytes));
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"queue {Id}: transmit request {s.id}: grant {s.gref}: {rc}");
                Interlocked.Increment(ref _counters.TxErrors);
                return Netif.NETIF_RSP_ERROR;
            }

            at += bytes;
        }

        var frame = _frame.AsSpan(0, total);
        if (!TryDescribe(frame, gso, out var meta))
        {
            // netback answers before its skb_checksum_setup, then drops what that refuses.
            Interlocked.Increment(ref _counters.TxOffloadDropped);
            return Netif.NETIF_RSP_OKAY;
        }

        if (gso && meta.SegmentBytes > _vif.MaxFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxDropped); // its segments would be longer than the MTU allows
            return Netif.NETIF_RSP_DROPPED;
        }

        _vif.Switch.Forward(_vif, frame, meta);
        if (gso)
        {
            Interlocked.Increment(ref _counters.TxGsoPackets);
        }

        Interlocked.Increment(ref _counters.TxPackets);
        Interlocked.Add(ref _counters.TxBytes, total);
        _guest.Meter.CountNetSent(total);
        return Netif.NETIF_RSP_OKAY;
    }

    /// <summary>
    /// The frame's checksum and GSO state (netback's <c>xenvif_tx_submit</c> and <c>checksum_setup</c>):
    /// NETTXF_csum_blank makes it partial, NETTXF_data_validated validated; a GSO packet is partial
    /// whatever its flags (its pseudo-header checksum written here if the frontend did not set
    /// NETTXF_csum_blank). A partial frame must be TCP or UDP over unfragmented IPv4/IPv6; a GSO frame
    /// TCP over the IP version its type names, with its whole TCP header and an MSS of at least 48.
    /// </summary>
    private bool TryDescribe(Span<byte> frame, bool gso, out FrameMeta meta)
    {
        var flags = _slots[0].flags;
        var checksum = (flags & Netif.NETTXF_csum_blank) != 0 ? FrameChecksum.Partial
            : (flags & Netif.NETTXF_data_validated) != 0 ? FrameChecksum.Validated
            : FrameChecksum.None;
        meta = new FrameMeta { Checksum = checksum };
        var fixup = gso && checksum != FrameChecksum.Partial;
        if (!gso && checksum != FrameChecksum.Partial)
        {
            return true;
        }

        if (!PacketHeaders.TryChecksumSetup(frame, out var ip))
        {
            return false;
        }

        meta = meta with
        {
            Checksum = FrameChecksum.Partial,
            IsIPv6 = ip.IsIPv6,
            L4Protocol = ip.Protocol,
            L4Offset = (ushort)ip.L4Offset,
            L4Length = (ushort)ip.L4Length,
        };
        if (gso)
        {
            var g = _extras[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1].u.gso;
            var tcpHeader = ip.Protocol == PacketHeaders.IpProtoTcp ? (frame[ip.L4Offset + 12] >> 4) * 4 : 0;
            if (ip.Protocol != PacketHeaders.IpProtoTcp || ip.IsIPv6 != (g.type == Netif.XEN_NETIF_GSO_TYPE_TCPV6) ||
                tcpHeader < PacketHeaders.TcpHeader || tcpHeader > ip.L4Length || g.size < MinGsoSize)
            {
                return false;
            }

            meta = meta with { GsoType = g.type, GsoSize = g.size, HeaderBytes = (ushort)(ip.L4Offset + tcpHeader) };
        }

        if (fixup)
        {
            Interlocked.Increment(ref _counters.TxChecksumFixups);
            PacketHeaders.SeedPartial(frame, ip.IsIPv6, ip.Protocol, ip.L4Offset, ip.L4Length);
        }

        return true;
    }

    // ------------------------------------------------------------------ receive

    private Progress ServiceRx()
    {
        var result = Progress.Idle;
        var answered = false;
        _rxNeeded = 0;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!_frames.TryPeek(out var buffer, out var length, out var meta))
            {
                break;
            }

            // What this frontend gets: the frame whole, or (a GSO frame it cannot take) its next segment.
            var segmenting = meta.IsGso && !_vif.TakesGsoFrames(meta.GsoType);
            var bytes = segmenting ? TcpSegmenter.Length(meta, _nextSegment) : length;
            var dataSlots = (bytes + PageSize - 1) / PageSize;
            var extras = (meta.IsGso && !segmenting ? 1 : 0) + (meta.HasHash ? 1 : 0);
            if (dataSlots > 1 && !_vif.Features.Sg)
            {
                Interlocked.Increment(ref _counters.RxDropped); // it cannot take a frame in more than one buffer
                Done(meta, segmenting, wholeFrame: true);
                continue;
            }

            if (_rxRing.CountRequests(out var available) == RingStatus.ProtocolError)
            {
                Overrun("receive");
                return Progress.Fatal;
            }

            if (available < dataSlots + extras)
            {
                if (Expired())
                {
                    Interlocked.Increment(ref _counters.RxExpired);
                    Done(meta, segmenting, wholeFrame: true);
                    continue;
                }

                _rxNeeded = dataSlots + extras; // wait for buffers
                break;
            }

            ReadOnlySpan<byte> data;
            FrameMeta delivered;
            if (segmenting)
            {
                if (_segment.Length < bytes)
                {
                    _segment = new byte[Math.Max(bytes, VirtualSwitch.MaxFrameBytes)]; // kept for the connection's life
                }

                var finish = !_vif.TakesPartialChecksum(meta.IsIPv6);
                TcpSegmenter.Write(buffer.AsSpan(0, length), meta, _nextSegment, _segment, finish, out delivered);
                if (finish)
                {
                    CountChecksumCompleted();
                }

                data = _segment.AsSpan(0, bytes);
            }
            else
            {
                delivered = meta;
                if (meta.Checksum == FrameChecksum.Partial && !_vif.TakesPartialChecksum(meta.IsIPv6))
                {
                    // The reader owns the queued buffer until it releases it: finish the checksum in place.
                    PacketHeaders.Complete(buffer.AsSpan(0, length), meta.L4Protocol, meta.L4Offset, meta.L4Length);
                    delivered = meta with { Checksum = FrameChecksum.None };
                    CountChecksumCompleted();
                }

                data = buffer.AsSpan(0, length);
            }

            if (!Deliver(data, delivered, gsoWhole: meta.IsGso && !segmenting))
            {
                return Progress.Fatal;
            }

            Done(meta, segmenting, wholeFrame: false);
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

    private void CountChecksumCompleted()
    {
        Interlocked.Increment(ref _counters.RxChecksumsCompleted);
        Interlocked.Increment(ref _vif.ChecksumsCompleted);
    }

    /// <summary>The head frame (or its current segment) is done with: moves to its next segment, or releases it.</summary>
    private void Done(in FrameMeta meta, bool segmenting, bool wholeFrame)
    {
        if (segmenting && !wholeFrame)
        {
            if (_nextSegment == 0)
            {
                Interlocked.Increment(ref _counters.RxSegmented);
                Interlocked.Increment(ref _vif.Segmented);
            }

            if (++_nextSegment < TcpSegmenter.Count(meta))
            {
                return;
            }
        }

        _nextSegment = 0;
        _frames.Release();
    }

    private bool Expired() =>
        _frames.OldestQueuedAt is { } queuedAt && Stopwatch.GetTimestamp() - queuedAt >= _drainTicks;

    /// <summary>
    /// Fills as many posted buffers as <paramref name="data"/> needs (they are published: the caller
    /// counted them), as netback's <c>xenvif_rx_skb</c>: the first data slot, then the extra-info
    /// slots (GSO, then hash), then the other data slots; each response in its request's slot with
    /// that slot's byte count. False (the guest crashed) if the frontend took back published requests.
    /// </summary>
    private bool Deliver(ReadOnlySpan<byte> data, in FrameMeta meta, bool gsoWhole)
    {
        var alive = _hv.FindDomain(_guest.Id) == _guest;
        var extras = (gsoWhole ? 1 : 0) + (meta.HasHash ? 1 : 0);
        var csum = meta.Checksum switch
        {
            FrameChecksum.Partial => Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated,
            FrameChecksum.Validated => Netif.NETRXF_data_validated,
            _ => 0,
        };
        var at = 0;
        var ok = true;
        var slot = 0;
        while (at < data.Length || extras > 0)
        {
            if (_rxRing.TryTakeRequest(out var request) != RingStatus.Ok)
            {
                Fatal("the frontend took back receive requests it had published (its request producer went backwards)");
                return false;
            }

            if (slot > 0 && extras > 0)
            {
                _rxRing.TryQueueResponse(ExtraSlot(meta, gsoFirst: gsoWhole, ref extras));
                slot++;
                continue;
            }

            var chunk = Math.Min(PageSize, data.Length - at);
            var rc = alive ? GrantOps.HostCopyIn(_hv.HostDomain, _guest, request.gref, 0, data.Slice(at, chunk)) : GrantStatus.BadDomain;
            at += chunk;
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"queue {Id}: receive request {request.id}: grant {request.gref}: {rc}");
                Interlocked.Increment(ref _counters.RxErrors);
                ok = false;
            }

            var flags = at < data.Length ? Netif.NETRXF_more_data : 0;
            if (slot == 0)
            {
                flags |= csum | (extras > 0 ? Netif.NETRXF_extra_info : 0);
            }

            _rxRing.TryQueueResponse(new netif_rx_response
            {
                id = request.id,
                offset = 0,
                flags = (ushort)flags,
                status = rc == GrantStatus.Okay ? (short)chunk : (short)Netif.NETIF_RSP_ERROR,
            });
            slot++;
        }

        if (ok)
        {
            if (gsoWhole)
            {
                Interlocked.Increment(ref _counters.RxGsoPackets);
            }

            Interlocked.Increment(ref _counters.RxPackets);
            Interlocked.Add(ref _counters.RxBytes, data.Length);
            _guest.Meter.CountNetReceived(data.Length);
        }

        return true;
    }

    /// <summary>The next extra-info slot of a receive packet (GSO first, then hash), as a response; counts it off.</summary>
    private static netif_rx_response ExtraSlot(in FrameMeta meta, bool gsoFirst, ref int extras)
    {
        Span<byte> info = stackalloc byte[8]; // struct netif_extra_info overlays the response
        info.Clear();
        extras--;
        var isGso = gsoFirst && extras == (meta.HasHash ? 1 : 0);
        if (isGso)
        {
            info[0] = Netif.XEN_NETIF_EXTRA_TYPE_GSO;
            BinaryPrimitives.WriteUInt16LittleEndian(info[2..], meta.GsoSize);
            info[4] = meta.GsoType;
        }
        else
        {
            info[0] = Netif.XEN_NETIF_EXTRA_TYPE_HASH;
            info[2] = meta.HashType;
            info[3] = Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
            BinaryPrimitives.WriteUInt32LittleEndian(info[4..], meta.Hash);
        }

        if (extras > 0)
        {
            info[1] = Netif.XEN_NETIF_EXTRA_FLAG_MORE;
        }

        return MemoryMarshal.Read<netif_rx_response>(info);
    }

    // ------------------------------------------------------------------ errors and events

    private void Overrun(string ring) =>
        Fatal($"the frontend's {ring} request producer is more than a ring ({_txRing.Size} entries) ahead of the responses (io/ring.h: RING_REQUEST_PROD_OVERFLOW)");

    private void Fatal(string what) => _owner.OnProtocolError(Id == 0 && _vif.QueueCount == 1 ? what : $"queue {Id}: {what}");

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
