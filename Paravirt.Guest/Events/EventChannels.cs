using System.Numerics;
using Paravirt.Core.Abi;

namespace Paravirt.Guest;

/// <summary>
/// The guest's event channels: binding helpers that pair each EVTCHNOP_bind_* / alloc_unbound
/// with a per-port handler, mask/unmask/pending on the ABI in use, and the dispatch loop the
/// upcall runs. Two ABIs, one interface:
/// <list type="bullet">
/// <item>2-level: <c>shared_info.evtchn_pending</c> / <c>evtchn_mask</c> bitmaps and
/// <c>vcpu_info.evtchn_pending_sel</c> (xen/xen.h).</item>
/// <item>FIFO: a control block per vCPU and event words with PENDING/MASKED/LINKED/BUSY bits and
/// per-priority queues (xen/event_channel.h, docs/misc/... event_fifo).</item>
/// </list>
/// Handlers run in interrupt context with events masked; the port's pending state is cleared
/// before its handler runs (edge semantics), so an event that arrives during the handler runs
/// it again.
/// </summary>
public sealed class EventChannels
{
    private readonly XenGuest _guest;
    private readonly IEventPorts _ports;
    private readonly Lock _lock = new();
    private readonly Action<uint> _dispatch;
    private Action<uint>?[] _handlers = new Action<uint>?[EventChannel.EVTCHN_2L_NR_CHANNELS];

    internal EventChannels(XenGuest guest, EventAbi abi)
    {
        _guest = guest;
        Abi = abi;
        _dispatch = Dispatch; // one delegate for every upcall, not a new one each time
        _ports = abi == EventAbi.TwoLevel ? new TwoLevelPorts(guest) : new FifoPorts(guest);
    }

    /// <summary>The ABI in use.</summary>
    public EventAbi Abi { get; }

    /// <summary>Events dispatched to a handler so far (for diagnostics).</summary>
    public long Dispatched { get; private set; }

    /// <summary>Pending events found on ports with no handler (cleared and dropped).</summary>
    public long Unhandled { get; private set; }

    internal void InitVcpu(VcpuContext v) => _ports.InitVcpu(v);

    private Hypercalls Hc => _guest.Hypercalls;

    // ---------------------------------------------------------------- binding

    /// <summary>Sets (or with null clears) the handler of <paramref name="port"/>; does not change its mask.</summary>
    public void SetHandler(uint port, Action<uint>? handler)
    {
        _ports.EnsurePort(port);
        lock (_lock)
        {
            if (port >= (uint)_handlers.Length)
            {
                Array.Resize(ref _handlers, (int)Math.Max(port + 1, (uint)_handlers.Length * 2));
            }

            _handlers[port] = handler;
        }
    }

    /// <summary>Sets the handler and unmasks: the port is live.</summary>
    public long Attach(uint port, Action<uint> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        SetHandler(port, handler);
        return Unmask(port);
    }

    private long Bind(long rc, uint port, Action<uint> handler)
    {
        if (rc < 0)
        {
            return rc;
        }

        var unmask = Attach(port, handler);
        return unmask < 0 ? unmask : rc;
    }

    /// <summary>EVTCHNOP_bind_virq on <paramref name="vcpu"/> with a handler; the port is unmasked.</summary>
    public long BindVirq(uint virq, int vcpu, Action<uint> handler, out uint port) =>
        Bind(Hc.EvtchnBindVirq(virq, (uint)vcpu, out port), port, handler);

    /// <summary>EVTCHNOP_bind_ipi to <paramref name="vcpu"/> with a handler; the port is unmasked.</summary>
    public long BindIpi(int vcpu, Action<uint> handler, out uint port) =>
        Bind(Hc.EvtchnBindIpi((uint)vcpu, out port), port, handler);

    /// <summary>EVTCHNOP_bind_interdomain to <paramref name="remotePort"/> of <paramref name="remoteDomain"/> with a handler; the port is unmasked.</summary>
    public long BindInterdomain(ushort remoteDomain, uint remotePort, Action<uint> handler, out uint port) =>
        Bind(Hc.EvtchnBindInterdomain(remoteDomain, remotePort, out port), port, handler);

    /// <summary>EVTCHNOP_alloc_unbound for <paramref name="remoteDomain"/> (what a frontend offers its backend) with a handler; the port is unmasked.</summary>
    public long AllocUnbound(ushort remoteDomain, Action<uint> handler, out uint port) =>
        Bind(Hc.EvtchnAllocUnbound(remoteDomain, out port), port, handler);

    /// <summary>Masks the port, drops its handler and EVTCHNOP_close.</summary>
    public long Unbind(uint port)
    {
        Mask(port);
        SetHandler(port, null);
        ClearPending(port);
        return Hc.EvtchnClose(port);
    }

    /// <summary>EVTCHNOP_send (notify_remote_via_evtchn).</summary>
    public long Send(uint port) => Hc.EvtchnSend(port);

    /// <summary>EVTCHNOP_set_priority (FIFO only; -ENOSYS from Xen on 2-level).</summary>
    public long SetPriority(uint port, uint priority) => Hc.EvtchnSetPriority(port, priority);

    // ---------------------------------------------------------------- mask / pending

    /// <summary>Masks the port (2-level: its bit in evtchn_mask; FIFO: MASKED).</summary>
    public void Mask(uint port) => _ports.Mask(port);

    /// <summary>
    /// Unmasks the port. When it is pending (or the hypervisor holds the word, FIFO BUSY), the
    /// guest does not clear the mask itself but asks EVTCHNOP_unmask, which clears it and re-raises
    /// the event so it is not lost. Returns 0 or the hypercall's result.
    /// </summary>
    public long Unmask(uint port) => _ports.Unmask(port);

    /// <summary>True when the port's event is pending.</summary>
    public bool IsPending(uint port) => _ports.IsPending(port);

    /// <summary>True when the port is masked.</summary>
    public bool IsMasked(uint port) => _ports.IsMasked(port);

    /// <summary>Clears the port's pending state (acknowledge without dispatch).</summary>
    public void ClearPending(uint port) => _ports.ClearPending(port);

    // ---------------------------------------------------------------- dispatch

    internal void HandleUpcall(VcpuContext v) => _ports.Scan(v, _dispatch);

    private void Dispatch(uint port)
    {
        Action<uint>? handler;
        lock (_lock)
        {
            handler = port < (uint)_handlers.Length ? _handlers[port] : null;
        }

        if (handler is null)
        {
            Unhandled++;
            return;
        }

        Dispatched++;
        handler(port);
    }
}

/// <summary>One event ABI's guest side.</summary>
internal interface IEventPorts
{
    void InitVcpu(VcpuContext v);

    void EnsurePort(uint port);

    void Mask(uint port);

    long Unmask(uint port);

    bool IsPending(uint port);

    bool IsMasked(uint port);

    void ClearPending(uint port);

    /// <summary>Finds pending, unmasked ports for <paramref name="v"/>, clears their pending state and calls <paramref name="dispatch"/> for each.</summary>
    void Scan(VcpuContext v, Action<uint> dispatch);
}

/// <summary>The 2-level ABI on shared_info and vcpu_info.</summary>
internal sealed class TwoLevelPorts : IEventPorts
{
    private const int Words = EventChannel.EVTCHN_2L_NR_CHANNELS / 64;
    private readonly XenGuest _guest;
    private readonly ulong _pending;
    private readonly ulong _mask;

    public TwoLevelPorts(XenGuest guest)
    {
        _guest = guest;
        var si = guest.SharedInfoAddress;
        if (si == 0)
        {
            throw new InvalidOperationException("the 2-level event ABI needs shared_info mapped (a translated guest)");
        }

        _pending = si + Layout.EvtchnPending;
        _mask = si + Layout.EvtchnMask;
        // Start with every port masked (as Linux's xen_init_IRQ): binding unmasks.
        for (var w = 0UL; w < Words; w++)
        {
            guest.Memory.Or64(_mask + (w * 8), ulong.MaxValue);
        }
    }

    public void InitVcpu(VcpuContext v)
    {
    }

    public void EnsurePort(uint port)
    {
        if (port >= EventChannel.EVTCHN_2L_NR_CHANNELS)
        {
            throw new ArgumentOutOfRangeException(nameof(port), port, "the 2-level ABI has 4096 ports");
        }
    }

    private static (ulong Word, ulong Bit) Where(uint port) => ((ulong)(port / 64) * 8, 1UL << (int)(port % 64));

    public void Mask(uint port)
    {
        var (w, bit) = Where(port);
        _guest.Memory.Or64(_mask + w, bit);
    }

    public long Unmask(uint port)
    {
        var (w, bit) = Where(port);
        var mem = _guest.Memory;
        if ((mem.ReadVolatile(_pending + w, 8) & bit) != 0)
        {
            return _guest.Hypercalls.EvtchnUnmask(port); // Xen clears the mask and re-raises
        }

        mem.And64(_mask + w, ~bit);
        // An event that arrived while masked set pending without an upcall: have Xen re-raise it.
        return (mem.ReadVolatile(_pending + w, 8) & bit) != 0 ? _guest.Hypercalls.EvtchnUnmask(port) : 0;
    }

    public bool IsPending(uint port)
    {
        var (w, bit) = Where(port);
        return (_guest.Memory.ReadVolatile(_pending + w, 8) & bit) != 0;
    }

    public bool IsMasked(uint port)
    {
        var (w, bit) = Where(port);
        return (_guest.Memory.ReadVolatile(_mask + w, 8) & bit) != 0;
    }

    public void ClearPending(uint port)
    {
        var (w, bit) = Where(port);
        _guest.Memory.And64(_pending + w, ~bit);
    }

    public void Scan(VcpuContext v, Action<uint> dispatch)
    {
        var mem = _guest.Memory;
        for (var round = 0; round < 64; round++)
        {
            mem.WriteVolatile(v.VcpuInfoAddress + Layout.UpcallPending, 1, 0);
            var sel = mem.And64(v.VcpuInfoAddress + Layout.PendingSel, 0);
            while (sel != 0)
            {
                var word = BitOperations.TrailingZeroCount(sel);
                sel &= sel - 1;
                var at = _pending + ((ulong)word * 8);
                var ready = mem.ReadVolatile(at, 8) & ~mem.ReadVolatile(_mask + ((ulong)word * 8), 8);
                while (ready != 0)
                {
                    var bit = BitOperations.TrailingZeroCount(ready);
                    ready &= ready - 1;
                    var old = mem.And64(at, ~(1UL << bit));
                    if ((old & (1UL << bit)) != 0)
                    {
                        dispatch((uint)((word * 64) + bit));
                    }
                }
            }

            if (mem.ReadVolatile(v.VcpuInfoAddress + Layout.UpcallPending, 1) == 0)
            {
                return;
            }
        }
    }
}

/// <summary>The FIFO ABI: control block pages per vCPU, event array pages, queue heads per priority.</summary>
internal sealed class FifoPorts : IEventPorts
{
    private const int WordsPerPage = PageAllocator.PageSize / 4;
    private const uint Pending = 1u << EventChannel.EVTCHN_FIFO_PENDING;
    private const uint Masked = 1u << EventChannel.EVTCHN_FIFO_MASKED;
    private const uint Linked = 1u << EventChannel.EVTCHN_FIFO_LINKED;
    private const uint Busy = 1u << EventChannel.EVTCHN_FIFO_BUSY;
    private const uint LinkMask = EventChannel.EVTCHN_FIFO_LINK_MASK;
    private const int Attempts = 10_000;
    private static readonly ulong HeadOffset = Layout.Off<evtchn_fifo_control_block>(nameof(evtchn_fifo_control_block.head));

    private readonly XenGuest _guest;
    private readonly List<ulong> _arrayPages = [];
    private readonly Dictionary<int, (ulong ControlBlock, uint[] Heads)> _vcpus = [];
    private readonly Lock _lock = new();

    public FifoPorts(XenGuest guest) => _guest = guest;

    public void InitVcpu(VcpuContext v)
    {
        var page = _guest.Pages.Allocate();
        XenGuest.Check(_guest.Hypercalls.EvtchnInitControl(page.Frame, 0, (uint)v.Id, out _), $"EVTCHNOP_init_control(vCPU {v.Id})");
        lock (_lock)
        {
            _vcpus[v.Id] = (page.Address, new uint[EventChannel.EVTCHN_FIFO_MAX_QUEUES]);
        }

        if (_arrayPages.Count == 0)
        {
            Expand();
        }
    }

    /// <summary>EVTCHNOP_expand_array with a new page whose words are all MASKED (so a new port starts masked).</summary>
    private void Expand()
    {
        var page = _guest.Pages.Allocate();
        Span<byte> chunk = stackalloc byte[256];
        for (var i = 0; i < chunk.Length; i += 4)
        {
            BitConverter.TryWriteBytes(chunk[i..], Masked);
        }

        for (var off = 0; off < PageAllocator.PageSize; off += chunk.Length)
        {
            _guest.Memory.Write(page.Address + (ulong)off, chunk);
        }

        XenGuest.Check(_guest.Hypercalls.EvtchnExpandArray(page.Frame), "EVTCHNOP_expand_array");
        lock (_lock)
        {
            _arrayPages.Add(page.Address);
        }
    }

    public void EnsurePort(uint port)
    {
        if (port >= EventChannel.EVTCHN_FIFO_NR_CHANNELS)
        {
            throw new ArgumentOutOfRangeException(nameof(port), port, "beyond the FIFO ABI's ports");
        }

        while (port >= (uint)(_arrayPages.Count * WordsPerPage))
        {
            Expand();
        }
    }

    private ulong? Word(uint port)
    {
        lock (_lock)
        {
            var page = (int)(port / WordsPerPage);
            return page < _arrayPages.Count ? _arrayPages[page] + ((port % WordsPerPage) * 4) : null;
        }
    }

    private uint Read(ulong at) => (uint)_guest.Memory.ReadVolatile(at, 4);

    private uint Update(ulong at, Func<uint, uint> change)
    {
        var mem = _guest.Memory;
        var w = Read(at);
        for (var i = 0; i < Attempts; i++)
        {
            var seen = mem.CompareExchange32(at, change(w), w);
            if (seen == w)
            {
                return w;
            }

            w = seen;
        }

        throw new InvalidOperationException($"FIFO event word at 0x{at:x} kept changing under compare-exchange");
    }

    public void Mask(uint port)
    {
        EnsurePort(port);
        Update(Word(port)!.Value, w => w | Masked);
    }

    public long Unmask(uint port)
    {
        EnsurePort(port);
        var at = Word(port)!.Value;
        var mem = _guest.Memory;
        var w = Read(at);
        for (var i = 0; i < Attempts; i++)
        {
            if ((w & Masked) == 0)
            {
                return 0;
            }

            if ((w & Pending) != 0)
            {
                break; // Xen must clear MASKED and link the event
            }

            // Clear MASKED only if Xen does not hold the word (BUSY) and nothing changed.
            var expected = w & ~Busy;
            var seen = mem.CompareExchange32(at, expected & ~Masked, expected);
            if (seen == expected)
            {
                return 0;
            }

            w = seen;
        }

        return _guest.Hypercalls.EvtchnUnmask(port);
    }

    public bool IsPending(uint port) => Word(port) is { } at && (Read(at) & Pending) != 0;

    public bool IsMasked(uint port) => Word(port) is not { } at || (Read(at) & Masked) != 0;

    public void ClearPending(uint port)
    {
        if (Word(port) is { } at)
        {
            Update(at, w => w & ~Pending);
        }
    }

    public void Scan(VcpuContext v, Action<uint> dispatch)
    {
        (ulong ControlBlock, uint[] Heads) cb;
        lock (_lock)
        {
            if (!_vcpus.TryGetValue(v.Id, out cb))
            {
                return;
            }
        }

        var mem = _guest.Memory;
        const uint Queues = (1u << EventChannel.EVTCHN_FIFO_MAX_QUEUES) - 1;
        mem.WriteVolatile(v.VcpuInfoAddress + Layout.UpcallPending, 1, 0);
        var ready = Exchange(cb.ControlBlock, 0) & Queues;
        for (var walked = 0; ready != 0 && walked < Attempts; walked++)
        {
            var priority = BitOperations.TrailingZeroCount(ready);
            ConsumeOne(cb.ControlBlock, cb.Heads, priority, ref ready, dispatch);
            ready |= Exchange(cb.ControlBlock, 0) & Queues;
        }
    }

    /// <summary>
    /// Takes the head of queue <paramref name="priority"/> (event_fifo.h: the guest walks from HEAD,
    /// clearing LINKED and LINK together; a LINK of 0 ends the queue and its READY bit).
    /// </summary>
    private void ConsumeOne(ulong controlBlock, uint[] heads, int priority, ref uint ready, Action<uint> dispatch)
    {
        var port = heads[priority];
        if (port == 0)
        {
            port = (uint)_guest.Memory.ReadVolatile(controlBlock + HeadOffset + ((ulong)priority * 4), 4);
        }

        if (port == 0 || Word(port) is not { } at)
        {
            ready &= ~(1u << priority);
            heads[priority] = 0;
            return;
        }

        var old = Update(at, w => w & ~(Linked | LinkMask));
        var next = old & LinkMask;
        if (next == 0)
        {
            ready &= ~(1u << priority);
        }

        heads[priority] = next;
        var w = Read(at);
        if ((w & Pending) != 0 && (w & Masked) == 0)
        {
            var before = Update(at, x => x & ~Pending);
            if ((before & Pending) != 0)
            {
                dispatch(port);
            }
        }
    }

    private uint Exchange(ulong at, uint value)
    {
        var mem = _guest.Memory;
        var w = Read(at);
        for (var i = 0; i < Attempts; i++)
        {
            var seen = mem.CompareExchange32(at, value, w);
            if (seen == w)
            {
                return w;
            }

            w = seen;
        }

        return 0;
    }
}
