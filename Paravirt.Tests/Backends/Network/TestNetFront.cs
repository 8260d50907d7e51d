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
/// tx-ring-ref, rx-ring-ref, event-channel and request-rx-copy written through the guest's own
/// XenStore ring, the XenBus handshake, and requests written into the rings by hand (so hostile
/// tests can write anything). Responses are awaited with SCHEDOP_poll on the port.
/// </summary>
public sealed class TestNetFront
{
    public const uint TxRingRef = 8;
    public const uint RxRingRef = 9;

    /// <summary>Grant ref of data page 0; page i is <c>FirstDataRef + i</c>.</summary>
    public const uint FirstDataRef = 16;

    public const int RingSize = Ring.RING_SIZE_netif_tx;
    private const int TxEntry = 12; // sizeof(union netif_tx_sring_entry)
    private const int RxEntry = 8;
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

    private readonly GuestXenStore xs;
    private readonly ulong sharedInfo;
    private uint txProdPvt, txCons, rxProdPvt, rxCons;

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

    /// <summary>The event channel (the transmit one with split channels).</summary>
    public uint Port { get; private set; }

    /// <summary>The receive event channel: <see cref="Port"/> unless split channels were used.</summary>
    public uint RxPort { get; private set; }

    public ulong TxRing => G.Scratch + 0x10000;

    public ulong RxRing => G.Scratch + 0x11000;

    public ulong DataAddress(int page) => G.Scratch + 0x20000 + ((ulong)page * 4096);

    public static uint DataRef(int page) => FirstDataRef + (uint)page;

    // ---- XenStore ----

    public string? Read(string path) => xs.ReadString(path);

    public void WriteFrontend(string key, string value) => xs.WriteString($"{FrontendPath}/{key}", value);

    public string? ReadBackend(string key) => Read($"{BackendPath}/{key}");

    public void SwitchState(XenbusState s) => WriteFrontend("state", ((int)s).ToString(CultureInfo.InvariantCulture));

    /// <summary>Waits (watch events, SCHEDOP_poll) until the backend's state satisfies <paramref name="done"/>; returns it.</summary>
    public XenbusState WaitBackend(Func<XenbusState, bool> done) => xs.WaitForState(BackendPath + "/state", done);

    /// <summary>
    /// The handshake: wait for InitWait, fresh rings and port, publish tx-ring-ref, rx-ring-ref,
    /// event-channel and request-rx-copy = 1 (each can be changed by <paramref name="beforeInitialised"/>),
    /// Initialised; true once the backend is Connected, false if it gave up (Closing/Closed).
    /// </summary>
    public bool Connect(Action<TestNetFront>? beforeInitialised = null, bool splitChannels = false)
    {
        WaitBackend(s => s == XenbusState.InitWait);
        G.Cpu.Memory.Write(TxRing, new byte[4096]);
        G.Cpu.Memory.Write(RxRing, new byte[4096]);
        foreach (var ring in (ulong[])[TxRing, RxRing])
        {
            G.Cpu.Memory.WriteVolatile(ring + 4, 4, 1); // req_event
            G.Cpu.Memory.WriteVolatile(ring + 12, 4, 1); // rsp_event
        }

        txProdPvt = txCons = rxProdPvt = rxCons = 0;
        GuestGrants.GrantV1(G, GrantTable, TxRingRef, 0, TxRing >> 12);
        GuestGrants.GrantV1(G, GrantTable, RxRingRef, 0, RxRing >> 12);
        Port = AllocUnbound();
        RxPort = splitChannels ? AllocUnbound() : Port;
        WriteFrontend("tx-ring-ref", TxRingRef.ToString(CultureInfo.InvariantCulture));
        WriteFrontend("rx-ring-ref", RxRingRef.ToString(CultureInfo.InvariantCulture));
        if (splitChannels)
        {
            WriteFrontend("event-channel-tx", Port.ToString(CultureInfo.InvariantCulture));
            WriteFrontend("event-channel-rx", RxPort.ToString(CultureInfo.InvariantCulture));
        }
        else
        {
            WriteFrontend("event-channel", Port.ToString(CultureInfo.InvariantCulture));
        }

        WriteFrontend("request-rx-copy", "1");
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

    private uint AllocUnbound()
    {
        var arg = G.Scratch + 0xC00;
        G.Cpu.Memory.Write(arg, new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 });
        var rc = G.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_alloc_unbound, arg);
        return rc == 0 ? G.Cpu.Memory.Read<evtchn_alloc_unbound>(arg).port : throw new InvalidOperationException($"EVTCHNOP_alloc_unbound = {rc}");
    }

    /// <summary>EVTCHNOP_send on the port(s).</summary>
    public void Notify()
    {
        Send(Port);
        if (RxPort != Port)
        {
            Send(RxPort);
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

    /// <summary>Writes a transmit request (or an extra-info slot, through <see cref="QueueExtra"/>) at the next slot; not yet published.</summary>
    public void QueueTx(in netif_tx_request request)
    {
        G.Cpu.Memory.Write(TxRing + 64 + ((txProdPvt & (RingSize - 1)) * TxEntry), request);
        txProdPvt++;
    }

    public void QueueExtra(in netif_extra_info extra)
    {
        var slot = TxRing + 64 + ((txProdPvt & (RingSize - 1)) * TxEntry);
        G.Cpu.Memory.Write(slot, new byte[TxEntry]);
        G.Cpu.Memory.Write(slot, extra);
        txProdPvt++;
    }

    public void PostRx(ushort id, uint gref)
    {
        G.Cpu.Memory.Write(RxRing + 64 + ((rxProdPvt & (RingSize - 1)) * RxEntry), new netif_rx_request { id = id, gref = gref });
        rxProdPvt++;
    }

    /// <summary>Publishes both rings' requests and notifies.</summary>
    public void Push()
    {
        G.Cpu.Memory.WriteVolatile(TxRing, 4, txProdPvt);
        G.Cpu.Memory.WriteVolatile(RxRing, 4, rxProdPvt);
        Notify();
    }

    public void SetTxProducer(uint value) => G.Cpu.Memory.WriteVolatile(TxRing, 4, value);

    public void SetRxProducer(uint value) => G.Cpu.Memory.WriteVolatile(RxRing, 4, value);

    public List<netif_tx_response> WaitTx(int count) =>
        Wait(count, TxRing, ref txCons, TxEntry, Port, a => G.Cpu.Memory.Read<netif_tx_response>(a));

    public List<netif_rx_response> WaitRx(int count) =>
        Wait(count, RxRing, ref rxCons, RxEntry, RxPort, a => G.Cpu.Memory.Read<netif_rx_response>(a));

    private List<T> Wait<T>(int count, ulong ring, ref uint cons, int entry, uint port, Func<ulong, T> read)
    {
        var got = new List<T>(count);
        while (true)
        {
            G.Cpu.Memory.And64(sharedInfo + PendingOffset + ((port / 64) * 8), ~(1UL << (int)(port % 64)));
            var prod = (uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4);
            while (got.Count < count && cons != prod)
            {
                got.Add(read(ring + 64 + ((cons & (RingSize - 1)) * (uint)entry)));
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

            var ports = G.Scratch + 0xCC0;
            G.Cpu.Memory.Write(ports, port);
            G.Cpu.Memory.Write(G.Scratch + 0xC80, new sched_poll { ports = ports, nr_ports = 1, timeout = 0 });
            G.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, G.Scratch + 0xC80);
        }
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
