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
/// anything). Responses are awaited with SCHEDOP_poll on the port. It can also ask for several
/// queues (one ring page and port each, under queue-N), write feature-persistent = 1 (its grants
/// stay the same, as blkfront's persistent grants do), and send indirect requests whose segments
/// it writes into granted indirect pages. Methods with a queue argument work on that queue's ring.
/// </summary>
public sealed class TestBlkFront
{
    /// <summary>Grant ref of the ring page (queue q's is <c>RingRef + q</c>).</summary>
    public const uint RingRef = 8;

    /// <summary>The most queues this frontend can ask for.</summary>
    public const int MaxQueues = 4;

    /// <summary>Grant ref of data page 0; page i is <c>FirstDataRef + i</c>.</summary>
    public const uint FirstDataRef = 16;

    /// <summary>Data pages available: enough for a full ring of 11-segment requests, or an indirect request of 256.</summary>
    public const int DataPages = Ring.RING_SIZE_blkif * Blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST;

    /// <summary>Grant ref of indirect page 0; page i is <c>FirstIndirectRef + i</c>.</summary>
    public const uint FirstIndirectRef = 400;

    /// <summary>Indirect pages available (BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).</summary>
    public const int IndirectPages = Blkif.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;

    /// <summary>blkif_request_segment entries in an indirect page.</summary>
    public const int SegmentsPerIndirectPage = 4096 / 8;

    private const int EntrySize = 112; // sizeof(union blkif_sring_entry)
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

    private readonly GuestXenStore xs;
    private readonly ulong sharedInfo;
    private QueueState[] queues = [new()];
    private ulong nextId = 1;

    private sealed class QueueState
    {
        public uint Port;
        public uint ReqProdPvt;
        public uint RspCons;
    }

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

    /// <summary>The event channel port of the current connection (queue 0's).</summary>
    public uint Port => queues[0].Port;

    /// <summary>Queue <paramref name="q"/>'s event channel port.</summary>
    public uint PortOf(int q) => queues[q].Port;

    /// <summary>Queues of the current connection.</summary>
    public int Queues => queues.Length;

    public int SectorSize { get; private set; } = 512;

    public ulong Sectors { get; private set; }

    public int RingSize => Ring.RING_SIZE_blkif;

    public ulong RingAddress => RingAddressOf(0);

    public ulong RingAddressOf(int q) => G.Scratch + 0x10000 + ((ulong)q * 4096);

    public ulong IndirectAddress(int page) => G.Scratch + 0x14000 + ((ulong)page * 4096);

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
    /// port per queue, publish ring-ref and event-channel (under queue-N with several queues, with
    /// multi-queue-num-queues), protocol (unless null) and feature-persistent = 1 if asked,
    /// Initialised; then wait for the backend to be Connected (true) or to give up (Closing/Closed: false).
    /// </summary>
    public bool Connect(string? protocol = Protocols.XEN_IO_PROTO_ABI_X86_64, Action<TestBlkFront>? beforeInitialised = null, int queues = 1, bool persistent = false)
    {
        if (queues is < 1 or > MaxQueues)
        {
            throw new ArgumentOutOfRangeException(nameof(queues), $"the test frontend has ring pages for 1 to {MaxQueues} queues");
        }

        WaitBackend(XenbusState.InitWait);
        this.queues = [.. Enumerable.Range(0, queues).Select(_ => new QueueState())];
        for (var q = 0; q < queues; q++)
        {
            InitRing(q);
            GuestGrants.GrantV1(G, GrantTable, RingRef + (uint)q, 0, RingAddressOf(q) >> 12);
            this.queues[q].Port = AllocUnbound();
            var dir = queues == 1 ? "" : $"queue-{q}/";
            WriteFrontend(dir + "ring-ref", (RingRef + (uint)q).ToString(CultureInfo.InvariantCulture));
            WriteFrontend(dir + "event-channel", this.queues[q].Port.ToString(CultureInfo.InvariantCulture));
        }

        if (queues > 1)
        {
            WriteFrontend("multi-queue-num-queues", queues.ToString(CultureInfo.InvariantCulture));
        }

        if (persistent)
        {
            WriteFrontend("feature-persistent", "1");
        }

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
        foreach (var q in queues)
        {
            Hypercall(EventChannel.EVTCHNOP_close, new evtchn_close { port = q.Port });
        }
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

    /// <summary>SHARED_RING_INIT + FRONT_RING_INIT over queue <paramref name="q"/>'s ring page.</summary>
    public void InitRing(int q = 0)
    {
        var ring = RingAddressOf(q);
        G.Cpu.Memory.Write(ring, new byte[4096]);
        G.Cpu.Memory.WriteVolatile(ring + 4, 4, 1); // req_event
        G.Cpu.Memory.WriteVolatile(ring + 12, 4, 1); // rsp_event
        queues[q].ReqProdPvt = 0;
        queues[q].RspCons = 0;
    }

    public ulong NextId() => nextId++;

    private ulong NextSlot(int q)
    {
        var slot = RingAddressOf(q) + 64 + ((queues[q].ReqProdPvt & (uint)(RingSize - 1)) * EntrySize);
        queues[q].ReqProdPvt++;
        return slot;
    }

    /// <summary>Writes a request into the next free slot of queue <paramref name="q"/> (not yet published).</summary>
    public void Queue(in blkif_request request, int q = 0) => G.Cpu.Memory.Write(NextSlot(q), request);

    /// <summary>A discard request, written over a request slot.</summary>
    public void Queue(in blkif_request_discard request, int q = 0)
    {
        var slot = NextSlot(q);
        G.Cpu.Memory.Write(slot, new byte[EntrySize]);
        G.Cpu.Memory.Write(slot, request);
    }

    /// <summary>An indirect request, written over a request slot (cleared first; nothing allocated).</summary>
    public void Queue(in blkif_request_indirect request, int q = 0)
    {
        var slot = NextSlot(q);
        G.Cpu.Memory.Write(slot, default(blkif_request));
        G.Cpu.Memory.Write(slot, request);
    }

    /// <summary>RING_PUSH_REQUESTS_AND_CHECK_NOTIFY on queue <paramref name="q"/>, then EVTCHNOP_send if asked.</summary>
    public void Push(int q = 0)
    {
        var ring = RingAddressOf(q);
        var prod = queues[q].ReqProdPvt;
        var old = (uint)G.Cpu.Memory.ReadVolatile(ring, 4);
        G.Cpu.Memory.WriteVolatile(ring, 4, prod);
        var reqEvent = (uint)G.Cpu.Memory.ReadVolatile(ring + 4, 4);
        if (unchecked(prod - reqEvent) < unchecked(prod - old))
        {
            Notify(q);
        }
    }

    /// <summary>Writes req_prod with any value (hostile tests).</summary>
    public void SetRequestProducer(uint value, int q = 0) => G.Cpu.Memory.WriteVolatile(RingAddressOf(q), 4, value);

    public void Notify(int q = 0)
    {
        var port = queues[q].Port;
        var rc = Hypercall(EventChannel.EVTCHNOP_send, new evtchn_send { port = port });
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_send({port}) = {rc}");
        }
    }

    /// <summary>Takes a published response of queue <paramref name="q"/>, if any.</summary>
    public bool TryTakeResponse(out blkif_response response, int q = 0)
    {
        var ring = RingAddressOf(q);
        var state = queues[q];
        var rspProd = (uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4);
        if (rspProd == state.RspCons)
        {
            response = default;
            return false;
        }

        response = G.Cpu.Memory.Read<blkif_response>(ring + 64 + ((state.RspCons & (uint)(RingSize - 1)) * EntrySize));
        state.RspCons++;
        return true;
    }

    /// <summary>Waits for <paramref name="count"/> responses on queue <paramref name="q"/> (RING_FINAL_CHECK_FOR_RESPONSES, then SCHEDOP_poll).</summary>
    public List<blkif_response> WaitResponses(int count, int q = 0)
    {
        var ring = RingAddressOf(q);
        var state = queues[q];
        var got = new List<blkif_response>(count);
        while (true)
        {
            ClearPending(state.Port);
            while (got.Count < count && TryTakeResponse(out var r, q))
            {
                got.Add(r);
            }

            if (got.Count == count)
            {
                return got;
            }

            G.Cpu.Memory.WriteVolatile(ring + 12, 4, state.RspCons + 1); // rsp_event
            if ((uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4) != state.RspCons)
            {
                continue;
            }

            Poll(state.Port);
        }
    }

    /// <summary>Sends one request on queue <paramref name="q"/> and waits for its response.</summary>
    public blkif_response Call(in blkif_request request, int q = 0)
    {
        Queue(request, q);
        return Answer(request.id, q);
    }

    public blkif_response Call(in blkif_request_discard request, int q = 0)
    {
        Queue(request, q);
        return Answer(request.id, q);
    }

    public blkif_response Call(in blkif_request_indirect request, int q = 0)
    {
        Queue(request, q);
        return Answer(request.id, q);
    }

    private blkif_response Answer(ulong id, int q)
    {
        Push(q);
        var r = WaitResponse(q);
        return r.id == id ? r : throw new InvalidOperationException($"response to {r.id}, expected {id}");
    }

    /// <summary>Waits for the next response on queue <paramref name="q"/> (as <see cref="WaitResponses"/>, allocating nothing).</summary>
    public blkif_response WaitResponse(int q = 0)
    {
        var ring = RingAddressOf(q);
        var state = queues[q];
        while (true)
        {
            ClearPending(state.Port);
            if (TryTakeResponse(out var r, q))
            {
                return r;
            }

            G.Cpu.Memory.WriteVolatile(ring + 12, 4, state.RspCons + 1); // rsp_event
            if ((uint)G.Cpu.Memory.ReadVolatile(ring + 8, 4) == state.RspCons)
            {
                Poll(state.Port);
            }
        }
    }

    private void ClearPending(uint port) => G.Cpu.Memory.And64(sharedInfo + PendingOffset + ((port / 64) * 8), ~(1UL << (int)(port % 64)));

    private void Poll(uint port)
    {
        var ports = G.Scratch + 0xCC0;
        G.Cpu.Memory.Write(ports, port);
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
    public (short Status, byte[] Data) ReadPages(ulong sector, int firstPage, int pages, int q = 0)
    {
        for (var i = 0; i < pages; i++)
        {
            GrantPage(firstPage + i);
        }

        var r = Call(PageRequest((byte)Blkif.BLKIF_OP_READ, sector, firstPage, pages), q);
        var data = new byte[pages * 4096];
        for (var i = 0; i < pages; i++)
        {
            ReadPage(firstPage + i).CopyTo(data, i * 4096);
        }

        return (r.status, data);
    }

    /// <summary>Writes <paramref name="data"/> (whole pages) at <paramref name="sector"/> through data pages from <paramref name="firstPage"/> (granted read-only unless asked).</summary>
    public short WritePages(ulong sector, int firstPage, ReadOnlySpan<byte> data, int q = 0, bool readOnlyGrants = true)
    {
        var pages = data.Length / 4096;
        for (var i = 0; i < pages; i++)
        {
            FillPage(firstPage + i, data.Slice(i * 4096, 4096));
            GrantPage(firstPage + i, readOnly: readOnlyGrants);
        }

        return Call(PageRequest((byte)Blkif.BLKIF_OP_WRITE, sector, firstPage, pages), q).status;
    }

    public short Flush() => Call(new blkif_request { operation = Blkif.BLKIF_OP_FLUSH_DISKCACHE, id = NextId() }).status;

    // ---- indirect requests ----

    /// <summary>Grants indirect page <paramref name="page"/> to domain 0 (ref <see cref="IndirectRef"/>) and returns the ref.</summary>
    public uint GrantIndirectPage(int page, bool readOnly = false)
    {
        GuestGrants.GrantV1(G, GrantTable, IndirectRef(page), 0, IndirectAddress(page) >> 12, readOnly);
        return IndirectRef(page);
    }

    public static uint IndirectRef(int page) => FirstIndirectRef + (uint)page;

    /// <summary>Writes <paramref name="segments"/> into the indirect pages from <paramref name="firstIndirectPage"/> (512 to a page).</summary>
    public void WriteIndirectSegments(ReadOnlySpan<blkif_request_segment> segments, int firstIndirectPage = 0)
    {
        for (var i = 0; i < segments.Length; i++)
        {
            var page = firstIndirectPage + (i / SegmentsPerIndirectPage);
            G.Cpu.Memory.Write(IndirectAddress(page) + ((ulong)(i % SegmentsPerIndirectPage) * 8), segments[i]);
        }
    }

    /// <summary>
    /// A <c>BLKIF_OP_INDIRECT</c> request of <paramref name="op"/> over <paramref name="pages"/> whole
    /// data pages from <paramref name="firstPage"/>: the segments written into indirect pages from
    /// <paramref name="firstIndirectPage"/>, those pages granted and named in <c>indirect_grefs</c>.
    /// </summary>
    public blkif_request_indirect IndirectRequest(byte op, ulong sector, int firstPage, int pages, int firstIndirectPage = 0)
    {
        var last = (byte)((4096 / SectorSize) - 1);
        var segments = new blkif_request_segment[pages];
        for (var i = 0; i < pages; i++)
        {
            segments[i] = new blkif_request_segment { gref = DataRef(firstPage + i), first_sect = 0, last_sect = last };
        }

        WriteIndirectSegments(segments, firstIndirectPage);
        var indirectPages = (pages + SegmentsPerIndirectPage - 1) / SegmentsPerIndirectPage;
        var r = new blkif_request_indirect
        {
            operation = Blkif.BLKIF_OP_INDIRECT,
            indirect_op = op,
            nr_segments = (ushort)pages,
            id = NextId(),
            sector_number = sector,
        };
        for (var p = 0; p < indirectPages; p++)
        {
            SetIndirectGref(ref r, p, GrantIndirectPage(firstIndirectPage + p));
        }

        return r;
    }

    public static unsafe void SetIndirectGref(ref blkif_request_indirect r, int page, uint gref) => r.indirect_grefs[page] = gref;

    /// <summary>Reads <paramref name="pages"/> pages' worth of sectors with one indirect request into data pages from <paramref name="firstPage"/>.</summary>
    public (short Status, byte Operation, byte[] Data) ReadPagesIndirect(ulong sector, int firstPage, int pages, int q = 0)
    {
        for (var i = 0; i < pages; i++)
        {
            GrantPage(firstPage + i);
        }

        var r = Call(IndirectRequest((byte)Blkif.BLKIF_OP_READ, sector, firstPage, pages), q);
        var data = new byte[pages * 4096];
        for (var i = 0; i < pages; i++)
        {
            ReadPage(firstPage + i).CopyTo(data, i * 4096);
        }

        return (r.status, r.operation, data);
    }

    /// <summary>Writes <paramref name="data"/> (whole pages) at <paramref name="sector"/> with one indirect request through data pages from <paramref name="firstPage"/>.</summary>
    public (short Status, byte Operation) WritePagesIndirect(ulong sector, int firstPage, ReadOnlySpan<byte> data, bool readOnlyGrants = true, int q = 0)
    {
        var pages = data.Length / 4096;
        for (var i = 0; i < pages; i++)
        {
            FillPage(firstPage + i, data.Slice(i * 4096, 4096));
            GrantPage(firstPage + i, readOnly: readOnlyGrants);
        }

        var r = Call(IndirectRequest((byte)Blkif.BLKIF_OP_WRITE, sector, firstPage, pages), q);
        return (r.status, r.operation);
    }

    public short Discard(ulong sector, ulong count, byte flag = 0) =>
        Call(new blkif_request_discard { operation = Blkif.BLKIF_OP_DISCARD, flag = flag, id = NextId(), sector_number = sector, nr_sectors = count }).status;
}
