using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Tests.Domains;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Network;

/// <summary>
/// A raw network frontend for tests, run inside a managed guest through the real gate, doing
/// what netfront does at the ABI: grant frame placed with XENMEM_add_to_physmap, tx and rx ring
/// pages and data pages granted to domain 0 by hand, an unbound event channel for domain 0,
/// tx-ring-ref, rx-ring-ref, event-channel, request-rx-copy and feature-rx-notify written through
/// the guest's own XenStore ring (under queue-N/ with several queues), optionally a control ring,
/// the XenBus handshake, and requests written into the rings by hand (so hostile tests can write
/// anything). Responses are awaited with SCHEDOP_poll on the port(s).
/// </summary>
public sealed class TestNetFront
{
    public const uint TxRingRef = 8;
    public const uint RxRingRef = 9;

    /// <summary>The control ring's grant reference.</summary>
    public const uint CtrlRingRef = 500;

    /// <summary>Queues a test frontend can set up.</summary>
    public const int MaxQueues = 4;

    /// <summary>Grant ref of data page 0; page i is <c>FirstDataRef + i</c>.</summary>
    public const uint FirstDataRef = 16;

    public const int RingSize = Ring.RING_SIZE_netif_tx;
    private const int TxEntry = 12; // sizeof(union netif_tx_sring_entry)
    private const int RxEntry = 8;
    private const int CtrlEntry = 16;
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

    private readonly GuestXenStore xs;
    private readonly ulong sharedInfo;
    private readonly uint[] txProdPvt = new uint[MaxQueues], txCons = new uint[MaxQueues], rxProdPvt = new uint[MaxQueues], rxCons = new uint[MaxQueues];
    private readonly uint[] txPorts = new uint[MaxQueues], rxPorts = new uint[MaxQueues];
    private uint ctrlProdPvt, ctrlCons;

    public TestNetFront(GuestContext g, uint devid = 0)
    {
        G = g;
        xs = new GuestXenStore(g);
        sharedInfo = GuestEvents.MapSharedInfo(g);
        GrantTable = GuestGrants.MapFrame(g);
        FrontendPath = $"device/vif/{devid}";
        BackendPath = Read(FrontendPath + "/backend") ?? throw new InvalidOperationException($"no vif {devid} in this domain's XenStore directory");
        Mac = Read(FrontendPath + "/mac")!;
    }

    /// <summary>Starts <paramref name="domain"/> running <paramref name="body"/>; the guest powers off when it returns. The task carries its failure, if any.</summary>
    public static Task<Exception?> Start(Domain domain, Action<TestNetFront> body, uint devid = 0) =>
        RawGuest.Start(domain, g => new TestNetFront(g, devid), body);

    /// <summary>Runs the body to its end (bounded) and rethrows what failed inside the guest.</summary>
    public static Task<DomainExit> RunAsync(Domain domain, Action<TestNetFront> body, uint devid = 0) =>
        RawGuest.RunAsync(domain, g => new TestNetFront(g, devid), body);

    public GuestContext G { get; }

    public ulong GrantTable { get; }

    public string FrontendPath { get; }

    public string BackendPath { get; }

    /// <summary>The <c>mac</c> node, as written.</summary>
    public string Mac { get; }

    /// <summary>Queue 0's event channel (the transmit one with split channels).</summary>
    public uint Port => txPorts[0];

    /// <summary>Queue 0's receive event channel: <see cref="Port"/> unless split channels were used.</summary>
    public uint RxPort => rxPorts[0];

    /// <summary>Queues set up by the last <see cref="Connect"/>.</summary>
    public int Queues { get; private set; } = 1;

    /// <summary>The control ring's event channel (0 without a control ring).</summary>
    public uint CtrlPort { get; private set; }

    public ulong TxRing => TxRingOf(0);

    public ulong RxRing => RxRingOf(0);

    public ulong TxRingOf(int queue) => G.Scratch + 0x10000 + ((ulong)queue * 0x2000);

    public ulong RxRingOf(int queue) => G.Scratch + 0x11000 + ((ulong)queue * 0x2000);

    public ulong CtrlRing => G.Scratch + 0x1F000;

    private static uint TxRefOf(int queue) => queue == 0 ? TxRingRef : 480 + (2 * (uint)queue);

    private static uint RxRefOf(int queue) => queue == 0 ? RxRingRef : 481 + (2 * (uint)queue);

    public ulong DataAddress(int page) => G.Scratch + 0x20000 + ((ulong)page * 4096);

    public static uint DataRef(int page) => FirstDataRef + (uint)page;

    // ---- XenStore ----

    public string? Read(string path) => xs.ReadString(path);

    public void WriteFrontend(string key, string value) => xs.WriteString($"{FrontendPath}/{key}", value);

    /// <summary>XS_RM of a key of the frontend directory (absent is fine).</summary>
    public void RemoveFrontend(string key) => xs.Call(Paravirt.Core.Abi.Io.xsd_sockmsg_type.XS_RM, $"{FrontendPath}/{key}");

    public string? ReadBackend(string key) => Read($"{BackendPath}/{key}");

    public void SwitchState(XenbusState s) => WriteFrontend("state", ((int)s).ToString(CultureInfo.InvariantCulture));

    /// <summary>Waits (watch events, SCHEDOP_poll) until the backend's state satisfies <paramref name="done"/>; returns it.</summary>
    public XenbusState WaitBackend(Func<XenbusState, bool> done) => xs.WaitForState(BackendPath + "/state", done);

    /// <summary>
    /// The handshake: wait for InitWait, fresh rings and ports for each of <paramref name="queues"/>
    /// queues, publish tx-ring-ref, rx-ring-ref, event-channel (at the top level for one queue, under
    /// queue-N/ with multi-queue-num-queues for several), request-rx-copy = 1 and feature-rx-notify = 1,
    /// and with <paramref name="controlRing"/> ctrl-ring-ref and event-channel-ctrl (each can be
    /// changed by <paramref name="beforeInitialised"/>), Initialised; true once the backend is
    /// Connected, false if it gave up (Closing/Closed).
    /// </summary>
    public bool Connect(Action<TestNetFront>? beforeInitialised = null, bool splitChannels = false, int queues = 1, bool controlRing = false)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queues, MaxQueues);
        WaitBackend(s => s == XenbusState.InitWait);
        Queues = queues;
        for (var q = 0; q < queues; q++)
        {
            G.Cpu.Memory.Write(TxRingOf(q), new byte[4096]);
            G.Cpu.Memory.Write(RxRingOf(q), new byte[4096]);
            foreach (var ring in (ulong[])[TxRingOf(q), RxRingOf(q)])
            {
                G.Cpu.Memory.WriteVolatile(ring + 4, 4, 1); // req_event
                G.Cpu.Memory.WriteVolatile(ring + 12, 4, 1); // rsp_event
            }

            txProdPvt[q] = txCons[q] = rxProdPvt[q] = rxCons[q] = 0;
            GuestGrants.GrantV1(G, GrantTable, TxRefOf(q), 0, TxRingOf(q) >> 12);
            GuestGrants.GrantV1(G, GrantTable, RxRefOf(q), 0, RxRingOf(q) >> 12);
            txPorts[q] = AllocUnbound();
            rxPorts[q] = splitChannels ? AllocUnbound() : txPorts[q];
            var dir = queues == 1 ? "" : $"queue-{q}/";
            WriteFrontend(dir + "tx-ring-ref", Decimal(TxRefOf(q)));
            WriteFrontend(dir + "rx-ring-ref", Decimal(RxRefOf(q)));
            if (splitChannels)
            {
                WriteFrontend(dir + "event-channel-tx", Decimal(txPorts[q]));
                WriteFrontend(dir + "event-channel-rx", Decimal(rxPorts[q]));
            }
            else
            {
                WriteFrontend(dir + "event-channel", Decimal(txPorts[q]));
            }
        }

        if (queues > 1)
        {
            WriteFrontend("multi-queue-num-queues", Decimal((uint)queues));
        }

        CtrlPort = 0;
        if (controlRing)
        {
            G.Cpu.Memory.Write(CtrlRing, new byte[4096]);
            G.Cpu.Memory.WriteVolatile(CtrlRing + 4, 4, 1);
            G.Cpu.Memory.WriteVolatile(CtrlRing + 12, 4, 1);
            ctrlProdPvt = ctrlCons = 0;
            GuestGrants.GrantV1(G, GrantTable, CtrlRingRef, 0, CtrlRing >> 12);
            CtrlPort = AllocUnbound();
            WriteFrontend("ctrl-ring-ref", Decimal(CtrlRingRef));
            WriteFrontend("event-channel-ctrl", Decimal(CtrlPort));
        }

        WriteFrontend("request-rx-copy", "1");
        WriteFrontend("feature-rx-notify", "1");
        beforeInitialised?.Invoke(this);
        SwitchState(XenbusState.Initialised);
        var s = WaitBackend(x => x is XenbusState.Connected or XenbusState.Closing or XenbusState.Closed);
        if (s != XenbusState.Connected)
        {
            return false;
        }

        SwitchState(XenbusState.Connected);
        return true;
    }

    private static string Decimal(uint n) => n.ToString(CultureInfo.InvariantCulture);

    /// <summary>Writes each of <paramref name="keys"/> = 1 in the frontend directory (feature-sg, feature-gso-tcpv4 …).</summary>
    public void WriteFeatures(params string[] keys)
    {
        foreach (var k in keys)
        {
            WriteFrontend(k, "1");
        }
    }

    private uint AllocUnbound()
    {
        var arg = G.Scratch + 0xC00;
        G.Cpu.Memory.Write(arg, new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 });
        var rc = G.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_alloc_unbound, arg);
        return rc == 0 ? G.Cpu.Memory.Read<evtchn_alloc_unbound>(arg).port : throw new InvalidOperationException($"EVTCHNOP_alloc_unbound = {rc}");
    }

    /// <summary>EVTCHNOP_send on every queue's port(s).</summary>
    public void Notify()
    {
        for (var q = 0; q < Queues; q++)
        {
            Notify(q);
        }
    }

    /// <summary>EVTCHNOP_send on <paramref name="queue"/>'s port(s).</summary>
    public void Notify(int queue)
    {
        Send(txPorts[queue]);
        if (rxPorts[queue] != txPorts[queue])
        {
            Send(rxPorts[queue]);
        }
    }

    private void Send(uint port)
    {
        var at = G.Scratch + 0xC00;
        G.Cpu.Memory.Write(at, new evtchn_send { port = port });
        var rc = G.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, at);
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_send({port}) = {rc}");
        }
    }

    // ---- data pages ----

    public uint GrantPage(int page, bool readOnly = false)
    {
        GuestGrants.GrantV1(G, GrantTable, DataRef(page), 0, DataAddress(page) >> 12, readOnly);
        return DataRef(page);
    }

    public void Fill(int page, int offset, ReadOnlySpan<byte> bytes) => G.Cpu.Memory.Write(DataAddress(page) + (ulong)offset, bytes);

    public byte[] ReadData(int page, int offset, int length)
    {
        var b = new byte[length];
        G.Cpu.Memory.Read(DataAddress(page) + (ulong)offset, b);
        return b;
    }

    // ---- rings ----

    /// <summary>Writes a transmit request (or an extra-info slot, through <see cref="QueueExtra"/>) at the next slot of <paramref name="queue"/>; not yet published.</summary>
    public void QueueTx(in netif_tx_request request, int queue = 0)
    {
        G.Cpu.Memory.Write(TxRingOf(queue) + 64 + ((txProdPvt[queue] & (RingSize - 1)) * TxEntry), request);
        txProdPvt[queue]++;
    }

    public void QueueExtra(in netif_extra_info extra, int queue = 0)
    {
        var slot = TxRingOf(queue) + 64 + ((txProdPvt[queue] & (RingSize - 1)) * TxEntry);
        G.Cpu.Memory.Write(slot, new byte[TxEntry]);
        G.Cpu.Memory.Write(slot, extra);
        txProdPvt[queue]++;
    }

    public void PostRx(ushort id, uint gref, int queue = 0)
    {
        G.Cpu.Memory.Write(RxRingOf(queue) + 64 + ((rxProdPvt[queue] & (RingSize - 1)) * RxEntry), new netif_rx_request { id = id, gref = gref });
        rxProdPvt[queue]++;
    }

    /// <summary>Publishes every queue's requests and notifies.</summary>
    public void Push()
    {
        for (var q = 0; q < Queues; q++)
        {
            Publish(q);
        }

        Notify();
    }

    /// <summary>Publishes <paramref name="queue"/>'s requests without an event (a frontend without feature-rx-notify).</summary>
    public void Publish(int queue = 0)
    {
        G.Cpu.Memory.WriteVolatile(TxRingOf(queue), 4, txProdPvt[queue]);
        G.Cpu.Memory.WriteVolatile(RxRingOf(queue), 4, rxProdPvt[queue]);
    }

    public void SetTxProducer(uint value) => G.Cpu.Memory.WriteVolatile(TxRing, 4, value);

    public void SetRxProducer(uint value) => G.Cpu.Memory.WriteVolatile(RxRing, 4, value);

    public List<netif_tx_response> WaitTx(int count, int queue = 0) =>
        Wait(count, TxRingOf(queue), ref txCons[queue], TxEntry, [txPorts[queue]], a => G.Cpu.Memory.Read<netif_tx_response>(a));

    public List<netif_rx_response> WaitRx(int count, int queue = 0) =>
        Wait(count, RxRingOf(queue), ref rxCons[queue], RxEntry, [rxPorts[queue]], a => G.Cpu.Memory.Read<netif_rx_response>(a));

    /// <summary>Waits until <paramref name="count"/> receive responses arrived over all queues; returns each with its queue, in each queue's order.</summary>
    public List<(int Queue, netif_rx_response Response)> WaitRxAnyQueue(int count)
    {
        var got = new List<(int, netif_rx_response)>(count);
        var ports = rxPorts.AsSpan(0, Queues).ToArray();
        while (true)
        {
            foreach (var p in ports)
            {
                ClearPending(p);
            }

            var before = got.Count;
            for (var q = 0; q < Queues && got.Count < count; q++)
            {
                var ring = RxRingOf(q);
                var prod = (uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4);
                while (got.Count < count && rxCons[q] != prod)
                {
                    got.Add((q, G.Cpu.Memory.Read<netif_rx_response>(ring + 64 + ((rxCons[q] & (RingSize - 1)) * RxEntry))));
                    rxCons[q]++;
                }

                G.Cpu.Memory.WriteVolatile(ring + 12, 4, rxCons[q] + 1); // rsp_event
            }

            if (got.Count == count)
            {
                return got;
            }

            if (got.Count == before)
            {
                Poll(ports);
            }
        }
    }

    private void ClearPending(uint port) =>
        G.Cpu.Memory.And64(sharedInfo + PendingOffset + ((port / 64) * 8), ~(1UL << (int)(port % 64)));

    private void Poll(uint[] ports)
    {
        var at = G.Scratch + 0xCC0;
        for (var i = 0; i < ports.Length; i++)
        {
            G.Cpu.Memory.Write(at + ((ulong)i * 4), ports[i]);
        }

        G.Cpu.Memory.Write(G.Scratch + 0xC80, new sched_poll { ports = at, nr_ports = (uint)ports.Length, timeout = 0 });
        G.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, G.Scratch + 0xC80);
    }

    private List<T> Wait<T>(int count, ulong ring, ref uint cons, int entry, uint[] ports, Func<ulong, T> read, int size = RingSize)
    {
        var got = new List<T>(count);
        while (true)
        {
            ClearPending(ports[0]);
            var prod = (uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4);
            while (got.Count < count && cons != prod)
            {
                got.Add(read(ring + 64 + ((cons & (uint)(size - 1)) * (uint)entry)));
                cons++;
            }

            if (got.Count == count)
            {
                return got;
            }

            G.Cpu.Memory.WriteVolatile(ring + 12, 4, cons + 1); // rsp_event
            if ((uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4) != cons)
            {
                continue;
            }

            Poll(ports);
        }
    }

    /// <summary>EVTCHNOP_send on the control ring's port.</summary>
    public void NotifyControl() => Send(CtrlPort);

    /// <summary>One control-ring request (io/netif.h XEN_NETIF_CTRL_TYPE_*), published and notified; returns its response.</summary>
    public xen_netif_ctrl_response Control(int type, uint data0 = 0, uint data1 = 0, uint data2 = 0, ushort id = 0)
    {
        Span<byte> req = stackalloc byte[CtrlEntry];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(req, id);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(req[2..], (ushort)type);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(req[4..], data0);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(req[8..], data1);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(req[12..], data2);
        G.Cpu.Memory.Write(CtrlRing + 64 + ((ctrlProdPvt & (Ring.RING_SIZE_xen_netif_ctrl - 1)) * CtrlEntry), req);
        ctrlProdPvt++;
        G.Cpu.Memory.WriteVolatile(CtrlRing, 4, ctrlProdPvt);
        Send(CtrlPort);
        return Wait(1, CtrlRing, ref ctrlCons, CtrlEntry, [CtrlPort], a => G.Cpu.Memory.Read<xen_netif_ctrl_response>(a), Ring.RING_SIZE_xen_netif_ctrl).Single();
    }

    /// <summary>
    /// Sends <paramref name="frame"/> from data pages <paramref name="firstPage"/>.. (one 4096-byte
    /// chunk each, granted read-only): the first request (the whole size, its id the page number),
    /// <paramref name="extra"/> if given, then one fragment per further page. Returns the responses.
    /// </summary>
    public List<netif_tx_response> SendFrame(byte[] frame, int firstPage, int flags = 0, netif_extra_info? extra = null, int queue = 0)
    {
        var chunks = Math.Max(1, (frame.Length + 4095) / 4096);
        for (var j = 0; j < chunks; j++)
        {
            var bytes = frame.AsSpan(j * 4096, Math.Min(4096, frame.Length - (j * 4096)));
            Fill(firstPage + j, 0, bytes);
            GrantPage(firstPage + j, readOnly: true);
            var more = j < chunks - 1 ? Netif.NETTXF_more_data : 0;
            if (j == 0)
            {
                QueueTx(new netif_tx_request { gref = DataRef(firstPage), size = (ushort)frame.Length, flags = (ushort)(flags | more | (extra is null ? 0 : Netif.NETTXF_extra_info)), id = (ushort)firstPage }, queue);
                if (extra is { } e)
                {
                    QueueExtra(e, queue);
                }
            }
            else
            {
                QueueTx(new netif_tx_request { gref = DataRef(firstPage + j), size = (ushort)bytes.Length, flags = (ushort)more, id = (ushort)(firstPage + j) }, queue);
            }
        }

        Push();
        return WaitTx(chunks + (extra is null ? 0 : 1), queue);
    }

    /// <summary>A GSO extra-info slot.</summary>
    public static netif_extra_info Gso(int size, int type) =>
        new() { type = Netif.XEN_NETIF_EXTRA_TYPE_GSO, u = new netif_extra_info.U { gso = new netif_extra_info.Gso { size = (ushort)size, type = (byte)type } } };

    /// <summary>Grants data pages <paramref name="firstPage"/>.. writable and posts each as a receive buffer whose id is its page number.</summary>
    public void PostRxPages(int firstPage, int count, int queue = 0)
    {
        for (var p = firstPage; p < firstPage + count; p++)
        {
            PostRx((ushort)p, GrantPage(p), queue);
        }
    }

    /// <summary>A received packet: its bytes joined from its data slots, the first slot's flags, its extra-info slots, and how many slots it took.</summary>
    public sealed record RxPacket(byte[] Data, int Flags, IReadOnlyList<netif_extra_info> Extras, int Slots, int Queue, bool Error);

    /// <summary>
    /// Joins receive responses (in ring order per queue) into packets as netfront does: extra-info
    /// slots after a first slot flagged NETRXF_extra_info (while XEN_NETIF_EXTRA_FLAG_MORE), then
    /// further data slots while NETRXF_more_data; each data slot read from the page its id names.
    /// </summary>
    public List<RxPacket> Packets(IEnumerable<(int Queue, netif_rx_response Response)> responses)
    {
        var packets = new List<RxPacket>();
        foreach (var group in responses.GroupBy(r => r.Queue))
        {
            var list = group.Select(r => r.Response).ToList();
            for (var i = 0; i < list.Count;)
            {
                var first = list[i++];
                var data = new List<byte>();
                var error = first.status < 0;
                if (!error)
                {
                    data.AddRange(ReadData(first.id, first.offset, first.status));
                }

                var extras = new List<netif_extra_info>();
                if ((first.flags & Netif.NETRXF_extra_info) != 0)
                {
                    netif_extra_info e;
                    do
                    {
                        var r = list[i++];
                        e = System.Runtime.CompilerServices.Unsafe.As<netif_rx_response, netif_extra_info>(ref r);
                        extras.Add(e);
                    }
                    while ((e.flags & Netif.XEN_NETIF_EXTRA_FLAG_MORE) != 0);
                }

                var slots = 1 + extras.Count;
                var last = first;
                while ((last.flags & Netif.NETRXF_more_data) != 0)
                {
                    last = list[i++];
                    slots++;
                    if (last.status < 0)
                    {
                        error = true;
                    }
                    else
                    {
                        data.AddRange(ReadData(last.id, last.offset, last.status));
                    }
                }

                packets.Add(new RxPacket([.. data], first.flags, extras, slots, group.Key, error));
            }
        }

        return packets;
    }

    /// <summary>Sends one packet laid out as <paramref name="slots"/> (already filled and granted) and returns the responses to its slots.</summary>
    public List<netif_tx_response> Transmit(params netif_tx_request[] slots)
    {
        foreach (var s in slots)
        {
            QueueTx(s);
        }

        Push();
        return WaitTx(slots.Length);
    }
}
