using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Hypercalls;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Events;

/// <summary>
/// The FIFO event ABI (Xen 4.17, xen/common/event_fifo.c). The guest gives each vCPU a control
/// block (<c>evtchn_fifo_control_block</c>: a READY bit per priority and the head port of each
/// queue) and the domain an event array of 32-bit event words, one page at a time (PENDING,
/// MASKED, LINKED, BUSY and a 17-bit LINK to the next port in the queue). Raising an event sets
/// PENDING and, if the port is neither masked nor already queued, links it onto the tail of its
/// vCPU's queue for its priority, sets that priority's READY bit and the upcall.
/// </summary>
/// <remarks>
/// Every method runs under the owning domain's event lock (which serialises what Xen guards with
/// its per-queue locks). The guest may rewrite its words and control block at any moment: the
/// hypervisor never follows a LINK the guest wrote (the tails it links from are its own), writes
/// words only with bounded compare-exchange loops (<see cref="GuestWord"/>), and so a guest
/// that corrupts its queues loses its own events but cannot hold or crash the host.
/// </remarks>
internal sealed class FifoEvents : IEventDelivery
{
    /// <summary>Xen's EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: 32-bit event words in a page.</summary>
    public const int EventWordsPerPage = MachineMemory.PageSize / sizeof(uint);

    /// <summary>Xen's EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES.</summary>
    public const int MaxEventArrayPages = EventChannel.EVTCHN_FIFO_NR_CHANNELS / EventWordsPerPage;

    /// <summary>sizeof(evtchn_fifo_control_block).</summary>
    public static readonly int ControlBlockSize = Marshal.SizeOf<evtchn_fifo_control_block>();

    private static readonly int ReadyOffset = (int)Marshal.OffsetOf<evtchn_fifo_control_block>(nameof(evtchn_fifo_control_block.ready));
    private static readonly int HeadOffset = (int)Marshal.OffsetOf<evtchn_fifo_control_block>(nameof(evtchn_fifo_control_block.head));

    private readonly Domain _domain;
    private readonly EventChannelTable _table;
    private readonly Lock _lock;
    private readonly PinnedPage?[] _eventArray = new PinnedPage?[MaxEventArrayPages];
    private readonly VcpuQueues[] _vcpus;

    // Per port (Xen keeps these in struct evtchn): the priority of future events, the queue the
    // port was last linked on (fifo_lastq), and a pending event raised before its event word existed.
    private readonly byte[] _priority;
    private readonly int[] _lastQueue;
    private readonly bool[] _savedPending;
    private int _numEvtchns;

    public FifoEvents(Domain domain, EventChannelTable table, int ports)
    {
        _domain = domain;
        _table = table;
        _lock = table.Lock;
        _vcpus = new VcpuQueues[domain.Vcpus.Length];
        for (var i = 0; i < _vcpus.Length; i++)
        {
            _vcpus[i] = new VcpuQueues();
        }

        _priority = new byte[ports];
        _priority.AsSpan().Fill(EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT);
        _lastQueue = new int[ports];
        _savedPending = new bool[ports];
    }

    /// <summary>Ports that have an event word (Xen's evtchn_fifo->num_evtchns).</summary>
    public int EventWords => Volatile.Read(ref _numEvtchns);

    /// <summary>
    /// Xen's map_control_block: a vCPU's control block may be registered once (-EINVAL), in a
    /// frame of the domain's (-EINVAL otherwise), which stays pinned until reset or teardown.
    /// </summary>
    public long MapControlBlock(int vcpuId, ulong gfn, uint offset)
    {
        lock (_lock)
        {
            var q = _vcpus[vcpuId];
            if (q.ControlBlock is not null)
            {
                return Result.Err(Errno.EINVAL);
            }

            var page = Pin(gfn);
            if (page is null)
            {
                return Result.Err(Errno.EINVAL);
            }

            q.Offset = (int)offset;
            Volatile.Write(ref q.ControlBlock, page);
            return Result.Ok;
        }
    }

    /// <summary>
    /// Xen's setup_ports, on the switch from 2-level: every valid port below <paramref name="previousPorts"/>
    /// keeps its pending state (raised again once its event word exists) and gets the default priority.
    /// Mask bits are not carried over: the guest initialises its event array pages itself.
    /// </summary>
    public void SetupPorts(int previousPorts, Func<uint, bool> wasPending)
    {
        lock (_lock)
        {
            var end = Math.Min(Math.Min(previousPorts, _table.ValidPorts), _priority.Length);
            for (var port = 1u; port < (uint)end; port++)
            {
                if (wasPending(port))
                {
                    _savedPending[port] = true;
                }

                _priority[port] = EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT;
            }
        }
    }

    /// <summary>
    /// Xen's add_page_to_event_array: one more page of event words (-ENOSPC past
    /// <see cref="MaxEventArrayPages"/>, -EINVAL for a frame that is not the domain's), then the
    /// events raised while those words were missing are raised again.
    /// </summary>
    public long AddPage(ulong gfn)
    {
        lock (_lock)
        {
            var first = _numEvtchns;
            var slot = first / EventWordsPerPage;
            if (slot >= MaxEventArrayPages)
            {
                return Result.Err(Errno.ENOSPC);
            }

            var page = Pin(gfn);
            if (page is null)
            {
                return Result.Err(Errno.EINVAL);
            }

            _eventArray[slot] = page;
            Volatile.Write(ref _numEvtchns, first + EventWordsPerPage);

            var end = Math.Min(Math.Min(first + EventWordsPerPage, _table.ValidPorts), _priority.Length);
            for (var port = (uint)first; port < (uint)end; port++)
            {
                if (_savedPending[port])
                {
                    SetPending(_table.At(port).NotifyVcpu, port);
                }
            }

            return Result.Ok;
        }
    }

    /// <summary>Xen's evtchn_fifo_destroy: lets go of every control block and event array page.</summary>
    public void Destroy()
    {
        lock (_lock)
        {
            Volatile.Write(ref _numEvtchns, 0);
            for (var i = 0; i < _eventArray.Length; i++)
            {
                _eventArray[i]?.Dispose();
                _eventArray[i] = null;
            }

            foreach (var q in _vcpus)
            {
                q.ControlBlock?.Dispose();
                q.ControlBlock = null;
                Array.Clear(q.Tail);
            }
        }
    }

    /// <summary>Xen's evtchn_fifo_init: a newly bound port starts at the default priority.</summary>
    public void InitPort(uint port)
    {
        lock (_lock)
        {
            if (port < (uint)_priority.Length)
            {
                _priority[port] = EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT;
            }
        }
    }

    /// <summary>
    /// Xen's evtchn_fifo_set_priority: priorities above EVTCHN_FIFO_PRIORITY_MIN are -EINVAL. Only
    /// future events use the new queue; one already queued stays where it is.
    /// </summary>
    public long SetPriority(uint port, uint priority)
    {
        if (priority > EventChannel.EVTCHN_FIFO_PRIORITY_MIN)
        {
            return Result.Err(Errno.EINVAL);
        }

        lock (_lock)
        {
            if (port < (uint)_priority.Length)
            {
                _priority[port] = (byte)priority;
            }

            return Result.Ok;
        }
    }

    /// <summary>The priority a port's next event is queued at.</summary>
    public int PriorityOf(uint port)
    {
        lock (_lock)
        {
            return port < (uint)_priority.Length ? _priority[port] : EventChannel.EVTCHN_FIFO_PRIORITY_DEFAULT;
        }
    }

    /// <summary>Xen's evtchn_fifo_set_pending.</summary>
    public void SetPending(int vcpuId, uint port)
    {
        lock (_lock)
        {
            if ((uint)vcpuId >= (uint)_vcpus.Length || port >= (uint)_priority.Length)
            {
                return;
            }

            if (port >= (uint)_numEvtchns)
            {
                // No event word yet: remember the event for when the page arrives.
                _savedPending[port] = true;
                return;
            }

            var v = _vcpus[vcpuId];
            var priority = _priority[port];
            var last = _lastQueue[port];
            var oldVcpu = _vcpus[Math.Min(last >> 8, _vcpus.Length - 1)];
            var oldPriority = last & 0xFF;

            var cb = v.ControlBlock;
            if (cb is null)
            {
                return; // the guest may not unmask before it registers the block: Xen drops the event
            }

            ref var word = ref Word(port);
            if (!GuestWord.TryTestAndSet(ref word, EventChannel.EVTCHN_FIFO_PENDING, out var wasPending))
            {
                return; // the guest kept the word changing: its event is lost, nobody else's
            }

            var linked = true;
            if (!GuestWord.Test(ref word, EventChannel.EVTCHN_FIFO_MASKED)
                && GuestWord.TryTestAndSet(ref word, EventChannel.EVTCHN_FIFO_LINKED, out var wasLinked) && !wasLinked)
            {
                // This port was the tail of its old queue: that queue is empty now, and linking
                // onto its stale tail would corrupt the new queue.
                if (oldVcpu.Tail[oldPriority] == port)
                {
                    oldVcpu.Tail[oldPriority] = 0;
                }

                _lastQueue[port] = (vcpuId << 8) | priority;

                // Link the tail to this port if the tail is still queued; otherwise the queue is
                // empty and this port becomes its head.
                linked = false;
                var tail = v.Tail[priority];
                if (tail != 0)
                {
                    linked = SetLink(ref Word(tail), port);
                }

                if (!linked)
                {
                    Volatile.Write(ref cb.At<int>(v.Offset + HeadOffset + (priority * sizeof(uint))), (int)port);
                }

                v.Tail[priority] = port;
            }

            if (!linked
                && GuestWord.TryTestAndSet(ref cb.At<int>(v.Offset + ReadyOffset), priority, out var wasReady) && !wasReady)
            {
                _domain.Vcpus[vcpuId].MarkEventsPending();
            }

            if (!wasPending)
            {
                _domain.Meter.CountEventReceived();
                _domain.WakePollers();
            }
        }
    }

    /// <summary>Xen's evtchn_fifo_clear_pending: only PENDING; the guest unlinks and skips events that are not pending.</summary>
    public void ClearPending(uint port)
    {
        lock (_lock)
        {
            if (port < (uint)_savedPending.Length)
            {
                _savedPending[port] = false;
            }

            if (port < (uint)_numEvtchns)
            {
                GuestWord.TryClear(ref Word(port), EventChannel.EVTCHN_FIFO_PENDING);
            }
        }
    }

    /// <summary>Xen's evtchn_fifo_unmask: clear MASKED and, if the port is pending, queue it now.</summary>
    public void Unmask(int vcpuId, uint port)
    {
        lock (_lock)
        {
            if (port >= (uint)_numEvtchns)
            {
                return;
            }

            ref var word = ref Word(port);
            GuestWord.TryClear(ref word, EventChannel.EVTCHN_FIFO_MASKED);
            if (GuestWord.Test(ref word, EventChannel.EVTCHN_FIFO_PENDING))
            {
                SetPending(vcpuId, port);
            }
        }
    }

    public bool IsPending(uint port)
    {
        lock (_lock)
        {
            return port < (uint)_numEvtchns && GuestWord.Test(ref Word(port), EventChannel.EVTCHN_FIFO_PENDING);
        }
    }

    /// <summary>A port with no event word counts as masked (evtchn_fifo_is_masked).</summary>
    public bool IsMasked(uint port)
    {
        lock (_lock)
        {
            return port >= (uint)_numEvtchns || GuestWord.Test(ref Word(port), EventChannel.EVTCHN_FIFO_MASKED);
        }
    }

    /// <summary>Xen's evtchn_fifo_is_busy: a closed port still LINKED is not handed out again until the guest unlinks it.</summary>
    public bool IsBusy(uint port)
    {
        lock (_lock)
        {
            return port < (uint)_numEvtchns && GuestWord.Test(ref Word(port), EventChannel.EVTCHN_FIFO_LINKED);
        }
    }

    /// <summary>
    /// Xen's evtchn_fifo_set_link: set the tail word's LINK iff it is still LINKED. One attempt;
    /// then BUSY holds off the guest's unmask and four more; after that the guest is not playing
    /// by the rules and the event is given up (reported as linked, as Xen does).
    /// </summary>
    private static bool SetLink(ref int word, uint link)
    {
        var w = Volatile.Read(ref word);
        var r = TrySetLink(ref word, ref w, link);
        if (r >= 0)
        {
            return r == 1;
        }

        GuestWord.TrySet(ref word, EventChannel.EVTCHN_FIFO_BUSY);
        w = Volatile.Read(ref word);
        for (var attempt = 0; attempt < 4; attempt++)
        {
            r = TrySetLink(ref word, ref w, link);
            if (r >= 0)
            {
                if (r == 0)
                {
                    GuestWord.TryClear(ref word, EventChannel.EVTCHN_FIFO_BUSY);
                }

                return r == 1;
            }
        }

        GuestWord.TryClear(ref word, EventChannel.EVTCHN_FIFO_BUSY);
        return true;
    }

    /// <summary>Xen's try_set_link: 0 if the word is no longer LINKED, 1 if the LINK was set, -1 if the word changed under us.</summary>
    private static int TrySetLink(ref int word, ref int w, uint link)
    {
        if ((w & (1 << EventChannel.EVTCHN_FIFO_LINKED)) == 0)
        {
            return 0;
        }

        var old = w;
        var updated = (old & ~((1 << EventChannel.EVTCHN_FIFO_BUSY) | EventChannel.EVTCHN_FIFO_LINK_MASK)) | (int)link;
        w = Interlocked.CompareExchange(ref word, updated, old);
        return w == old ? 1 : -1;
    }

    /// <summary>The event word of a port below <see cref="_numEvtchns"/>.</summary>
    private ref int Word(uint port) =>
        ref _eventArray[port / EventWordsPerPage]!.At<int>((int)(port % EventWordsPerPage) * sizeof(uint));

    /// <summary>Xen's map_guest_page: the frame behind a guest frame number, referenced while mapped.</summary>
    private PinnedPage? Pin(ulong gfn) =>
        _domain.TryResolveGuestFrame(gfn, out var mfn) ? PinnedPage.TryPin(_domain.Hypervisor.Frames, mfn, _domain.Id) : null;

    private sealed class VcpuQueues
    {
        public PinnedPage? ControlBlock;
        public int Offset;

        /// <summary>Per priority: the last port linked (Xen's evtchn_fifo_queue.tail; 0 when empty).</summary>
        public readonly uint[] Tail = new uint[EventChannel.EVTCHN_FIFO_MAX_QUEUES];
    }
}
