using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>
/// The guest's XenStore connection (a kernel's xenbus_comms + xenbus_xs): the
/// <c>xenstore_domain_interface</c> page at <c>start_info.store_mfn</c> and the already bound
/// port <c>start_info.store_evtchn</c>. Requests are <c>xsd_sockmsg</c> headers plus payload
/// written into <c>req</c>; replies and <c>XS_WATCH_EVENT</c>s arrive interleaved in
/// <c>rsp</c> and are matched by <c>req_id</c>. Both rings are 1024 bytes with free-running
/// indices; a message may be longer than a ring and is streamed. Watch callbacks run as deferred
/// work (outside interrupt context) and may issue requests, but must not wait for further watch
/// events themselves.
/// </summary>
public sealed class XenBusClient : XenStoreAccess
{
    private const int HeaderSize = 16;
    private const uint RingSize = XsWire.XENSTORE_RING_SIZE;
    private static readonly ulong ReqOffset = Layout.Off<xenstore_domain_interface>("req");
    private static readonly ulong RspOffset = Layout.Off<xenstore_domain_interface>("rsp");
    private static readonly ulong ReqCons = Layout.Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_cons));
    private static readonly ulong ReqProd = Layout.Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_prod));
    private static readonly ulong RspCons = Layout.Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_cons));
    private static readonly ulong RspProd = Layout.Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_prod));

    private readonly XenGuest _guest;
    private readonly Dictionary<uint, (xsd_sockmsg_type Type, byte[] Payload)> _replies = [];
    private readonly Queue<(string Path, string Token)> _events = new();
    private readonly Dictionary<string, Action<string>> _watches = new(StringComparer.Ordinal);
    private readonly List<byte> _rx = [];
    private readonly Lock _lock = new();
    private readonly GuestByteRing _req;
    private readonly GuestByteRing _rsp;
    private readonly byte[] _chunk = new byte[RingSize];
    private uint _nextReqId = 1;
    private int _nextToken;
    private bool _draining;
    private bool _dispatchQueued;

    private XenBusClient(XenGuest guest, ulong page, uint port)
        : base(null, 0)
    {
        _guest = guest;
        Page = page;
        Port = port;
        _req = new GuestByteRing(guest.Memory, page + ReqOffset, RingSize, page + ReqCons, page + ReqProd, "xenstore req");
        _rsp = new GuestByteRing(guest.Memory, page + RspOffset, RingSize, page + RspCons, page + RspProd, "xenstore rsp");
    }

    /// <summary>The guest this connection belongs to.</summary>
    public XenGuest Guest => _guest;

    /// <summary>Guest address of the xenstore ring page.</summary>
    public ulong Page { get; }

    /// <summary>The store's event channel.</summary>
    public uint Port { get; }

    /// <summary>This domain's id, read from the relative node "domid" at connect.</summary>
    public ushort DomainId { get; private set; }

    /// <summary>Connects to the store through start_info's page and port, and reads "domid".</summary>
    public static XenBusClient Connect(XenGuest guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var pfn = guest.Pages.PfnOf(guest.Info.StoreFrame)
            ?? throw new InvalidOperationException($"start_info.store_mfn 0x{guest.Info.StoreFrame:x} is not one of the guest's frames");
        var client = new XenBusClient(guest, pfn << PageAllocator.PageShift, guest.Info.StoreEvtchn);
        XenGuest.Check(guest.Events.Attach(client.Port, _ => client.OnStoreEvent()), $"unmask of the store port {client.Port}");
        XenGuest.Check(client.ReadInt("domid", out var domid), "XS_READ domid");
        client.DomainId = (ushort)domid;
        return client;
    }

    // ---------------------------------------------------------------- requests

    /// <summary>
    /// Sends one request (strings NUL-terminated; <paramref name="rawTail"/> appended without a
    /// NUL, as XS_WRITE's value) and waits for its reply. Returns 0, or the errno of an XS_ERROR reply.
    /// </summary>
    internal long Request(xsd_sockmsg_type type, uint tx, string[] args, string? rawTail, out byte[] payload)
    {
        var body = new List<byte>();
        foreach (var a in args)
        {
            body.AddRange(Encoding.UTF8.GetBytes(a));
            body.Add(0);
        }

        if (rawTail is not null)
        {
            body.AddRange(Encoding.UTF8.GetBytes(rawTail));
        }

        if (body.Count > XsWire.XENSTORE_PAYLOAD_MAX)
        {
            payload = [];
            return -(long)Errno.E2BIG;
        }

        uint id;
        var message = new byte[HeaderSize + body.Count];
        lock (_lock)
        {
            id = _nextReqId++;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), id);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), tx);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(12), (uint)body.Count);
        body.CopyTo(message, HeaderSize);
        Send(message);

        (xsd_sockmsg_type Type, byte[] Payload) reply = (xsd_sockmsg_type.XS_INVALID, []);
        _guest.WaitFor(() =>
        {
            Drain();
            lock (_lock)
            {
                return _replies.ContainsKey(id);
            }
        });
        lock (_lock)
        {
            _replies.Remove(id, out reply);
        }

        payload = reply.Payload;
        if (reply.Type == xsd_sockmsg_type.XS_ERROR)
        {
            var name = Text(payload);
            return Enum.TryParse<Errno>(name, out var e) ? -(long)e : -(long)Errno.EIO;
        }

        return 0;
    }

    /// <summary>Writes a whole message into <c>req</c>, waiting for space as the store consumes.</summary>
    private void Send(byte[] message)
    {
        var off = 0;
        lock (_lock)
        {
            while (off < message.Length)
            {
                var n = _req.Write(message.AsSpan(off));
                if (n > 0)
                {
                    off += n;
                    continue;
                }

                Notify();
                _guest.WaitFor(() => _req.Used < RingSize);
            }
        }

        Notify();
    }

    private void Notify() => _guest.Events.Send(Port);

    /// <summary>Copies whatever <c>rsp</c> holds into the reassembly buffer and parses complete messages.</summary>
    private void Drain()
    {
        lock (_lock)
        {
            if (_draining)
            {
                return;
            }

            _draining = true;
            try
            {
                var consumed = false;
                while (true)
                {
                    var n = _rsp.Read(_chunk);
                    if (n == 0)
                    {
                        break;
                    }

                    _rx.AddRange(_chunk.AsSpan(0, n));
                    consumed = true;
                }

                Parse();
                if (consumed)
                {
                    Notify(); // space freed: the store may have more to write
                }
            }
            finally
            {
                _draining = false;
            }
        }
    }

    private void Parse()
    {
        Span<byte> header = stackalloc byte[HeaderSize];
        while (_rx.Count >= HeaderSize)
        {
            for (var i = 0; i < HeaderSize; i++)
            {
                header[i] = _rx[i];
            }

            var type = (xsd_sockmsg_type)BinaryPrimitives.ReadUInt32LittleEndian(header);
            var reqId = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
            var len = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
            if (len > XsWire.XENSTORE_PAYLOAD_MAX)
            {
                throw new InvalidOperationException($"xenstore sent a {len}-byte payload, more than XENSTORE_PAYLOAD_MAX");
            }

            if (_rx.Count < HeaderSize + (int)len)
            {
                return;
            }

            var payload = _rx.GetRange(HeaderSize, (int)len).ToArray();
            _rx.RemoveRange(0, HeaderSize + (int)len);
            if (type == xsd_sockmsg_type.XS_WATCH_EVENT)
            {
                var parts = Strings(payload);
                if (parts.Length >= 2)
                {
                    _events.Enqueue((parts[0], parts[1]));
                    if (!_dispatchQueued)
                    {
                        _dispatchQueued = true;
                        _guest.Defer(DispatchWatches);
                    }
                }
            }
            else
            {
                _replies[reqId] = (type, payload);
            }
        }
    }

    /// <summary>The store port's handler (interrupt context): reading the ring is left to deferred work.</summary>
    private void OnStoreEvent() => _guest.Defer(Drain);

    // ---------------------------------------------------------------- watches

    /// <summary>
    /// XS_WATCH with a fresh token: <paramref name="callback"/> gets the changed path for every
    /// change at or below <paramref name="path"/> (and once at registration, as xenstored does).
    /// Returns 0 and the token for <see cref="Unwatch"/>.
    /// </summary>
    public long Watch(string path, Action<string> callback, out string token)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (_lock)
        {
            token = "w" + (++_nextToken).ToString(CultureInfo.InvariantCulture);
            _watches[token] = callback;
        }

        var rc = Request(xsd_sockmsg_type.XS_WATCH, 0, [path, token], null, out _);
        if (rc < 0)
        {
            lock (_lock)
            {
                _watches.Remove(token);
            }
        }

        return rc;
    }

    /// <summary>XS_UNWATCH; events still queued for the token are dropped.</summary>
    public long Unwatch(string path, string token)
    {
        lock (_lock)
        {
            _watches.Remove(token);
        }

        return Request(xsd_sockmsg_type.XS_UNWATCH, 0, [path, token], null, out _);
    }

    /// <summary>Watch events received and not yet dispatched.</summary>
    public int PendingWatchEvents
    {
        get
        {
            lock (_lock)
            {
                return _events.Count;
            }
        }
    }

    private void DispatchWatches()
    {
        while (true)
        {
            Action<string>? callback;
            (string Path, string Token) e;
            lock (_lock)
            {
                if (!_events.TryDequeue(out e))
                {
                    _dispatchQueued = false;
                    return;
                }

                _watches.TryGetValue(e.Token, out callback);
            }

            callback?.Invoke(e.Path);
        }
    }

    // ---------------------------------------------------------------- transactions

    /// <summary>XS_TRANSACTION_START.</summary>
    public long TransactionStart(out XenBusTransaction transaction)
    {
        var rc = Request(xsd_sockmsg_type.XS_TRANSACTION_START, 0, [""], null, out var reply);
        transaction = new XenBusTransaction(this, rc < 0 ? 0 : uint.Parse(Text(reply), CultureInfo.InvariantCulture));
        return rc;
    }

    /// <summary>
    /// Runs <paramref name="body"/> in a transaction and commits, starting over while the commit
    /// answers -EAGAIN (another writer got there first), at most <paramref name="attempts"/> times.
    /// A negative result from the body aborts and is returned.
    /// </summary>
    public long Transaction(Func<XenBusTransaction, long> body, int attempts = 32)
    {
        ArgumentNullException.ThrowIfNull(body);
        var rc = -(long)Errno.EAGAIN;
        for (var i = 0; i < attempts && rc == -(long)Errno.EAGAIN; i++)
        {
            rc = TransactionStart(out var tx);
            if (rc < 0)
            {
                return rc;
            }

            var result = body(tx);
            if (result < 0)
            {
                tx.End(commit: false);
                return result;
            }

            rc = tx.End(commit: true);
        }

        return rc;
    }

    // ---------------------------------------------------------------- devices

    /// <summary>The devices the toolstack gave this domain: <c>device/&lt;type&gt;/&lt;id&gt;</c>.</summary>
    public IReadOnlyList<XenBusDevice> EnumerateDevices()
    {
        var devices = new List<XenBusDevice>();
        if (Directory("device", out var types) < 0)
        {
            return devices;
        }

        foreach (var type in types)
        {
            if (Directory($"device/{type}", out var ids) < 0)
            {
                continue;
            }

            foreach (var id in ids)
            {
                devices.Add(new XenBusDevice(this, type, id));
            }
        }

        return devices;
    }

    internal static string Text(byte[] payload)
    {
        var end = Array.IndexOf(payload, (byte)0);
        return Encoding.UTF8.GetString(payload, 0, end < 0 ? payload.Length : end);
    }

    internal static string[] Strings(byte[] payload)
    {
        var list = new List<string>();
        var start = 0;
        for (var i = 0; i < payload.Length; i++)
        {
            if (payload[i] == 0)
            {
                list.Add(Encoding.UTF8.GetString(payload, start, i - start));
                start = i + 1;
            }
        }

        if (start < payload.Length)
        {
            list.Add(Encoding.UTF8.GetString(payload, start, payload.Length - start));
        }

        return [.. list];
    }
}
