using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;
using Paravirt.Tests.Grants;

namespace Paravirt.Tests.Support;

/// <summary>
/// A raw block frontend for tests, run inside a managed guest through the real gate, doing what
/// blkfront does at the ABI: grant table frame placed with XENMEM_add_to_physmap, the ring page
/// and data pages granted to domain 0, an unbound event channel for domain 0, ring-ref,
/// event-channel and protocol written through the guest's own XenStore ring, the XenBus
/// handshake, and requests written into its ring page by hand (so hostile tests can write
/// anything). Responses are awaited with SCHEDOP_poll on the port.
/// </summary>
public sealed class TestBlkFront
{
    /// <summary>Grant ref of the ring page.</summary>
    public const uint RingRef = 8;

    /// <summary>Grant ref of data page 0; page i is <c>FirstDataRef + i</c>.</summary>
    public const uint FirstDataRef = 16;

    /// <summary>Data pages available: enough for a full ring of 11-segment requests.</summary>
    public const int DataPages = Ring.RING_SIZE_blkif * Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST;

    private const int EntrySize = 112; // sizeof(union blkif_sring_entry)
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

    private readonly GuestXenStore xs;
    private readonly ulong sharedInfo;
    private uint reqProdPvt;
    private uint rspCons;
    private ulong nextId = 1;

    public TestBlkFront(GuestContext g, uint devid = 51712)
    {
        G = g;
        xs = new GuestXenStore(g);
        sharedInfo = GuestEvents.MapSharedInfo(g);
        GrantTable = GuestGrants.MapFrame(g);
        FrontendPath = Read($"device/vbd/{devid}/backend") is null
            ? throw new InvalidOperationException($"no vbd {devid} in this domain's XenStore directory")
            : $"device/vbd/{devid}";
        BackendPath = Read(FrontendPath + "/backend")!;
    }

    public GuestContext G { get; }

    public ulong GrantTable { get; }

    /// <summary>The frontend directory, relative to the domain's home.</summary>
    public string FrontendPath { get; }

    public string BackendPath { get; }

    /// <summary>The event channel port of the current connection.</summary>
    public uint Port { get; private set; }

    public int SectorSize { get; private set; } = 512;

    public ulong Sectors { get; private set; }

    public int RingSize => Ring.RING_SIZE_blkif;

    public ulong RingAddress => G.Scratch + 0x10000;

    public static ulong PageAddress(GuestContext g, int page) => g.Scratch + 0x20000 + ((ulong)page * 4096);

    public ulong DataAddress(int page) => PageAddress(G, page);

    public static uint DataRef(int page) => FirstDataRef + (uint)page;

    // ---- XenStore ----

    public string? Read(string path) => xs.ReadString(path);

    public void WriteFrontend(string key, string value) => xs.WriteString($"{FrontendPath}/{key}", value);

    public string? ReadBackend(string key) => Read($"{BackendPath}/{key}");

    public void SwitchState(XenbusState s) => WriteFrontend("state", ((int)s).ToString(CultureInfo.InvariantCulture));

    /// <summary>Waits (watch events, SCHEDOP_poll) until the backend's state satisfies <paramref name="done"/>; returns it.</summary>
    public XenbusState WaitBackend(Func<XenbusState, bool> done) => xs.WaitForState(BackendPath + "/state", done);

    public void WaitBackend(XenbusState s) => WaitBackend(x => x == s);

    /// <summary>
    /// The handshake (blkfront's talk_to_blkback): wait for InitWait, set up a fresh ring page and
    /// port, publish ring-ref, event-channel and protocol (unless null), Initialised; then wait
    /// for the backend to be Connected (true) or to give up (Closing/Closed: false).
    /// </summary>
    public bool Connect(string? protocol = Protocols.XEN_IO_PROTO_ABI_X86_64, Action<TestBlkFront>? beforeInitialised = null)
    {
        WaitBackend(XenbusState.InitWait);
        InitRing();
        GuestGrants.GrantV1(G, GrantTable, RingRef, 0, RingAddress >> 12);
        Port = AllocUnbound();
        WriteFrontend("ring-ref", RingRef.ToString(CultureInfo.InvariantCulture));
        WriteFrontend("event-channel", Port.ToString(CultureInfo.InvariantCulture));
        if (protocol is not null)
        {
            WriteFrontend("protocol", protocol);
        }

        beforeInitialised?.Invoke(this);
        SwitchState(XenbusState.Initialised);
        var s = WaitBackend(x => x is XenbusState.Connected or XenbusState.Closing or XenbusState.Closed);
        if (s != XenbusState.Connected)
        {
            return false;
        }

        Sectors = ulong.Parse(ReadBackend("sectors")!, CultureInfo.InvariantCulture);
        SectorSize = int.Parse(ReadBackend("sector-size")!, CultureInfo.InvariantCulture);
        SwitchState(XenbusState.Connected);
        return true;
    }

    /// <summary>Closing, wait for the backend's Closing, Closed, wait for its Closed (blkfront's disconnect).</summary>
    public void Close()
    {
        SwitchState(XenbusState.Closing);
        WaitBackend(XenbusState.Closing);
        SwitchState(XenbusState.Closed);
        WaitBackend(XenbusState.Closed);
        Hypercall(EventChannel.EVTCHNOP_close, new evtchn_close { port = Port });
    }

    /// <summary>Starts over after Close: Initialising, then <see cref="Connect"/>.</summary>
    public bool Reconnect()
    {
        SwitchState(XenbusState.Initialising);
        return Connect();
    }

    private uint AllocUnbound()
    {
        var arg = G.Scratch + 0xC00;
        G.Cpu.Memory.Write(arg, new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = 0 });
        var rc = G.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_alloc_unbound, arg);
        return rc == 0 ? G.Cpu.Memory.Read<evtchn_alloc_unbound>(arg).port : throw new InvalidOperationException($"EVTCHNOP_alloc_unbound = {rc}");
    }

    private long Hypercall<T>(int cmd, T arg)
        where T : unmanaged
    {
        var at = G.Scratch + 0xC00;
        G.Cpu.Memory.Write(at, arg);
        return G.Hypercall(Xen.__HYPERVISOR_event_channel_op, (ulong)cmd, at);
    }

    // ---- data pages ----

    /// <summary>Grants data page <paramref name="page"/> to domain 0 (ref <see cref="DataRef"/>) and returns the ref.</summary>
    public uint GrantPage(int page, bool readOnly = false)
    {
        GuestGrants.GrantV1(G, GrantTable, DataRef(page), 0, DataAddress(page) >> 12, readOnly);
        return DataRef(page);
    }

    public void FillPage(int page, ReadOnlySpan<byte> bytes) => G.Cpu.Memory.Write(DataAddress(page), bytes);

    public byte[] ReadPage(int page)
    {
        var b = new byte[4096];
        G.Cpu.Memory.Read(DataAddress(page), b);
        return b;
    }

    // ---- ring ----

    /// <summary>SHARED_RING_INIT + FRONT_RING_INIT over the ring page.</summary>
    public void InitRing()
    {
        G.Cpu.Memory.Write(RingAddress, new byte[4096]);
        G.Cpu.Memory.WriteVolatile(RingAddress + 4, 4, 1); // req_event
        G.Cpu.Memory.WriteVolatile(RingAddress + 12, 4, 1); // rsp_event
        reqProdPvt = 0;
        rspCons = 0;
    }

    public ulong NextId() => nextId++;

    /// <summary>Writes a request into the next free slot (not yet published).</summary>
    public void Queue(in blkif_request request)
    {
        var slot = RingAddress + 64 + ((reqProdPvt & (uint)(RingSize - 1)) * EntrySize);
        G.Cpu.Memory.Write(slot, request);
        reqProdPvt++;
    }

    /// <summary>A discard request, written over a request slot.</summary>
    public void Queue(in blkif_request_discard request)
    {
        var slot = RingAddress + 64 + ((reqProdPvt & (uint)(RingSize - 1)) * EntrySize);
        G.Cpu.Memory.Write(slot, new byte[EntrySize]);
        G.Cpu.Memory.Write(slot, request);
        reqProdPvt++;
    }

    /// <summary>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, then EVTCHNOP_send if asked.</summary>
    public void Push()
    {
        var old = (uint)G.Cpu.Memory.ReadVolatile(RingAddress, 4);
        G.Cpu.Memory.WriteVolatile(RingAddress, 4, reqProdPvt);
        var reqEvent = (uint)G.Cpu.Memory.ReadVolatile(RingAddress + 4, 4);
        if (unchecked(reqProdPvt - reqEvent) < unchecked(reqProdPvt - old))
        {
            Notify();
        }
    }

    /// <summary>Writes req_prod with any value (hostile tests).</summary>
    public void SetRequestProducer(uint value) => G.Cpu.Memory.WriteVolatile(RingAddress, 4, value);

    public void Notify()
    {
        var rc = Hypercall(EventChannel.EVTCHNOP_send, new evtchn_send { port = Port });
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_send({Port}) = {rc}");
        }
    }

    /// <summary>Takes a published response, if any.</summary>
    public bool TryTakeResponse(out blkif_response response)
    {
        var rspProd = (uint)G.Cpu.Memory.ReadVolatile(RingAddress + 8, 4);
        if (rspProd == rspCons)
        {
            response = default;
            return false;
        }

        response = G.Cpu.Memory.Read<blkif_response>(RingAddress + 64 + ((rspCons & (uint)(RingSize - 1)) * EntrySize));
        rspCons++;
        return true;
    }

    /// <summary>Waits for <paramref name="count"/> responses (RING_FINAL_CHECK_FOR_RESPONSES, then SCHEDOP_poll).</summary>
    public List<blkif_response> WaitResponses(int count)
    {
        var got = new List<blkif_response>(count);
        while (true)
        {
            ClearPending();
            while (got.Count < count && TryTakeResponse(out var r))
            {
                got.Add(r);
            }

            if (got.Count == count)
            {
                return got;
            }

            G.Cpu.Memory.WriteVolatile(RingAddress + 12, 4, rspCons + 1); // rsp_event
            if ((uint)G.Cpu.Memory.ReadVolatile(RingAddress + 8, 4) != rspCons)
            {
                continue;
            }

            Poll();
        }
    }

    /// <summary>Sends one request and waits for its response.</summary>
    public blkif_response Call(in blkif_request request)
    {
        Queue(request);
        Push();
        var r = WaitResponses(1)[0];
        return r.id == request.id ? r : throw new InvalidOperationException($"response to {r.id}, expected {request.id}");
    }

    public blkif_response Call(in blkif_request_discard request)
    {
        Queue(request);
        Push();
        var r = WaitResponses(1)[0];
        return r.id == request.id ? r : throw new InvalidOperationException($"response to {r.id}, expected {request.id}");
    }

    private void ClearPending() => G.Cpu.Memory.And64(sharedInfo + PendingOffset + ((Port / 64) * 8), ~(1UL << (int)(Port % 64)));

    private void Poll()
    {
        var ports = G.Scratch + 0xCC0;
        G.Cpu.Memory.Write(ports, Port);
        G.Cpu.Memory.Write(G.Scratch + 0xC80, new sched_poll { ports = ports, nr_ports = 1, timeout = 0 });
        G.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, G.Scratch + 0xC80);
    }

    // ---- requests ----

    /// <summary>A read or write of whole pages: <paramref name="pages"/> data pages, 4096/sector-size sectors each, from <paramref name="sector"/>.</summary>
    public blkif_request PageRequest(byte op, ulong sector, int firstPage, int pages)
    {
        var r = new blkif_request { operation = op, nr_segments = (byte)pages, handle = 0, id = NextId(), sector_number = sector };
        var last = (byte)((4096 / SectorSize) - 1);
        for (var i = 0; i < pages; i++)
        {
            r.seg[i] = new blkif_request_segment { gref = DataRef(firstPage + i), first_sect = 0, last_sect = last };
        }

        return r;
    }

    /// <summary>Reads <paramref name="pages"/> pages' worth of sectors into data pages from <paramref name="firstPage"/> (granted writable) and returns the bytes.</summary>
    public (short Status, byte[] Data) ReadPages(ulong sector, int firstPage, int pages)
    {
        for (var i = 0; i < pages; i++)
        {
            GrantPage(firstPage + i);
        }

        var r = Call(PageRequest((byte)Blkif.BLKIF_OP_READ, sector, firstPage, pages));
        var data = new byte[pages * 4096];
        for (var i = 0; i < pages; i++)
        {
            ReadPage(firstPage + i).CopyTo(data, i * 4096);
        }

        return (r.status, data);
    }

    /// <summary>Writes <paramref name="data"/> (whole pages) at <paramref name="sector"/> through data pages from <paramref name="firstPage"/> (granted read-only).</summary>
    public short WritePages(ulong sector, int firstPage, ReadOnlySpan<byte> data)
    {
        var pages = data.Length / 4096;
        for (var i = 0; i < pages; i++)
        {
            FillPage(firstPage + i, data.Slice(i * 4096, 4096));
            GrantPage(firstPage + i, readOnly: true);
        }

        return Call(PageRequest((byte)Blkif.BLKIF_OP_WRITE, sector, firstPage, pages)).status;
    }

    public short Flush() => Call(new blkif_request { operation = Blkif.BLKIF_OP_FLUSH_DISKCACHE, id = NextId() }).status;

    public short Discard(ulong sector, ulong count, byte flag = 0) =>
        Call(new blkif_request_discard { operation = Blkif.BLKIF_OP_DISCARD, flag = flag, id = NextId(), sector_number = sector, nr_sectors = count }).status;
}
