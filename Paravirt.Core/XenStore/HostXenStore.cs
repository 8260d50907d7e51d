using System.Globalization;
using System.Threading.Channels;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;

namespace Paravirt.Core.XenStore;

/// <summary>A XenStore request refused by the store: <see cref="Error"/> is the errno name of the XS_ERROR reply (ENOENT, EACCES, EAGAIN …).</summary>
public sealed class XenStoreException(string error, string message) : Exception(message)
{
    public string Error { get; } = error;
}

/// <summary>A watch firing: the path that changed (or the watch's own path on registration) and the watch's token.</summary>
public readonly record struct XenStoreWatchEvent(string Path, string Token);

/// <summary>
/// The store operations a privileged (dom0) client has, with the wire protocol's semantics: every
/// call is one request processed by the same core as socket and ring clients.
/// </summary>
public abstract class XenStoreClient
{
    private protected XenStoreClient()
    {
    }

    /// <summary>The node's value, or null if it does not exist.</summary>
    public string? Read(string path)
    {
        try
        {
            return XsWireCodec.Latin1(Request(xsd_sockmsg_type.XS_READ, path));
        }
        catch (XenStoreException e) when (e.Error == XsWire.XSD_ERROR_ENOENT)
        {
            return null;
        }
    }

    /// <summary>Creates or overwrites the node (and missing parents).</summary>
    public void Write(string path, string value)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(value);
        byte[] payload = [.. XsWireCodec.String(path), .. System.Text.Encoding.Latin1.GetBytes(value)];
        Send(xsd_sockmsg_type.XS_WRITE, payload, path);
    }

    /// <summary>Creates the node with an empty value unless it exists.</summary>
    public void Mkdir(string path) => Request(xsd_sockmsg_type.XS_MKDIR, path);

    /// <summary>Removes the node and everything below it (a missing node whose parent exists is not an error).</summary>
    public void Rm(string path) => Request(xsd_sockmsg_type.XS_RM, path);

    /// <summary>The names of the node's children.</summary>
    public IReadOnlyList<string> Directory(string path) => XsWireCodec.SplitStrings(Request(xsd_sockmsg_type.XS_DIRECTORY, path));

    /// <summary>The node's permissions in wire form: the owner first (<c>n0</c>, <c>r5</c>, <c>b3</c> …).</summary>
    public IReadOnlyList<string> GetPerms(string path) => XsWireCodec.SplitStrings(Request(xsd_sockmsg_type.XS_GET_PERMS, path));

    /// <summary>Sets the node's permissions, given in wire form, the owner first.</summary>
    public void SetPerms(string path, params string[] perms)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(perms);
        Send(xsd_sockmsg_type.XS_SET_PERMS, XsWireCodec.JoinStrings([path, .. perms]), path);
    }

    private protected abstract XsMessage Submit(XsMessage request);

    private protected abstract uint TxId { get; }

    private byte[] Request(xsd_sockmsg_type type, string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return Send(type, XsWireCodec.String(path), path);
    }

    private protected byte[] Send(xsd_sockmsg_type type, byte[] payload, string what)
    {
        var reply = Submit(new XsMessage(type, 0, TxId, payload));
        if (reply.Kind == xsd_sockmsg_type.XS_ERROR)
        {
            var error = XsWireCodec.SplitStrings(reply.Payload, 1).FirstOrDefault() ?? "EIO";
            throw new XenStoreException(error, $"XenStore {type} of '{what}' failed: {error}");
        }

        return reply.Payload;
    }
}

/// <summary>An open transaction of <see cref="HostXenStore.Transaction"/>; valid only inside its body.</summary>
public sealed class XenStoreTransaction : XenStoreClient
{
    private readonly HostXenStore store;

    internal XenStoreTransaction(HostXenStore store, uint id)
    {
        this.store = store;
        Id = id;
    }

    public uint Id { get; }

    private protected override uint TxId => Id;

    private protected override XsMessage Submit(XsMessage request) => store.SubmitRaw(request);
}

/// <summary>A registered watch: its events arrive on <see cref="Events"/> until it is disposed.</summary>
public sealed class XenStoreWatch : IDisposable
{
    private readonly XenStoreServer server;
    private readonly Channel<XenStoreWatchEvent> events;
    private int disposed;

    internal XenStoreWatch(XenStoreServer server, uint connectionId, Channel<XenStoreWatchEvent> events)
    {
        this.server = server;
        ConnectionId = connectionId;
        this.events = events;
    }

    internal uint ConnectionId { get; }

    /// <summary>The events in order; the first is the registration's own event, as xenstored sends it.</summary>
    public ChannelReader<XenStoreWatchEvent> Events => events.Reader;

    /// <summary>The next event.</summary>
    public ValueTask<XenStoreWatchEvent> NextAsync(CancellationToken cancellationToken = default) => events.Reader.ReadAsync(cancellationToken);

    /// <summary>Unregisters the watch; <see cref="Events"/> completes.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0)
        {
            server.Disconnect(ConnectionId);
            events.Writer.TryComplete();
        }
    }
}

/// <summary>
/// The hypervisor's XenStore (<c>hv.XenStore</c>) as the host sees it: a privileged (dom0) client
/// of the store that guests reach through their xenstore ring pages. Creating a domain introduces it
/// (as libxl and xenstored do), destroying it releases it. Thread safe.
/// </summary>
public sealed class HostXenStore : XenStoreClient
{
    private const int MaxTransactionAttempts = 64;

    [ThreadStatic]
    private static XsMessage? t_reply;

    private readonly uint connectionId;
    private readonly Dictionary<ushort, XenStoreRing> rings = [];
    private readonly Lock ringsGate = new();

    internal HostXenStore(XenStoreServer server)
    {
        Server = server;
        connectionId = server.Connect(0, CaptureReply);
    }

    internal XenStoreServer Server { get; }

    private protected override uint TxId => 0;

    private protected override XsMessage Submit(XsMessage request) => SubmitRaw(request);

    /// <summary><c>/local/domain/&lt;domid&gt;</c>.</summary>
    public static string DomainPath(ushort domid) => string.Create(CultureInfo.InvariantCulture, $"/local/domain/{domid}");

    /// <summary>
    /// Runs <paramref name="body"/> in a transaction and commits it; when the commit fails with
    /// EAGAIN (another client changed what it read) the body runs again, up to 64 times. An
    /// exception from the body aborts the transaction and propagates.
    /// </summary>
    public T Transaction<T>(Func<XenStoreTransaction, T> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        for (var attempt = 1; ; attempt++)
        {
            var id = uint.Parse(XsWireCodec.Latin1(Send(xsd_sockmsg_type.XS_TRANSACTION_START, XsWireCodec.String(""), "transaction")).TrimEnd('\0'), CultureInfo.InvariantCulture);
            var tx = new XenStoreTransaction(this, id);
            T result;
            try
            {
                result = body(tx);
            }
            catch
            {
                End(id, commit: false);
                throw;
            }

            try
            {
                End(id, commit: true);
                return result;
            }
            catch (XenStoreException e) when (e.Error == XsWire.XSD_ERROR_EAGAIN && attempt < MaxTransactionAttempts)
            {
                // Conflict: run the body again on fresh state.
            }
        }
    }

    /// <summary>As <see cref="Transaction{T}(Func{XenStoreTransaction, T})"/> without a result.</summary>
    public void Transaction(Action<XenStoreTransaction> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        Transaction(tx =>
        {
            body(tx);
            return 0;
        });
    }

    private void End(uint id, bool commit) =>
        SubmitChecked(new XsMessage(xsd_sockmsg_type.XS_TRANSACTION_END, 0, id, XsWireCodec.String(commit ? "T" : "F")));

    private void SubmitChecked(XsMessage m)
    {
        var reply = SubmitRaw(m);
        if (reply.Kind == xsd_sockmsg_type.XS_ERROR)
        {
            var error = XsWireCodec.SplitStrings(reply.Payload, 1).FirstOrDefault() ?? "EIO";
            throw new XenStoreException(error, $"XenStore {m.Kind} failed: {error}");
        }
    }

    /// <summary>
    /// Watches <paramref name="path"/> (and everything below it, or a special <c>@introduceDomain</c> /
    /// <c>@releaseDomain</c>) on a connection of its own; dispose the result to unwatch.
    /// </summary>
    public XenStoreWatch Watch(string path, string token = "")
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(token);
        var events = Channel.CreateUnbounded<XenStoreWatchEvent>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = true });
        var id = Server.Connect(0, m =>
        {
            if (m.Kind == xsd_sockmsg_type.XS_WATCH_EVENT)
            {
                var parts = XsWireCodec.SplitStrings(m.Payload, 2);
                events.Writer.TryWrite(new XenStoreWatchEvent(parts.ElementAtOrDefault(0) ?? "", parts.ElementAtOrDefault(1) ?? ""));
            }
            else
            {
                t_reply = m;
            }
        });
        var watch = new XenStoreWatch(Server, id, events);
        try
        {
            t_reply = null;
            Server.Submit(id, XsMessage.Strings(xsd_sockmsg_type.XS_WATCH, 0, 0, path, token));
            var reply = t_reply ?? throw new InvalidOperationException("the store did not answer");
            if (reply.Kind == xsd_sockmsg_type.XS_ERROR)
            {
                var error = XsWireCodec.SplitStrings(reply.Payload, 1).FirstOrDefault() ?? "EIO";
                throw new XenStoreException(error, $"XenStore WATCH of '{path}' failed: {error}");
            }

            return watch;
        }
        catch
        {
            watch.Dispose();
            throw;
        }
    }

    /// <summary>
    /// As <see cref="Watch(string, string)"/>, calling <paramref name="callback"/> for each event on the
    /// thread pool, one at a time. Dispose the result to stop; an exception from the callback stops it too.
    /// </summary>
    public IDisposable Watch(string path, string token, Action<XenStoreWatchEvent> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var watch = Watch(path, token);
        _ = Task.Run(async () =>
        {
            await foreach (var e in watch.Events.ReadAllAsync().ConfigureAwait(false))
            {
                try
                {
                    callback(e);
                }
                catch (Exception)
                {
                    watch.Dispose(); // a failing callback ends its watch rather than the host
                    return;
                }
            }
        });
        return watch;
    }

    internal XsMessage SubmitRaw(XsMessage request)
    {
        t_reply = null;
        Server.Submit(connectionId, request);
        return t_reply ?? throw new InvalidOperationException("the store did not answer the host's request");
    }

    // The store calls sinks synchronously inside Submit, on the submitting thread: the reply to the
    // host's own request lands in that thread's slot.
    private static void CaptureReply(XsMessage m)
    {
        if (m.Kind != xsd_sockmsg_type.XS_WATCH_EVENT)
        {
            t_reply = m;
        }
    }

    /// <summary>
    /// What libxl (libxl__domain_make, libxl__build_post) and xenstored's INTRODUCE do for a new PV
    /// domain: its home directory and basic keys, then INTRODUCE (firing @introduceDomain), then the
    /// ring connection on the store page and event channel.
    /// </summary>
    internal void Introduce(Domain domain, ulong storeFrame, ulong storeMfn, uint guestPort)
    {
        var id = domain.Id;
        var home = DomainPath(id);
        var self = id.ToString(CultureInfo.InvariantCulture);
        string[] roperm = ["n0", "r" + self];
        string[] rwperm = ["n" + self];
        Transaction(tx =>
        {
            tx.Mkdir(home);
            tx.SetPerms(home, roperm);
            foreach (var dir in new[] { "cpu", "memory", "device", "control" })
            {
                tx.Mkdir($"{home}/{dir}");
                tx.SetPerms($"{home}/{dir}", roperm);
            }

            foreach (var dir in new[] { "control/shutdown", "control/feature-poweroff", "control/feature-reboot", "control/feature-suspend", "control/sysrq", "data", "drivers", "feature", "attr", "error" })
            {
                tx.Mkdir($"{home}/{dir}");
                tx.SetPerms($"{home}/{dir}", rwperm);
            }

            tx.Write($"{home}/name", domain.Name);
            tx.Write($"{home}/domid", self);
            var kb = ((long)domain.Config.MemoryMiB * 1024).ToString(CultureInfo.InvariantCulture);
            tx.Write($"{home}/memory/static-max", ((long)(domain.Config.MaxMemoryMiB ?? domain.Config.MemoryMiB) * 1024).ToString(CultureInfo.InvariantCulture));
            tx.Write($"{home}/memory/target", kb);
            tx.Write($"{home}/store/port", guestPort.ToString(CultureInfo.InvariantCulture));
            tx.Write($"{home}/store/ring-ref", storeFrame.ToString(CultureInfo.InvariantCulture));

            // libxl__build_post: every vCPU the domain may bring up, and whether it should be up.
            for (var i = 0; i < domain.Vcpus.Length; i++)
            {
                tx.Write($"{home}/cpu/{i}/availability", "online");
            }
        });

        SubmitChecked(XsMessage.Strings(xsd_sockmsg_type.XS_INTRODUCE, 0, 0, self, storeMfn.ToString(CultureInfo.InvariantCulture), guestPort.ToString(CultureInfo.InvariantCulture)));
        var ring = XenStoreRing.Open(this, domain, storeMfn, guestPort);
        lock (ringsGate)
        {
            rings[id] = ring;
        }

        ring.Start();
    }

    /// <summary>RELEASE as xl does on destroy: the ring connection ends, @releaseDomain fires, the domain's nodes go.</summary>
    internal void Release(Domain domain)
    {
        XenStoreRing? ring;
        lock (ringsGate)
        {
            rings.Remove(domain.Id, out ring);
        }

        ring?.Dispose();

        // libxl removes the home directory (owned by dom0, so RELEASE alone would leave it), then
        // xenstored releases the domain. Errors mean it was never introduced (its build failed).
        SubmitRaw(XsMessage.Strings(xsd_sockmsg_type.XS_RM, 0, 0, DomainPath(domain.Id)));
        SubmitRaw(XsMessage.Strings(xsd_sockmsg_type.XS_RELEASE, 0, 0, domain.Id.ToString(CultureInfo.InvariantCulture)));
    }

    /// <summary>The ring connection of a domain (tests).</summary>
    internal XenStoreRing? RingOf(ushort domid)
    {
        lock (ringsGate)
        {
            return rings.GetValueOrDefault(domid);
        }
    }
}
