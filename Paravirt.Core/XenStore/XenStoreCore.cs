using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Globalization;
using System.Text;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Core.XenStore;

/// <summary>A watch event for one connection: the changed path (relative if the watch was) and the watch's token.</summary>
internal readonly record struct XsWatchEvent(uint ConnectionId, string Path, string Token)
{
    /// <summary>The XS_WATCH_EVENT message: req_id and tx_id 0, payload path NUL token NUL.</summary>
    public XsMessage ToMessage() => XsMessage.Strings(xsd_sockmsg_type.XS_WATCH_EVENT, 0, 0, Path, Token);
}

/// <summary>The result of one request: the next state, the reply to the requester, and the watch events it caused.</summary>
internal readonly record struct XsStepResult(XenStoreState State, XsMessage Reply, ImmutableArray<XsWatchEvent> Events);

/// <summary>
/// A connection's canonical paths, interned: the same request bytes give the same string, so a
/// steady stream of requests on known paths builds no strings. Bounded (a guest that sends ever
/// new paths only empties its own cache), never shared between connections.
/// </summary>
internal sealed class XsPathCache
{
    private const int MaxEntries = 128;
    private const int MaxChars = 16 * 1024;
    private readonly Dictionary<string, string> map = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> lookup;
    private int chars;

    public XsPathCache(uint domId)
    {
        lookup = map.GetAlternateLookup<ReadOnlySpan<char>>();
        Home = string.Create(CultureInfo.InvariantCulture, $"/local/domain/{domId}/");
    }

    /// <summary><c>/local/domain/&lt;domid&gt;/</c>: what a relative path is under.</summary>
    public string Home { get; }

    public string Intern(ReadOnlySpan<char> path)
    {
        if (lookup.TryGetValue(path, out var known))
        {
            return known;
        }

        if (map.Count >= MaxEntries || chars + path.Length > MaxChars)
        {
            map.Clear();
            chars = 0;
        }

        var s = new string(path);
        map[s] = s;
        chars += s.Length;
        return s;
    }
}

/// <summary>
/// The store's semantics as a pure function: <c>(state, connection, request) → (state, reply, events)</c>.
/// Follows C xenstored 4.17 (tools/xenstore/xenstored_{core,domain,transaction,watch}.c). A request
/// that fails changes nothing (the one exception is TRANSACTION_END, which always ends the transaction).
/// </summary>
/// <remarks>
/// Refusals are results, not exceptions: a handler that refuses records the errno name and returns
/// null, and each caller returns as soon as a callee failed. A guest that sends nothing but refused
/// requests therefore costs the store no exception.
/// </remarks>
internal static class XenStoreCore
{
    /// <summary>Processes one request from connection <paramref name="connectionId"/>.</summary>
    public static XsStepResult Process(XenStoreState state, uint connectionId, XsMessage request)
    {
        if (!state.Connections.TryGetValue(connectionId, out var conn))
        {
            throw new ArgumentException($"XenStore connection {connectionId} is not connected", nameof(connectionId));
        }

        var step = new Processor();
        var reply = step.Run(state, conn, new XsHeader(request.Type, request.ReqId, request.TxId), request.Payload, new XsPathCache(conn.DomId));
        return new XsStepResult(step.Result, reply, [.. step.Events]);
    }

    private delegate byte[]? Handler(Processor s, ReadOnlySpan<byte> payload);

    // Flags as xenstored's wire_funcs: NOTID ignores tx_id, PRIV needs a privileged connection.
    private readonly record struct Op(Handler Func, bool NoTx = false, bool Priv = false);

    private static readonly FrozenDictionary<uint, Op> Ops = new Dictionary<uint, Op>
    {
        [(uint)xsd_sockmsg_type.XS_CONTROL] = new((s, p) => s.Control(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_DIRECTORY] = new((s, p) => s.Directory(p)),
        [(uint)xsd_sockmsg_type.XS_READ] = new((s, p) => s.Read(p)),
        [(uint)xsd_sockmsg_type.XS_GET_PERMS] = new((s, p) => s.GetPerms(p)),
        [(uint)xsd_sockmsg_type.XS_WATCH] = new((s, p) => s.Watch(p), NoTx: true),
        [(uint)xsd_sockmsg_type.XS_UNWATCH] = new((s, p) => s.Unwatch(p), NoTx: true),
        [(uint)xsd_sockmsg_type.XS_TRANSACTION_START] = new((s, p) => s.TransactionStart()),
        [(uint)xsd_sockmsg_type.XS_TRANSACTION_END] = new((s, p) => s.TransactionEnd(p)),
        [(uint)xsd_sockmsg_type.XS_INTRODUCE] = new((s, p) => s.Introduce(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_RELEASE] = new((s, p) => s.Release(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_GET_DOMAIN_PATH] = new((s, p) => s.GetDomainPath(p)),
        [(uint)xsd_sockmsg_type.XS_WRITE] = new((s, p) => s.Write(p)),
        [(uint)xsd_sockmsg_type.XS_MKDIR] = new((s, p) => s.Mkdir(p)),
        [(uint)xsd_sockmsg_type.XS_RM] = new((s, p) => s.Rm(p)),
        [(uint)xsd_sockmsg_type.XS_SET_PERMS] = new((s, p) => s.SetPerms(p)),
        [(uint)xsd_sockmsg_type.XS_IS_DOMAIN_INTRODUCED] = new((s, p) => s.IsDomainIntroduced(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_RESUME] = new((s, p) => s.Resume(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_SET_TARGET] = new((s, p) => s.SetTarget(p), Priv: true),
        [(uint)xsd_sockmsg_type.XS_RESET_WATCHES] = new((s, p) => s.ResetWatches()),
        [(uint)xsd_sockmsg_type.XS_DIRECTORY_PART] = new((s, p) => s.DirectoryPart(p)),
    }.ToFrozenDictionary();

    private static readonly byte[] Ok = XsWireCodec.String("OK");

    // The XS_ERROR payloads, made once: an error reply builds no array.
    private static readonly FrozenDictionary<string, byte[]> ErrorPayloads =
        XsWire.xsd_errors.ToFrozenDictionary(e => e, XsWireCodec.String, StringComparer.Ordinal);

    private const ulong NoGeneration = ulong.MaxValue;

    /// <summary>
    /// The working copy of one request, reusable for the next one (<see cref="XenStoreServer"/> keeps
    /// one). Discarded on error, so a failed request leaves the state as it was.
    /// </summary>
    internal sealed class Processor
    {
        private readonly char[] pathChars = new char[XsWire.XENSTORE_PAYLOAD_MAX + 32];
        private readonly List<XsWatchEvent> afterReply = [];
        private XenStoreState original = null!;
        private XsHeader request;
        private XsConnection originalConn = null!;
        private XsConnection conn = null!;
        private XsPathCache paths = null!;
        private XsTransaction? tx;
        private ImmutableDictionary<string, XsNode> nodes = null!;
        private ulong generation;
        private ImmutableDictionary<uint, int> entries = null!;
        private ImmutableDictionary<uint, XsDomain> domains = null!;
        private ImmutableDictionary<uint, XsConnection> others = null!;
        private ImmutableArray<XsPerm> introducePerms;
        private ImmutableArray<XsPerm> releasePerms;
        private string? error;

        /// <summary>Set by a handler whose partial effects must survive its error (TRANSACTION_END).</summary>
        private XenStoreState? persistOnError;

        private XsQuotas Q => original.Quotas;

        /// <summary>The state after the last <see cref="Run"/>.</summary>
        public XenStoreState Result { get; private set; } = null!;

        /// <summary>The watch events the last <see cref="Run"/> caused (valid until the next one).</summary>
        public List<XsWatchEvent> Events { get; } = [];

        private uint DomId => conn.DomId;

        private bool Privileged => conn.DomId == 0;

        private bool Failed => error is not null;

        /// <summary>Processes one request of <paramref name="connection"/> on <paramref name="state"/>; the reply is returned, the rest is in <see cref="Result"/> and <see cref="Events"/>.</summary>
        public XsMessage Run(XenStoreState state, XsConnection connection, XsHeader header, ReadOnlySpan<byte> payload, XsPathCache pathCache)
        {
            original = state;
            request = header;
            originalConn = conn = connection;
            paths = pathCache;
            tx = null;
            nodes = state.Nodes;
            generation = state.Generation;
            entries = state.Entries;
            domains = state.Domains;
            others = state.Connections;
            introducePerms = state.IntroducePerms;
            releasePerms = state.ReleasePerms;
            error = null;
            persistOnError = null;
            Result = state;
            Events.Clear();
            afterReply.Clear();
            try
            {
                return Dispatch(payload);
            }
            finally
            {
                // Drop what the next request must not see (and the GC need not keep).
                afterReply.Clear();
                tx = null;
                persistOnError = null;
            }
        }

        private XsMessage Dispatch(ReadOnlySpan<byte> payload)
        {
            if (!Ops.TryGetValue(request.Type, out var op))
            {
                return Error(XsWire.XSD_ERROR_ENOSYS);
            }

            if (op.Priv && !Privileged)
            {
                return Error(XsWire.XSD_ERROR_EACCES);
            }

            if (!op.NoTx && request.TxId != 0)
            {
                if (!conn.Transactions.TryGetValue(request.TxId, out tx))
                {
                    return Error(XsWire.XSD_ERROR_ENOENT);
                }
            }

            var reply = op.Func(this, payload);
            if (error is { } name)
            {
                if (persistOnError is { } keep)
                {
                    Result = keep;
                }

                Events.Clear();
                return Error(name);
            }

            if (reply is null || reply.Length > XsWire.XENSTORE_PAYLOAD_MAX)
            {
                Events.Clear();
                return Error(XsWire.XSD_ERROR_E2BIG);
            }

            Result = Commit();
            Events.AddRange(afterReply);
            return new XsMessage(request.Type, request.ReqId, request.TxId, reply);
        }

        private XsMessage Error(string name) =>
            new(xsd_sockmsg_type.XS_ERROR, request.ReqId, request.TxId,
                ErrorPayloads.TryGetValue(name, out var bytes) ? bytes : XsWireCodec.String(name));

        private XenStoreState Commit()
        {
            if (tx is not null && conn.Transactions.ContainsKey(tx.Id))
            {
                conn = conn with { Transactions = conn.Transactions.SetItem(tx.Id, tx) };
            }

            // A request that changed nothing (a read outside a transaction, most often) keeps the
            // state it found rather than building an equal one.
            if (tx is null && ReferenceEquals(conn, originalConn) && ReferenceEquals(nodes, original.Nodes)
                && generation == original.Generation && ReferenceEquals(entries, original.Entries)
                && ReferenceEquals(domains, original.Domains) && ReferenceEquals(others, original.Connections)
                && introducePerms == original.IntroducePerms && releasePerms == original.ReleasePerms)
            {
                return original;
            }

            return original with
            {
                Nodes = nodes,
                Generation = generation,
                Entries = entries,
                Domains = domains,
                Connections = others.ContainsKey(conn.Id) ? others.SetItem(conn.Id, conn) : others,
                IntroducePerms = introducePerms,
                ReleasePerms = releasePerms,
            };
        }

        /// <summary>Records the request's refusal (the first one counts) and returns null for the handler to pass up.</summary>
        private byte[]? Fail(string name)
        {
            error ??= name;
            return null;
        }

        /// <summary>As <see cref="Fail"/>, for helpers that answer whether they succeeded.</summary>
        private bool Refuse(string name)
        {
            error ??= name;
            return false;
        }

        // ---- paths ------------------------------------------------------------------------

        private static string HomePath(uint domid) => string.Create(CultureInfo.InvariantCulture, $"/local/domain/{domid}");

        /// <summary>xenstored's canonicalize: relative paths live under the connection's home.</summary>
        private string Canonicalize(string name) =>
            name.Length > 0 && (name[0] == '/' || name[0] == '@') ? name : paths.Home + name;

        /// <summary>
        /// <see cref="Canonicalize"/> of a path as the request's bytes carry it (one char per byte, as
        /// <see cref="XsWireCodec.Latin1"/>), interned in the connection's cache.
        /// </summary>
        private string CanonicalPath(ReadOnlySpan<byte> name)
        {
            var prefix = name.Length > 0 && (name[0] == '/' || name[0] == '@') ? "" : paths.Home;
            var length = prefix.Length + name.Length;
            var chars = length <= pathChars.Length ? pathChars.AsSpan(0, length) : new char[length];
            prefix.CopyTo(chars);
            Encoding.Latin1.GetChars(name, chars[prefix.Length..]);
            return paths.Intern(chars);
        }

        /// <summary>The payload's only argument (xenstored's onearg) as a canonical path, or null if the payload is not one argument.</summary>
        private string? PathArg(ReadOnlySpan<byte> payload) =>
            payload.IsEmpty || payload.IndexOf((byte)0) != payload.Length - 1 ? null : CanonicalPath(payload[..^1]);

        /// <summary>xenstored's is_valid_nodename.</summary>
        internal static bool IsValidNodeName(string node, int maxPathLength)
        {
            if (node.Length == 0 || node[0] != '/')
            {
                return false;
            }

            if (node.Length > 1 && node[^1] == '/')
            {
                return false;
            }

            if (node.Contains("//", StringComparison.Ordinal))
            {
                return false;
            }

            if (node.Length > LocalOffset(node) + maxPathLength)
            {
                return false;
            }

            foreach (var c in node)
            {
                if (!(c is >= 'a' and <= 'z' or >= 'A' and <= 'Z' or >= '0' and <= '9' or '-' or '/' or '_' or '@'))
                {
                    return false;
                }
            }

            return true;
        }

        // Length of a leading "/local/domain/<up to 5 digits>/", else 0 (the sscanf of is_valid_nodename).
        private static int LocalOffset(string node)
        {
            const string prefix = "/local/domain/";
            if (!node.StartsWith(prefix, StringComparison.Ordinal))
            {
                return 0;
            }

            var i = prefix.Length;
            var digits = 0;
            while (i < node.Length && digits < 5 && char.IsAsciiDigit(node[i]))
            {
                i++;
                digits++;
            }

            return digits > 0 && i < node.Length && node[i] == '/' ? i + 1 : 0;
        }

        private static string Parent(string path)
        {
            var slash = path.LastIndexOf('/');
            return slash <= 0 ? "/" : path[..slash];
        }

        /// <summary><see cref="Parent"/> through the connection's path cache: walking up a missing path builds no strings once warm.</summary>
        private string InternedParent(string path)
        {
            var slash = path.LastIndexOf('/');
            return slash <= 0 ? "/" : paths.Intern(path.AsSpan(0, slash));
        }

        private static string BaseName(string path) => path[(path.LastIndexOf('/') + 1)..];

        private static string Child(string parent, string name) => parent == "/" ? "/" + name : parent + "/" + name;

        // ---- permissions ------------------------------------------------------------------

        private uint? TargetOf(uint domid) => domains.TryGetValue(domid, out var d) ? d.Target : null;

        /// <summary>xenstored's perm_for_conn.</summary>
        private XsPermFlags PermFor(XsConnection c, ImmutableArray<XsPerm> perms)
        {
            const XsPermFlags all = XsPermFlags.Read | XsPermFlags.Write | XsPermFlags.Owner;
            if (c.DomId == 0)
            {
                return all;
            }

            var target = TargetOf(c.DomId);
            if (perms[0].DomId == c.DomId || (target is { } t && perms[0].DomId == t))
            {
                return all;
            }

            for (var i = 1; i < perms.Length; i++)
            {
                if (perms[i].DomId == c.DomId || (target is { } t2 && perms[i].DomId == t2))
                {
                    return perms[i].Flags & all;
                }
            }

            return perms[0].Flags & all;
        }

        // ---- node access (transaction aware) ----------------------------------------------

        /// <summary>
        /// Reads a node as the current request sees it; inside a transaction, remembers the access.
        /// Null when it does not exist, or when remembering it broke the transaction's quota (then <see cref="Failed"/>).
        /// </summary>
        private XsNode? ReadNode(string path)
        {
            if (tx is null)
            {
                return nodes.GetValueOrDefault(path);
            }

            if (tx.Overlay.TryGetValue(path, out var local))
            {
                return local;
            }

            var global = nodes.GetValueOrDefault(path);
            return Touch(path, global) ? global : null;
        }

        private bool Touch(string path, XsNode? global)
        {
            if (tx is null || tx.Accessed.ContainsKey(path))
            {
                return true;
            }

            if (tx.Accessed.Count >= Q.NodesPerTransaction && !Privileged)
            {
                return Refuse(XsWire.XSD_ERROR_ENOSPC);
            }

            tx = tx with
            {
                Accessed = tx.Accessed.Add(path, new XsAccess(global?.Generation ?? NoGeneration, global?.Perms ?? default)),
            };
            return true;
        }

        private bool StoreNode(string path, XsNode node, bool quotaCheck = true)
        {
            if (quotaCheck && !Privileged && node.RecordSize >= Q.MaxEntrySize)
            {
                return Refuse(XsWire.XSD_ERROR_ENOSPC);
            }

            node = node with { Generation = ++generation };
            if (tx is null)
            {
                nodes = nodes.SetItem(path, node);
            }
            else
            {
                if (!Touch(path, nodes.GetValueOrDefault(path)))
                {
                    return false;
                }

                tx = tx with { Overlay = tx.Overlay.SetItem(path, node) };
            }

            return true;
        }

        private bool DeleteNode(string path)
        {
            if (tx is null)
            {
                nodes = nodes.Remove(path);
            }
            else
            {
                if (!Touch(path, nodes.GetValueOrDefault(path)))
                {
                    return false;
                }

                tx = tx with { Overlay = tx.Overlay.SetItem(path, null) };
            }

            return true;
        }

        private int EntriesOf(uint domid) =>
            entries.GetValueOrDefault(domid) + (tx?.EntryDelta.GetValueOrDefault(domid) ?? 0);

        private void AddEntries(uint domid, int delta)
        {
            if (tx is null)
            {
                entries = entries.SetItem(domid, entries.GetValueOrDefault(domid) + delta);
            }
            else
            {
                tx = tx with { EntryDelta = tx.EntryDelta.SetItem(domid, tx.EntryDelta.GetValueOrDefault(domid) + delta) };
            }
        }

        /// <summary>
        /// xenstored's get_node: the node if it exists and the connection has <paramref name="perm"/>;
        /// otherwise null with ENOENT or EACCES recorded, EACCES whenever the nearest existing ancestor
        /// would not grant <paramref name="perm"/> either (so a missing node reveals nothing).
        /// </summary>
        private XsNode? GetNode(string? name, XsPermFlags perm)
        {
            if (TryGetNode(name, perm, out var node) is { } err)
            {
                Refuse(err);
                return null;
            }

            return node;
        }

        /// <summary>GetNode that returns null without a refusal for ENOENT (callers that create); check <see cref="Failed"/>.</summary>
        private XsNode? GetNodeOrNull(string? name, XsPermFlags perm)
        {
            var err = TryGetNode(name, perm, out var node);
            if (err is not null && err != XsWire.XSD_ERROR_ENOENT)
            {
                Refuse(err);
            }

            return node;
        }

        /// <summary>xenstored's get_node: the node, or the errno name that explains why not (errno_from_parents for a missing or forbidden one).</summary>
        private string? TryGetNode(string? name, XsPermFlags perm, out XsNode? found)
        {
            found = null;
            if (name is null || !IsValidNodeName(name, Q.MaxPathLength))
            {
                return XsWire.XSD_ERROR_EINVAL;
            }

            var node = ReadNode(name);
            if (error is { } failed)
            {
                return failed;
            }

            var err = XsWire.XSD_ERROR_ENOENT;
            if (node is not null)
            {
                if ((PermFor(conn, node.Perms) & perm) == perm)
                {
                    found = node;
                    return null;
                }

                err = XsWire.XSD_ERROR_EACCES;
            }

            // errno_from_parents
            var parentPerm = XsPermFlags.None;
            var p = name;
            while (p != "/")
            {
                p = InternedParent(p);
                var ancestor = ReadNode(p);
                if (error is { } touchFailed)
                {
                    return touchFailed;
                }

                if (ancestor is not null)
                {
                    parentPerm = PermFor(conn, ancestor.Perms);
                    break;
                }
            }

            return (parentPerm & perm) != 0 ? err : XsWire.XSD_ERROR_EACCES;
        }

        /// <summary>
        /// xenstored's create_node: makes the node and any missing ancestors; new nodes inherit their
        /// parent's permissions, owned by the creator if unprivileged. Null if refused.
        /// </summary>
        private XsNode? CreateNode(string name, byte[] value)
        {
            var missing = new List<string>();
            var at = name;
            XsNode? parent;
            while (true)
            {
                missing.Add(at);
                at = Parent(at);
                parent = ReadNode(at);
                if (Failed)
                {
                    return null;
                }

                if (parent is not null)
                {
                    break;
                }

                if (at == "/")
                {
                    Refuse(XsWire.XSD_ERROR_EIO);
                    return null;
                }
            }

            var parentPath = at;
            for (var i = missing.Count - 1; i >= 0; i--)
            {
                var path = missing[i];
                if (!Privileged && EntriesOf(DomId) >= Q.EntriesPerDomain)
                {
                    Refuse(XsWire.XSD_ERROR_ENOSPC);
                    return null;
                }

                parent = parent.AddChild(BaseName(path));
                if (!StoreNode(parentPath, parent))
                {
                    return null;
                }

                var perms = parent.Perms;
                if (!Privileged)
                {
                    perms = perms.SetItem(0, perms[0] with { DomId = DomId });
                }

                var created = new XsNode(i == 0 ? value : [], [], 0, perms, 0);
                if (!StoreNode(path, created))
                {
                    return null;
                }

                AddEntries(created.Owner, +1);
                parent = ReadNode(path)!;
                parentPath = path;
            }

            if (tx is not null)
            {
                tx = tx with { NodeCreated = true };
            }

            return parent;
        }

        // ---- watches -------------------------------------------------------------------------

        /// <summary>
        /// xenstored's fire_watches: inside a transaction the event is queued for the commit; otherwise
        /// every connection with a matching watch that may read the node (or its parent, or the old
        /// permissions) gets it. <paramref name="exact"/> matches only watches on the path itself.
        /// </summary>
        private void FireWatches(string name, bool exact, XsNode? node = null, ImmutableArray<XsPerm> oldPerms = default)
        {
            if (tx is not null)
            {
                var queued = tx.QueuedWatches.TryGetValue(name, out var wasExact) ? wasExact && exact : exact;
                tx = tx with { QueuedWatches = tx.QueuedWatches.SetItem(name, queued) };
                return;
            }

            DeliverWatches(name, exact, node, oldPerms, Events);
        }

        private void DeliverWatches(string name, bool exact, XsNode? node, ImmutableArray<XsPerm> oldPerms, List<XsWatchEvent> into)
        {
            var special = name.StartsWith('@');
            foreach (var (id, other) in others)
            {
                var c = id == conn.Id ? conn : other;
                if (c.Watches.IsEmpty)
                {
                    continue;
                }

                if (special ? !SpecialPermitted(name, c) : !WatchPermitted(c, name, node, oldPerms))
                {
                    continue;
                }

                foreach (var w in c.Watches)
                {
                    if (exact ? w.Node == name : IsChild(name, w.Node))
                    {
                        into.Add(new XsWatchEvent(c.Id, WatchPath(c, w, name), w.Token));
                    }
                }
            }
        }

        private bool SpecialPermitted(string name, XsConnection c)
        {
            var perms = name == "@releaseDomain" ? releasePerms : name == "@introduceDomain" ? introducePerms : default;
            return !perms.IsDefault && (PermFor(c, perms) & XsPermFlags.Read) != 0;
        }

        private bool WatchPermitted(XsConnection c, string name, XsNode? node, ImmutableArray<XsPerm> oldPerms)
        {
            if (!oldPerms.IsDefault && (PermFor(c, oldPerms) & XsPermFlags.Read) != 0)
            {
                return true;
            }

            node ??= nodes.GetValueOrDefault(name);
            if (node is null)
            {
                return false;
            }

            if ((PermFor(c, node.Perms) & XsPermFlags.Read) != 0)
            {
                return true;
            }

            return nodes.GetValueOrDefault(Parent(name)) is { } parent && (PermFor(c, parent.Perms) & XsPermFlags.Read) != 0;
        }

        private static bool IsChild(string child, string parent) =>
            parent == "/" ||
            (child.StartsWith(parent, StringComparison.Ordinal) && (child.Length == parent.Length || child[parent.Length] == '/'));

        private static string WatchPath(XsConnection c, XsWatch w, string name)
        {
            if (!w.Relative)
            {
                return name;
            }

            var home = HomePath(c.DomId);
            var rest = name.Length >= home.Length ? name[home.Length..] : "";
            return rest.StartsWith('/') ? rest[1..] : rest;
        }

        // ---- operations ----------------------------------------------------------------------

        public byte[]? Directory(ReadOnlySpan<byte> payload) =>
            GetNode(PathArg(payload), XsPermFlags.Read)?.ChildrenBytes();

        public byte[]? DirectoryPart(ReadOnlySpan<byte> payload)
        {
            if (XsWireCodec.CountStrings(payload) != 2)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var args = XsWireCodec.SplitStrings(payload, 2);
            var node = GetNode(Canonicalize(args[0]), XsPermFlags.Read);
            if (node is null)
            {
                return null;
            }

            var off = unchecked((uint)XsWireCodec.Atoi(args[1]));
            var gen = Encoding.ASCII.GetBytes(node.Generation.ToString(CultureInfo.InvariantCulture));
            var genLen = gen.Length + 1;
            var children = node.ChildrenBytes();
            if (off >= children.Length)
            {
                // Offset past the list: the generation and an empty string.
                var end = new byte[genLen + 1];
                gen.CopyTo(end, 0);
                return end;
            }

            var maxLen = XsWire.XENSTORE_PAYLOAD_MAX - genLen - 1;
            var len = 0;
            var at = (int)off;
            while (true)
            {
                var strlen = children.AsSpan(at + len).IndexOf((byte)0);
                if (len + strlen >= maxLen)
                {
                    break;
                }

                len += strlen + 1;
                if (off + len == children.Length)
                {
                    break;
                }
            }

            var complete = off + len == children.Length;
            var reply = new byte[genLen + len + (complete ? 1 : 0)];
            gen.CopyTo(reply, 0);
            children.AsSpan(at, len).CopyTo(reply.AsSpan(genLen));
            return reply;
        }

        /// <summary>The node's own value array goes out as the reply: a READ copies nothing and builds nothing.</summary>
        public byte[]? Read(ReadOnlySpan<byte> payload) => GetNode(PathArg(payload), XsPermFlags.Read)?.Value;

        public byte[]? Write(ReadOnlySpan<byte> payload)
        {
            var nul = payload.IndexOf((byte)0);
            if (nul < 0)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var name = CanonicalPath(payload[..nul]);
            var node = GetNodeOrNull(name, XsPermFlags.Write);
            if (Failed)
            {
                return null;
            }

            // The value is kept, so it is copied, but only once the write is allowed.
            var value = payload[(nul + 1)..].ToArray();

            if (node is null)
            {
                node = CreateNode(name, value);
                if (node is null)
                {
                    return null;
                }
            }
            else
            {
                node = node with { Value = value };
                if (!StoreNode(name, node))
                {
                    return null;
                }
            }

            FireWatches(name, exact: false, node);
            return Ok;
        }

        public byte[]? Mkdir(ReadOnlySpan<byte> payload)
        {
            var name = PathArg(payload);
            var existing = GetNodeOrNull(name, XsPermFlags.Write);
            if (Failed)
            {
                return null;
            }

            if (existing is null)
            {
                var node = CreateNode(name!, []);
                if (node is null)
                {
                    return null;
                }

                FireWatches(name!, exact: false, node);
            }

            return Ok;
        }

        public byte[]? Rm(ReadOnlySpan<byte> payload)
        {
            var name = PathArg(payload);
            var existing = GetNodeOrNull(name, XsPermFlags.Write);
            if (Failed)
            {
                return null;
            }

            if (existing is null)
            {
                // Already gone: fine if the parent exists.
                var parent = ReadNode(Parent(name!));
                return Failed ? null : parent is not null ? Ok : Fail(XsWire.XSD_ERROR_ENOENT);
            }

            if (name == "/")
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            return RemoveTree(name!) ? Ok : null;
        }

        /// <summary>xenstored's rm_node: deletes the subtree bottom-up (children fire exact watches, the root fires for watchers of it and its ancestors) and unlinks it from its parent.</summary>
        private bool RemoveTree(string name)
        {
            var parentPath = Parent(name);
            var parent = ReadNode(parentPath);
            if (Failed)
            {
                return false;
            }

            if (parent is null)
            {
                return Refuse(XsWire.XSD_ERROR_EINVAL);
            }

            return DeleteSubtree(name, name)
                && StoreNode(parentPath, parent.RemoveChild(BaseName(name)), quotaCheck: false);
        }

        private bool DeleteSubtree(string path, string root)
        {
            var node = ReadNode(path);
            if (node is null)
            {
                return !Failed;
            }

            foreach (var child in node.Children)
            {
                if (!DeleteSubtree(Child(path, child), root))
                {
                    return false;
                }
            }

            if (!DeleteNode(path))
            {
                return false;
            }

            FireWatches(path, exact: path != root, node);
            AddEntries(node.Owner, -1);
            return true;
        }

        public byte[]? GetPerms(ReadOnlySpan<byte> payload)
        {
            var node = GetNode(PathArg(payload), XsPermFlags.Read);
            return node is null ? null : XsWireCodec.JoinStrings([.. node.Perms.Select(p => p.ToString())]);
        }

        public byte[]? SetPerms(ReadOnlySpan<byte> payload)
        {
            var count = XsWireCodec.CountStrings(payload);
            if (count < 2)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            if (!Privileged && count - 1 > Q.PermsPerNode)
            {
                return Fail(XsWire.XSD_ERROR_ENOSPC);
            }

            var args = XsWireCodec.SplitStrings(payload);
            var perms = ImmutableArray.CreateBuilder<XsPerm>(count - 1);
            foreach (var s in args.Skip(1))
            {
                if (!XsPerm.TryParse(s, out var p))
                {
                    return Fail(XsWire.XSD_ERROR_EINVAL);
                }

                perms.Add(p);
            }

            var newPerms = perms.MoveToImmutable();
            var name = args[0];
            if (name.StartsWith('@'))
            {
                var release = name == "@releaseDomain";
                if (!release && name != "@introduceDomain")
                {
                    return Fail(XsWire.XSD_ERROR_EINVAL);
                }

                const XsPermFlags need = XsPermFlags.Write | XsPermFlags.Owner;
                if ((PermFor(conn, release ? releasePerms : introducePerms) & need) != need)
                {
                    return Fail(XsWire.XSD_ERROR_EACCES);
                }

                if (release)
                {
                    releasePerms = newPerms;
                }
                else
                {
                    introducePerms = newPerms;
                }

                return Ok;
            }

            var path = Canonicalize(name);
            var node = GetNode(path, XsPermFlags.Write | XsPermFlags.Owner);
            if (node is null)
            {
                return null;
            }

            if (!Privileged && newPerms[0].DomId != node.Owner)
            {
                return Fail(XsWire.XSD_ERROR_EPERM);
            }

            var old = node.Perms;
            AddEntries(node.Owner, -1);
            AddEntries(newPerms[0].DomId, +1);
            node = node with { Perms = newPerms };
            if (!StoreNode(path, node))
            {
                return null;
            }

            FireWatches(path, exact: false, node, old);
            return Ok;
        }

        public byte[]? Watch(ReadOnlySpan<byte> payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count != 2 || XsWireCodec.CountStrings(payload) != 2)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var (path, token) = (args[0], args[1]);
            bool relative;
            if (path.StartsWith('@'))
            {
                relative = false;
                if (path.Length > XsWire.XENSTORE_REL_PATH_MAX)
                {
                    return Fail(XsWire.XSD_ERROR_EINVAL);
                }
            }
            else
            {
                relative = !path.StartsWith('/');
                path = Canonicalize(path);
                if (!IsValidNodeName(path, Q.MaxPathLength))
                {
                    return Fail(XsWire.XSD_ERROR_EINVAL);
                }
            }

            foreach (var w in conn.Watches)
            {
                if (w.Node == path && w.Token == token)
                {
                    return Fail(XsWire.XSD_ERROR_EEXIST);
                }
            }

            if (!Privileged && WatchesOfDomain() > Q.WatchesPerDomain)
            {
                return Fail(XsWire.XSD_ERROR_E2BIG);
            }

            var watch = new XsWatch(path, token, relative);
            conn = conn with { Watches = conn.Watches.Add(watch) };

            // The initial event, sent after the acknowledgement.
            afterReply.Add(new XsWatchEvent(conn.Id, WatchPath(conn, watch, path), token));
            return Ok;
        }

        private int WatchesOfDomain()
        {
            var count = 0;
            foreach (var (id, other) in others)
            {
                var c = id == conn.Id ? conn : other;
                if (c.DomId == DomId)
                {
                    count += c.Watches.Count;
                }
            }

            return count;
        }

        public byte[]? Unwatch(ReadOnlySpan<byte> payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count != 2 || XsWireCodec.CountStrings(payload) != 2)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var path = Canonicalize(args[0]);
            var token = args[1];
            foreach (var w in conn.Watches)
            {
                if (w.Node == path && w.Token == token)
                {
                    conn = conn with { Watches = conn.Watches.Remove(w) };
                    return Ok;
                }
            }

            return Fail(XsWire.XSD_ERROR_ENOENT);
        }

        public byte[]? TransactionStart()
        {
            if (tx is not null)
            {
                return Fail(XsWire.XSD_ERROR_EBUSY);
            }

            if (!Privileged && conn.Transactions.Count > Q.TransactionsPerConnection)
            {
                return Fail(XsWire.XSD_ERROR_ENOSPC);
            }

            var id = conn.NextTransactionId;
            while (id == 0 || conn.Transactions.ContainsKey(id))
            {
                id++;
            }

            generation++;
            conn = conn with
            {
                Transactions = conn.Transactions.Add(id, XsTransaction.Start(id)),
                NextTransactionId = id + 1,
            };
            return XsWireCodec.String(id.ToString(CultureInfo.InvariantCulture));
        }

        public byte[]? TransactionEnd(ReadOnlySpan<byte> payload)
        {
            var arg = XsWireCodec.OneArg(payload);
            if (arg is not ("T" or "F"))
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            if (tx is not { } t)
            {
                return Fail(XsWire.XSD_ERROR_ENOENT);
            }

            tx = null;
            conn = conn with { Transactions = conn.Transactions.Remove(t.Id) };

            // From here on the transaction is over whatever the outcome.
            persistOnError = original with { Connections = original.Connections.SetItem(conn.Id, conn) };
            if (arg == "F")
            {
                return Ok;
            }

            if (t.NodeCreated && !Privileged)
            {
                foreach (var (domid, delta) in t.EntryDelta)
                {
                    if (entries.GetValueOrDefault(domid) + delta >= Q.EntriesPerDomain)
                    {
                        return Fail(XsWire.XSD_ERROR_ENOSPC);
                    }
                }
            }

            foreach (var (path, access) in t.Accessed)
            {
                var now = nodes.TryGetValue(path, out var n) ? n.Generation : NoGeneration;
                if (now != access.Generation)
                {
                    return Fail(XsWire.XSD_ERROR_EAGAIN);
                }
            }

            foreach (var (path, node) in t.Overlay)
            {
                nodes = node is null ? nodes.Remove(path) : nodes.SetItem(path, node with { Generation = ++generation });
            }

            foreach (var (domid, delta) in t.EntryDelta)
            {
                entries = entries.SetItem(domid, entries.GetValueOrDefault(domid) + delta);
            }

            foreach (var (path, exact) in t.QueuedWatches)
            {
                var old = t.Accessed.TryGetValue(path, out var a) ? a.Perms : default;
                var node = t.Overlay.TryGetValue(path, out var local) ? local : null;
                DeliverWatches(path, exact, node, old, Events);
            }

            return Ok;
        }

        public byte[]? GetDomainPath(ReadOnlySpan<byte> payload)
        {
            var arg = XsWireCodec.OneArg(payload);
            return arg is null ? Fail(XsWire.XSD_ERROR_EINVAL) : XsWireCodec.String(HomePath(unchecked((uint)XsWireCodec.Atoi(arg))));
        }

        public byte[]? IsDomainIntroduced(ReadOnlySpan<byte> payload)
        {
            var arg = XsWireCodec.OneArg(payload);
            if (arg is null)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(arg));
            var yes = domid == XenStoreLimits.DomidSelf || (domains.TryGetValue(domid, out var d) && d.Introduced);
            return XsWireCodec.String(yes ? "T" : "F");
        }

        public byte[]? Introduce(ReadOnlySpan<byte> payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 3);
            if (args.Count < 3)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(args[0]));
            var port = XsWireCodec.Atoi(args[2]);
            if (port <= 0 || domid >= XenStoreLimits.DomidFirstReserved)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            if (!(domains.TryGetValue(domid, out var d) && d.Introduced))
            {
                domains = domains.SetItem(domid, new XsDomain(domid, true, d?.Target));
                if (domid != 0)
                {
                    FireWatches("@introduceDomain", exact: true);
                }
            }

            return Ok;
        }

        /// <summary>The introduced domain the payload names; null (refused) if it names none.</summary>
        private XsDomain? IntroducedDomainArg(ReadOnlySpan<byte> payload)
        {
            var arg = XsWireCodec.OneArg(payload);
            if (arg is null)
            {
                Refuse(XsWire.XSD_ERROR_EINVAL);
                return null;
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(arg));
            if (domid == 0)
            {
                Refuse(XsWire.XSD_ERROR_EINVAL);
                return null;
            }

            if (domains.TryGetValue(domid, out var d) && d.Introduced)
            {
                return d;
            }

            Refuse(XsWire.XSD_ERROR_ENOENT);
            return null;
        }

        public byte[]? Release(ReadOnlySpan<byte> payload)
        {
            if (IntroducedDomainArg(payload) is not { } d)
            {
                return null;
            }

            domains = domains.Remove(d.DomId);

            // destroy_domain: the domain's nodes go (keep_orphans is off by default) ...
            if (entries.GetValueOrDefault(d.DomId) > 0 && !RemoveOwnedBy(d.DomId, "/"))
            {
                return null;
            }

            entries = entries.Remove(d.DomId);
            introducePerms = WithoutDomain(introducePerms, d.DomId);
            releasePerms = WithoutDomain(releasePerms, d.DomId);

            // ... and so do its connections.
            foreach (var (id, c) in others)
            {
                if (c.DomId == d.DomId && id != conn.Id)
                {
                    others = others.Remove(id);
                }
            }

            FireWatches("@releaseDomain", exact: true);
            return Ok;
        }

        private bool RemoveOwnedBy(uint domid, string path)
        {
            var node = nodes.GetValueOrDefault(path);
            if (node is null)
            {
                return true;
            }

            if (path != "/" && node.Owner == domid)
            {
                return RemoveTree(path);
            }

            foreach (var child in node.Children)
            {
                if (!RemoveOwnedBy(domid, Child(path, child)))
                {
                    return false;
                }
            }

            return true;
        }

        private static ImmutableArray<XsPerm> WithoutDomain(ImmutableArray<XsPerm> perms, uint domid)
        {
            var owner = perms[0].DomId == domid ? perms[0] with { DomId = 0 } : perms[0];
            return [owner, .. perms.Skip(1).Where(p => p.DomId != domid)];
        }

        public byte[]? Resume(ReadOnlySpan<byte> payload) => IntroducedDomainArg(payload) is null ? null : Ok;

        public byte[]? SetTarget(ReadOnlySpan<byte> payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count < 2)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(args[0]));
            var target = unchecked((uint)XsWireCodec.Atoi(args[1]));
            if (!domains.TryGetValue(domid, out var d) || !d.Introduced ||
                !domains.TryGetValue(target, out var t) || !t.Introduced)
            {
                return Fail(XsWire.XSD_ERROR_ENOENT);
            }

            domains = domains.SetItem(domid, d with { Target = target });
            return Ok;
        }

        public byte[]? ResetWatches()
        {
            conn = conn with { Watches = [], Transactions = ImmutableDictionary<uint, XsTransaction>.Empty };
            tx = null;
            return Ok;
        }

        public byte[]? Control(ReadOnlySpan<byte> payload)
        {
            var args = XsWireCodec.SplitStrings(payload);
            if (args.Count == 0)
            {
                return Fail(XsWire.XSD_ERROR_EINVAL);
            }

            switch (args[0])
            {
                case "print" when args.Count == 2:
                    return Ok;
                case "help" when args.Count == 1:
                    return XsWireCodec.String("Supported commands:\nhelp\nprint <string>\n");
                default:
                    return Fail(XsWire.XSD_ERROR_EINVAL);
            }
        }
    }
}
