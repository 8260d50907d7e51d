using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;

namespace Paravirt.Tests.Support;

/// <summary>
/// A guest's XenStore driver as a PV kernel has it (Linux's xenbus_comms): the page at
/// start_info.store_mfn (a GFN for a translated guest), the already connected port in
/// start_info.store_evtchn; requests into <c>req</c>, EVTCHNOP_send, SCHEDOP_poll for the answer.
/// </summary>
public sealed class GuestXenStore
{
    private static readonly ulong ReqOff = (ulong)Marshal.OffsetOf<xenstore_domain_interface>("req");
    private static readonly ulong RspOff = (ulong)Marshal.OffsetOf<xenstore_domain_interface>("rsp");
    private static readonly ulong ReqCons = (ulong)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_cons));
    private static readonly ulong ReqProd = (ulong)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_prod));
    private static readonly ulong RspCons = (ulong)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_cons));
    private static readonly ulong RspProd = (ulong)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_prod));
    private static readonly ulong ErrorOff = (ulong)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.error));
    private static readonly ulong PendingOff = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));
    private const uint Mask = XsWire.XENSTORE_RING_SIZE - 1;

    private readonly GuestContext g;
    private readonly ulong sharedInfo;
    private readonly HashSet<string> watchedStates = [];
    private uint nextReq = 1;

    public GuestXenStore(GuestContext g)
    {
        this.g = g;
        var si = g.ReadStartInfo();
        Page = si.store_mfn << 12;
        Port = si.store_evtchn;
        sharedInfo = GuestEvents.MapSharedInfo(g);
    }

    public ulong Page { get; }

    public uint Port { get; }

    public uint RequestsConsumed => (uint)g.Cpu.Memory.ReadVolatile(Page + ReqCons, 4);

    public uint Error => (uint)g.Cpu.Memory.ReadVolatile(Page + ErrorOff, 4);

    /// <summary>Puts raw bytes into the request ring (no notification).</summary>
    public void Put(ReadOnlySpan<byte> bytes)
    {
        var prod = (uint)g.Cpu.Memory.ReadVolatile(Page + ReqProd, 4);
        for (var i = 0; i < bytes.Length; i++)
        {
            g.Cpu.Memory.Write(Page + ReqOff + ((prod + (uint)i) & Mask), bytes.Slice(i, 1));
        }

        g.Cpu.Memory.WriteVolatile(Page + ReqProd, 4, prod + (uint)bytes.Length);
    }

    /// <summary>Queues one request (no notification); returns its req_id.</summary>
    internal uint Queue(xsd_sockmsg_type type, params string[] args)
    {
        var id = nextReq++;
        var message = XsMessage.Strings(type, id, 0, args);
        if (type == xsd_sockmsg_type.XS_WRITE)
        {
            message = message with { Payload = message.Payload[..^1] }; // a value is not NUL-terminated
        }

        Put(XsWireCodec.Encode(message));
        return id;
    }

    /// <summary>EVTCHNOP_send on the store port.</summary>
    public void Notify()
    {
        g.Cpu.Memory.Write(g.Scratch + 0xF00, new evtchn_send { port = Port });
        var rc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, g.Scratch + 0xF00);
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_send({Port}) = {rc}");
        }
    }

    /// <summary>Clears the port's pending bit, then blocks in SCHEDOP_poll until it is set again.</summary>
    public void ClearPending() => g.Cpu.Memory.And64(sharedInfo + PendingOff + ((Port / 64) * 8), ~(1UL << (int)(Port % 64)));

    public void Poll()
    {
        var ports = g.Scratch + 0xF80;
        g.Cpu.Memory.Write(ports, Port);
        g.Cpu.Memory.Write(g.Scratch + 0xF40, new sched_poll { ports = ports, nr_ports = 1, timeout = 0 });
        g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, g.Scratch + 0xF40);
    }

    /// <summary>The next message from the response ring, waiting for it with SCHEDOP_poll.</summary>
    internal XsMessage Receive()
    {
        while (true)
        {
            ClearPending();
            var cons = (uint)g.Cpu.Memory.ReadVolatile(Page + RspCons, 4);
            var prod = (uint)g.Cpu.Memory.ReadVolatile(Page + RspProd, 4);
            var avail = prod - cons;
            if (avail >= XsWireCodec.HeaderSize)
            {
                var header = Take(cons, XsWireCodec.HeaderSize);
                var len = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12));
                if (avail >= XsWireCodec.HeaderSize + len)
                {
                    var whole = Take(cons, XsWireCodec.HeaderSize + (int)len);
                    g.Cpu.Memory.WriteVolatile(Page + RspCons, 4, cons + (uint)whole.Length);
                    Notify(); // space freed: the store may have more to write
                    return XsWireCodec.Decode(whole);
                }
            }

            Poll();
        }
    }

    /// <summary>Sends one request and returns its reply, setting aside watch events for <see cref="NextEvent"/>.</summary>
    internal XsMessage Call(xsd_sockmsg_type type, params string[] args)
    {
        var id = Queue(type, args);
        Notify();
        while (true)
        {
            var m = Receive();
            if (m.Kind == xsd_sockmsg_type.XS_WATCH_EVENT)
            {
                Events.Enqueue(m);
                continue;
            }

            return m.ReqId == id ? m : throw new InvalidOperationException($"reply to {m.ReqId}, expected {id}");
        }
    }

    internal Queue<XsMessage> Events { get; } = new();

    /// <summary>The next watch event (already received or still to come).</summary>
    internal XsMessage NextEvent()
    {
        if (Events.TryDequeue(out var e))
        {
            return e;
        }

        while (true)
        {
            var m = Receive();
            if (m.Kind == xsd_sockmsg_type.XS_WATCH_EVENT)
            {
                return m;
            }
        }
    }

    private byte[] Take(uint cons, int count)
    {
        var bytes = new byte[count];
        for (var i = 0; i < count; i++)
        {
            g.Cpu.Memory.Read(Page + RspOff + ((cons + (uint)i) & Mask), bytes.AsSpan(i, 1));
        }

        return bytes;
    }

    /// <summary>XS_READ of <paramref name="path"/>: the value, or null when the store answers with an error.</summary>
    public string? ReadString(string path)
    {
        var m = Call(xsd_sockmsg_type.XS_READ, path);
        return m.Kind == xsd_sockmsg_type.XS_ERROR ? null : Encoding.Latin1.GetString(m.Payload).TrimEnd('\0');
    }

    /// <summary>XS_WRITE of <paramref name="value"/> at <paramref name="path"/>; an error reply throws.</summary>
    public void WriteString(string path, string value)
    {
        var m = Call(xsd_sockmsg_type.XS_WRITE, path, value);
        if (m.Kind == xsd_sockmsg_type.XS_ERROR)
        {
            throw new InvalidOperationException($"write of {path} failed: {Encoding.Latin1.GetString(m.Payload)}");
        }
    }

    /// <summary>
    /// Waits (watch events, SCHEDOP_poll) until the XenBus state at <paramref name="path"/> satisfies
    /// <paramref name="done"/>, and returns it. The path is watched the first time it is waited on.
    /// </summary>
    public XenbusState WaitForState(string path, Func<XenbusState, bool> done)
    {
        if (watchedStates.Add(path) && Call(xsd_sockmsg_type.XS_WATCH, path, "be-state").Kind == xsd_sockmsg_type.XS_ERROR)
        {
            throw new InvalidOperationException($"watch of {path} refused");
        }

        while (true)
        {
            var raw = ReadString(path);
            if (raw is not null && int.TryParse(raw, CultureInfo.InvariantCulture, out var n) && done((XenbusState)n))
            {
                return (XenbusState)n;
            }

            NextEvent();
        }
    }
}
