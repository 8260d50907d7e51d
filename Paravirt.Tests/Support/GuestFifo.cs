using System.Runtime.InteropServices;
using Paravirt.Core.Abi;

namespace Paravirt.Tests.Support;

/// <summary>
/// The guest side of the FIFO event ABI as Linux's drivers/xen/events/events_fifo.c drives it, for
/// tests: a control block page per vCPU and event array pages at fixed guest-physical addresses
/// (named to Xen by GFN for a translated guest, by MFN from the P→M list for classic PV), new array pages initialised
/// with every port MASKED, unmask that clears MASKED itself unless the port is pending, and
/// consumption that takes READY, walks each queue from its head clearing LINKED with a
/// compare-exchange, and acknowledges (clears PENDING of) the ports it hands back. Every loop is
/// bounded, so a test whose guest corrupts its own queues still ends.
/// </summary>
public sealed class GuestFifo
{
    public const int WordsPerPage = 4096 / sizeof(uint);
    private const int Attempts = 1000;
    private static readonly ulong HeadOffset = (ulong)Marshal.OffsetOf<evtchn_fifo_control_block>(nameof(evtchn_fifo_control_block.head));

    private readonly GuestContext _g;
    private readonly ulong _base;
    private readonly ulong _args;
    private readonly bool _classicPv;
    private readonly Dictionary<int, uint[]> _heads = [];

    /// <param name="g">The guest.</param>
    /// <param name="pagesBase">Page-aligned guest-physical address of the pages the helper may use: control blocks of vCPUs 0..3, then the event array.</param>
    /// <param name="classicPv">The guest is not translated: frames are named by MFN (start_info.mfn_list).</param>
    public GuestFifo(GuestContext g, ulong pagesBase, bool classicPv = false)
    {
        _g = g;
        _base = pagesBase;
        _classicPv = classicPv;
        _args = g.Scratch + 0xC00;
    }

    public const int ControlBlockPages = 4;

    /// <summary>Event array pages added so far.</summary>
    public int ArrayPages { get; private set; }

    /// <summary>Ports that have an event word.</summary>
    public uint Ports => (uint)(ArrayPages * WordsPerPage);

    public ulong ControlBlockAddress(int vcpu, uint offset = 0) => _base + ((ulong)vcpu * 4096) + offset;

    public ulong ArrayPageAddress(int index) => _base + ((ulong)(ControlBlockPages + index) * 4096);

    /// <summary>The frame number Xen expects for the page at <paramref name="address"/>.</summary>
    public ulong FrameOf(ulong address) =>
        _classicPv ? _g.Cpu.Memory.Read<ulong>(_g.ReadStartInfo().mfn_list + (address / 4096 * 8)) : address / 4096;

    public ulong WordAddress(uint port) => ArrayPageAddress((int)(port / WordsPerPage)) + ((port % WordsPerPage) * 4);

    /// <summary>EVTCHNOP_init_control for <paramref name="vcpu"/> with its (cleared) control block page.</summary>
    public long InitControl(int vcpu, out byte linkBits) => InitControl(vcpu, 0, out linkBits);

    public long InitControl(int vcpu, uint offset, out byte linkBits)
    {
        _g.Cpu.Memory.Write(ControlBlockAddress(vcpu), new byte[4096]);
        return InitControlRaw((uint)vcpu, FrameOf(ControlBlockAddress(vcpu)), offset, out linkBits);
    }

    public long InitControl(int vcpu = 0) => InitControl(vcpu, out _);

    /// <summary>EVTCHNOP_init_control with whatever the test says.</summary>
    public long InitControlRaw(uint vcpu, ulong gfn, uint offset, out byte linkBits)
    {
        _g.Cpu.Memory.Write(_args, new evtchn_init_control { control_gfn = gfn, offset = offset, vcpu = vcpu });
        var rc = _g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_init_control, _args);
        linkBits = _g.Cpu.Memory.Read<evtchn_init_control>(_args).link_bits;
        return rc;
    }

    /// <summary>EVTCHNOP_expand_array with the next array page, every word of it MASKED first (Linux's init_array_page).</summary>
    public long ExpandArray()
    {
        var page = ArrayPageAddress(ArrayPages);
        var words = new byte[4096];
        for (var i = 0; i < words.Length; i += 4)
        {
            BitConverter.TryWriteBytes(words.AsSpan(i), 1u << EventChannel.EVTCHN_FIFO_MASKED);
        }

        _g.Cpu.Memory.Write(page, words);
        var rc = ExpandArrayRaw(FrameOf(page));
        if (rc == 0)
        {
            ArrayPages++;
        }

        return rc;
    }

    public long ExpandArrayRaw(ulong gfn)
    {
        _g.Cpu.Memory.Write(_args, new evtchn_expand_array { array_gfn = gfn });
        return _g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_expand_array, _args);
    }

    public long SetPriority(uint port, uint priority)
    {
        _g.Cpu.Memory.Write(_args, new evtchn_set_priority { port = port, priority = priority });
        return _g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_set_priority, _args);
    }

    public uint Word(uint port) => (uint)_g.Cpu.Memory.ReadVolatile(WordAddress(port), 4);

    public void WriteWord(uint port, uint value) => _g.Cpu.Memory.WriteVolatile(WordAddress(port), 4, value);

    public bool IsPending(uint port) => (Word(port) & (1u << EventChannel.EVTCHN_FIFO_PENDING)) != 0;

    public bool IsLinked(uint port) => (Word(port) & (1u << EventChannel.EVTCHN_FIFO_LINKED)) != 0;

    public uint Ready(int vcpu = 0) => (uint)_g.Cpu.Memory.ReadVolatile(ControlBlockAddress(vcpu), 4);

    public uint Head(int priority, int vcpu = 0) => (uint)_g.Cpu.Memory.ReadVolatile(ControlBlockAddress(vcpu) + HeadOffset + ((ulong)priority * 4), 4);

    /// <summary>Linux's mask: set MASKED.</summary>
    public void Mask(uint port) => Update(WordAddress(port), w => w | (1u << EventChannel.EVTCHN_FIFO_MASKED));

    /// <summary>
    /// Linux's evtchn_fifo_unmask: clear MASKED ourselves unless the port is pending (or Xen holds
    /// it BUSY), in which case EVTCHNOP_unmask has Xen clear it and queue the event. Returns the
    /// hypercall's result, or 0 when none was needed.
    /// </summary>
    public long Unmask(uint port)
    {
        var at = WordAddress(port);
        var w = (uint)_g.Cpu.Memory.ReadVolatile(at, 4);
        for (var i = 0; i < Attempts; i++)
        {
            if ((w & (1u << EventChannel.EVTCHN_FIFO_MASKED)) == 0)
            {
                return 0;
            }

            if ((w & (1u << EventChannel.EVTCHN_FIFO_PENDING)) != 0)
            {
                break;
            }

            var old = w & ~(1u << EventChannel.EVTCHN_FIFO_BUSY);
            w = _g.Cpu.Memory.CompareExchange32(at, old & ~(1u << EventChannel.EVTCHN_FIFO_MASKED), old);
            if (w == old)
            {
                return 0;
            }
        }

        _g.Cpu.Memory.Write(_args, new evtchn_unmask { port = port });
        return _g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_unmask, _args);
    }

    /// <summary>
    /// Linux's evtchn_fifo_handle_events for one vCPU: take READY with an exchange; while any queue
    /// is ready, consume one event from the highest-priority one (lowest number) and fold in newly
    /// set READY bits. An event that is pending and not masked is handed back and acknowledged
    /// (PENDING cleared). At most <paramref name="max"/> queue entries are walked.
    /// </summary>
    public List<uint> Consume(int vcpu = 0, int max = 4096)
    {
        var handled = new List<uint>();
        var heads = _heads.TryGetValue(vcpu, out var h) ? h : _heads[vcpu] = new uint[EventChannel.EVTCHN_FIFO_MAX_QUEUES];
        var readyAt = ControlBlockAddress(vcpu);
        const uint Queues = (1u << EventChannel.EVTCHN_FIFO_MAX_QUEUES) - 1; // find_first_bit looks at 16 bits only
        var ready = Exchange(readyAt, 0) & Queues;
        for (var walked = 0; ready != 0 && walked < max; walked++)
        {
            var priority = System.Numerics.BitOperations.TrailingZeroCount(ready);
            ConsumeOne(vcpu, heads, priority, ref ready, handled);
            ready |= Exchange(readyAt, 0) & Queues;
        }

        if (ready != 0)
        {
            // Stopped at the walk bound with queues still ready: hand their READY bits back, or the
            // next call would never look at them again (Xen sets READY only when a queue was empty).
            Update(readyAt, x => x | ready);
        }

        return handled;
    }

    /// <summary>Linux's consume_one_event.</summary>
    private void ConsumeOne(int vcpu, uint[] heads, int priority, ref uint ready, List<uint> handled)
    {
        var port = heads[priority];
        if (port == 0)
        {
            port = Head(priority, vcpu);
        }

        if (port == 0 || port >= Ports)
        {
            // An empty queue, or one whose head leads nowhere we mapped: nothing to take from it.
            ready &= ~(1u << priority);
            heads[priority] = 0;
            return;
        }

        var next = ClearLinked(WordAddress(port));
        if (next == 0)
        {
            ready &= ~(1u << priority);
        }

        var w = Word(port);
        if ((w & (1u << EventChannel.EVTCHN_FIFO_PENDING)) != 0 && (w & (1u << EventChannel.EVTCHN_FIFO_MASKED)) == 0)
        {
            Update(WordAddress(port), x => x & ~(1u << EventChannel.EVTCHN_FIFO_PENDING));
            handled.Add(port);
        }

        heads[priority] = next;
    }

    /// <summary>Linux's clear_linked: clear LINKED and LINK together, returning the LINK that was there.</summary>
    private uint ClearLinked(ulong at)
    {
        var w = (uint)_g.Cpu.Memory.ReadVolatile(at, 4);
        for (var i = 0; i < Attempts; i++)
        {
            var updated = w & ~((1u << EventChannel.EVTCHN_FIFO_LINKED) | EventChannel.EVTCHN_FIFO_LINK_MASK);
            var seen = _g.Cpu.Memory.CompareExchange32(at, updated, w);
            if (seen == w)
            {
                return w & EventChannel.EVTCHN_FIFO_LINK_MASK;
            }

            w = seen;
        }

        return 0;
    }

    private uint Exchange(ulong at, uint value)
    {
        var w = (uint)_g.Cpu.Memory.ReadVolatile(at, 4);
        for (var i = 0; i < Attempts; i++)
        {
            var seen = _g.Cpu.Memory.CompareExchange32(at, value, w);
            if (seen == w)
            {
                return w;
            }

            w = seen;
        }

        return 0;
    }

    private void Update(ulong at, Func<uint, uint> change)
    {
        var w = (uint)_g.Cpu.Memory.ReadVolatile(at, 4);
        for (var i = 0; i < Attempts; i++)
        {
            var seen = _g.Cpu.Memory.CompareExchange32(at, change(w), w);
            if (seen == w)
            {
                return;
            }

            w = seen;
        }
    }
}
