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
internal sealed partial class NetifQueue
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
