using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/event_channel.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>Constants of <c>xen/event_channel.h</c>: <c>EVTCHNOP_*</c> sub-ops, statuses, FIFO ABI.</summary>
public static class EventChannel
{
    public const int EVTCHNOP_bind_interdomain = 0;
    public const int EVTCHNOP_bind_virq = 1;
    public const int EVTCHNOP_bind_pirq = 2;
    public const int EVTCHNOP_close = 3;
    public const int EVTCHNOP_send = 4;
    public const int EVTCHNOP_status = 5;
    public const int EVTCHNOP_alloc_unbound = 6;
    public const int EVTCHNOP_bind_ipi = 7;
    public const int EVTCHNOP_bind_vcpu = 8;
    public const int EVTCHNOP_unmask = 9;
    public const int EVTCHNOP_reset = 10;
    public const int EVTCHNOP_init_control = 11;
    public const int EVTCHNOP_expand_array = 12;
    public const int EVTCHNOP_set_priority = 13;

    /// <summary><see cref="evtchn_bind_pirq.flags"/>: the PIRQ may be shared.</summary>
    public const int BIND_PIRQ__WILL_SHARE = 1;

    /// <summary><see cref="evtchn_status.status"/>: the channel is not in use.</summary>
    public const int EVTCHNSTAT_closed = 0;
    /// <summary>Waiting for an interdomain connection.</summary>
    public const int EVTCHNSTAT_unbound = 1;
    /// <summary>Connected to a remote domain.</summary>
    public const int EVTCHNSTAT_interdomain = 2;
    /// <summary>Bound to a physical IRQ line.</summary>
    public const int EVTCHNSTAT_pirq = 3;
    /// <summary>Bound to a virtual IRQ line.</summary>
    public const int EVTCHNSTAT_virq = 4;
    /// <summary>Bound to a virtual IPI line.</summary>
    public const int EVTCHNSTAT_ipi = 5;

    /// <summary>Ports of the 2-level ABI on x86-64: 64 × 64 bits of pending selector and words.</summary>
    public const int EVTCHN_2L_NR_CHANNELS = 4096;

    public const int EVTCHN_FIFO_PRIORITY_MAX = 0;
    public const int EVTCHN_FIFO_PRIORITY_DEFAULT = 7;
    public const int EVTCHN_FIFO_PRIORITY_MIN = 15;
    public const int EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1;

    /// <summary>Bit numbers within a FIFO <c>event_word_t</c>.</summary>
    public const int EVTCHN_FIFO_PENDING = 31;
    public const int EVTCHN_FIFO_MASKED = 30;
    public const int EVTCHN_FIFO_LINKED = 29;
    public const int EVTCHN_FIFO_BUSY = 28;
    public const int EVTCHN_FIFO_LINK_BITS = 17;
    public const int EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
    public const int EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS;
}

/// <summary>EVTCHNOP_alloc_unbound: a port in <c>dom</c> that <c>remote_dom</c> may later bind.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_alloc_unbound
{
    /// <summary>IN: the domain to allocate in (<c>DOMID_SELF</c> unless privileged).</summary>
    public ushort dom;
    /// <summary>IN: the only domain allowed to bind the port.</summary>
    public ushort remote_dom;
    /// <summary>OUT: the new port.</summary>
    public uint port;
}

/// <summary>EVTCHNOP_bind_interdomain: connect a new local port to an unbound remote port.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_bind_interdomain
{
    /// <summary>IN</summary>
    public ushort remote_dom;
    /// <summary>IN</summary>
    public uint remote_port;
    /// <summary>OUT</summary>
    public uint local_port;
}

/// <summary>EVTCHNOP_bind_virq: bind a virtual IRQ (<c>VIRQ_*</c>) on a vCPU to a new port.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_bind_virq
{
    /// <summary>IN: <c>enum virq</c>.</summary>
    public uint virq;
    /// <summary>IN</summary>
    public uint vcpu;
    /// <summary>OUT</summary>
    public uint port;
}

/// <summary>EVTCHNOP_bind_pirq: bind a physical IRQ (only for domains with physical devices).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_bind_pirq
{
    /// <summary>IN</summary>
    public uint pirq;
    /// <summary>IN: <c>BIND_PIRQ__*</c>.</summary>
    public uint flags;
    /// <summary>OUT</summary>
    public uint port;
}

/// <summary>EVTCHNOP_bind_ipi: a port for inter-processor interrupts to <c>vcpu</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_bind_ipi
{
    /// <summary>IN</summary>
    public uint vcpu;
    /// <summary>OUT</summary>
    public uint port;
}

/// <summary>EVTCHNOP_close: close a local port.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_close
{
    /// <summary>IN</summary>
    public uint port;
}

/// <summary>EVTCHNOP_send: notify the other end of a local port.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_send
{
    /// <summary>IN</summary>
    public uint port;
}

/// <summary>EVTCHNOP_status: what a port of <c>dom</c> is bound to.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_status
{
    /// <summary>IN</summary>
    public ushort dom;
    /// <summary>IN</summary>
    public uint port;
    /// <summary>OUT: <c>EVTCHNSTAT_*</c>.</summary>
    public uint status;
    /// <summary>OUT: the vCPU the channel is bound to.</summary>
    public uint vcpu;
    /// <summary>OUT: depends on <see cref="status"/>.</summary>
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        /// <summary>EVTCHNSTAT_unbound.</summary>
        [FieldOffset(0)] public Unbound unbound;
        /// <summary>EVTCHNSTAT_interdomain.</summary>
        [FieldOffset(0)] public Interdomain interdomain;
        /// <summary>EVTCHNSTAT_pirq.</summary>
        [FieldOffset(0)] public uint pirq;
        /// <summary>EVTCHNSTAT_virq.</summary>
        [FieldOffset(0)] public uint virq;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Unbound
    {
        public ushort dom;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Interdomain
    {
        public ushort dom;
        public uint port;
    }
}

/// <summary>EVTCHNOP_bind_vcpu: deliver a port's events to another vCPU.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_bind_vcpu
{
    /// <summary>IN</summary>
    public uint port;
    /// <summary>IN</summary>
    public uint vcpu;
}

/// <summary>EVTCHNOP_unmask: unmask a port and deliver its pending event if any.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_unmask
{
    /// <summary>IN</summary>
    public uint port;
}

/// <summary>EVTCHNOP_reset: close every port of <c>dom</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_reset
{
    /// <summary>IN</summary>
    public ushort dom;
}

/// <summary>EVTCHNOP_init_control: switch to the FIFO ABI and register a vCPU's control block.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct evtchn_init_control
{
    /// <summary>IN: the guest frame holding the control block.</summary>
    public ulong control_gfn;
    /// <summary>IN: offset of the control block within that frame.</summary>
    public uint offset;
    /// <summary>IN</summary>
    public uint vcpu;
    /// <summary>OUT: <c>EVTCHN_FIFO_LINK_BITS</c>.</summary>
    public byte link_bits;
    public fixed byte _pad[7];
}

/// <summary>EVTCHNOP_expand_array: add one page of FIFO event words.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_expand_array
{
    /// <summary>IN</summary>
    public ulong array_gfn;
}

/// <summary>EVTCHNOP_set_priority: move a port to another FIFO priority queue.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_set_priority
{
    /// <summary>IN</summary>
    public uint port;
    /// <summary>IN</summary>
    public uint priority;
}

/// <summary>The argument of the deprecated <c>__HYPERVISOR_event_channel_op_compat</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct evtchn_op
{
    /// <summary>EVTCHNOP_*.</summary>
    public uint cmd;
    public U u;

    [StructLayout(LayoutKind.Explicit)]
    public struct U
    {
        [FieldOffset(0)] public evtchn_alloc_unbound alloc_unbound;
        [FieldOffset(0)] public evtchn_bind_interdomain bind_interdomain;
        [FieldOffset(0)] public evtchn_bind_virq bind_virq;
        [FieldOffset(0)] public evtchn_bind_pirq bind_pirq;
        [FieldOffset(0)] public evtchn_bind_ipi bind_ipi;
        [FieldOffset(0)] public evtchn_close close;
        [FieldOffset(0)] public evtchn_send send;
        [FieldOffset(0)] public evtchn_status status;
        [FieldOffset(0)] public evtchn_bind_vcpu bind_vcpu;
        [FieldOffset(0)] public evtchn_unmask unmask;
    }
}

/// <summary>The FIFO ABI's per-vCPU control block, in a guest page. [GST] writes ready bits back; [XEN] sets ready and head.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct evtchn_fifo_control_block
{
    /// <summary>[XEN] sets, [GST] clears: one bit per priority queue with events.</summary>
    public uint ready;
    public uint _rsvd;
    /// <summary>[XEN] head port of each priority queue.</summary>
    public fixed uint head[EventChannel.EVTCHN_FIFO_MAX_QUEUES];
}
