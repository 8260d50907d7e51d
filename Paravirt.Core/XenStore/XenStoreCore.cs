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
/// The store's semantics as a pure function: <c>(state, connection, request) → (state, reply, events)</c>.
/// Follows C xenstored 4.17 (tools/xenstore/xenstored_{core,domain,transaction,watch}.c). A request
/// that fails changes nothing (the one exception is TRANSACTION_END, which always ends the transaction).
/// </summary>
internal static class XenStoreCore
{
    /// <summary>Processes one request from connection <paramref name="connectionId"/>.</summary>
    public static XsStepResult Process(XenStoreState state, uint connectionId, XsMessage request)
    {
        if (!state.Connections.TryGetValue(connectionId, out var conn))
        {
            throw new ArgumentException($"XenStore connection {connectionId} is not connected", nameof(connectionId));
        }

        var step = new Step(state, conn, request);
        var reply = step.Run();
        return new XsStepResult(step.Result, reply, step.Events.ToImmutableArray());
    }

    private delegate byte[]? Handler(Step s, byte[] payload);

    // Flags as xenstored's wire_funcs: NOTID ignores tx_id, PRIV needs a privileged connection.
    private readonly record struct Op(Handler Func, bool NoTx = false, bool Priv = false);

    private static readonly Dictionary<xsd_sockmsg_type, Op> Ops = new()
    {
        [xsd_sockmsg_type.XS_CONTROL] = new((s, p) => s.Control(p), Priv: true),
        [xsd_sockmsg_type.XS_DIRECTORY] = new((s, p) => s.Directory(p)),
        [xsd_sockmsg_type.XS_READ] = new((s, p) => s.Read(p)),
        [xsd_sockmsg_type.XS_GET_PERMS] = new((s, p) => s.GetPerms(p)),
        [xsd_sockmsg_type.XS_WATCH] = new((s, p) => s.Watch(p), NoTx: true),
        [xsd_sockmsg_type.XS_UNWATCH] = new((s, p) => s.Unwatch(p), NoTx: true),
        [xsd_sockmsg_type.XS_TRANSACTION_START] = new((s, p) => s.TransactionStart()),
        [xsd_sockmsg_type.XS_TRANSACTION_END] = new((s, p) => s.TransactionEnd(p)),
        [xsd_sockmsg_type.XS_INTRODUCE] = new((s, p) => s.Introduce(p), Priv: true),
        [xsd_sockmsg_type.XS_RELEASE] = new((s, p) => s.Release(p), Priv: true),
        [xsd_sockmsg_type.XS_GET_DOMAIN_PATH] = new((s, p) => s.GetDomainPath(p)),
        [xsd_sockmsg_type.XS_WRITE] = new((s, p) => s.Write(p)),
        [xsd_sockmsg_type.XS_MKDIR] = new((s, p) => s.Mkdir(p)),
        [xsd_sockmsg_type.XS_RM] = new((s, p) => s.Rm(p)),
        [xsd_sockmsg_type.XS_SET_PERMS] = new((s, p) => s.SetPerms(p)),
        [xsd_sockmsg_type.XS_IS_DOMAIN_INTRODUCED] = new((s, p) => s.IsDomainIntroduced(p), Priv: true),
        [xsd_sockmsg_type.XS_RESUME] = new((s, p) => s.Resume(p), Priv: true),
        [xsd_sockmsg_type.XS_SET_TARGET] = new((s, p) => s.SetTarget(p), Priv: true),
        [xsd_sockmsg_type.XS_RESET_WATCHES] = new((s, p) => s.ResetWatches()),
        [xsd_sockmsg_type.XS_DIRECTORY_PART] = new((s, p) => s.DirectoryPart(p)),
    };

    private static readonly byte[] Ok = XsWireCodec.String("OK");

    /// <summary>An error travelling up a handler: the errno name for the XS_ERROR reply.</summary>
    private sealed class XsError(string name) : Exception(name)
    {
        public string Name { get; } = name;
    }

    private const ulong NoGeneration = ulong.MaxValue;

    /// <summary>The working copy of one request. Discarded on error, so a failed request leaves the state as it was.</summary>
    private sealed class Step(XenStoreState original, XsConnection conn, XsMessage request)
    {
        private readonly XenStoreState original = original;
        private readonly XsMessage request = request;
        private readonly XsConnection originalConn = conn;
        private XsConnection conn = conn;
        private XsTransaction? tx;
        private ImmutableDictionary<string, XsNode> nodes = original.Nodes;
        private ulong generation = original.Generation;
        private ImmutableDictionary<uint, int> entries = original.Entries;
        private ImmutableDictionary<uint, XsDomain> domains = original.Domains;
        private ImmutableDictionary<uint, XsConnection> others = original.Connections;
        private ImmutableArray<XsPerm> introducePerms = original.IntroducePerms;
        private ImmutableArray<XsPerm> releasePerms = original.ReleasePerms;
        private XsQuotas Q => original.Quotas;

        /// <summary>Set by a handler whose partial effects must survive its error (TRANSACTION_END).</summary>
        private XenStoreState? persistOnError;

        public XenStoreState Result { get; private set; } = original;
        public List<XsWatchEvent> Events { get; } = [];
        private readonly List<XsWatchEvent> afterReply = [];

        private uint DomId => conn.DomId;
        private bool Privileged => conn.DomId == 0;

        public XsMessage Run()
        {
            var type = request.Kind;
            if (!Ops.TryGetValue(type, out var op))
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

            byte[]? payload;
            try
            {
                payload = op.Func(this, request.Payload);
            }
            catch (XsError e)
            {
                if (persistOnError is { } keep)
                {
                    Result = keep;
                }

                Events.Clear();
                return Error(e.Name);
            }

            if (payload is null || payload.Length > XsWire.XENSTORE_PAYLOAD_MAX)
            {
                Events.Clear();
                return Error(XsWire.XSD_ERROR_E2BIG);
            }

            Result = Commit();
            Events.AddRange(afterReply);
            return new XsMessage(request.Type, request.ReqId, request.TxId, payload);
        }

        private XsMessage Error(string name) =>
            new(xsd_sockmsg_type.XS_ERROR, request.ReqId, request.TxId, XsWireCodec.String(name));

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

        private static XsError Fail(string name) => new(name);

        // ---- paths ------------------------------------------------------------------------

        private string HomePath(uint domid) => string.Create(CultureInfo.InvariantCulture, $"/local/domain/{domid}");

        /// <summary>xenstored's canonicalize: relative paths live under the connection's home.</summary>
        private string Canonicalize(string name) =>
            name.Length > 0 && (name[0] == '/' || name[0] == '@') ? name : HomePath(DomId) + "/" + name;

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

        private static string BaseName(string path) => path[(path.LastIndexOf('/') + 1)..];

        private static string Child(string parent, string name) => parent == "/" ? "/" + name : parent + "/" + name;

        // ---- permissions ------------------------------------------------------------------

        private uint? TargetOf(uint domid) => domains.TryGetValue(domid, out var d) ? d.Target : null;

        /// <summary>xenstored's perm_for_conn.</summary>
        private XsPermFlags PermFor(XsConnection c, ImmutableArray<XsPerm> perms)
        {
            const XsPermFlags all = XsPermFlags.Read | XsPermFlags.Write | XsPermFlags.Owner;
            var target = TargetOf(c.DomId);
            if (c.DomId == 0 || perms[0].DomId == c.DomId || (target is { } t && perms[0].DomId == t))
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

        /// <summary>Reads a node as the current request sees it; inside a transaction, remembers the access.</summary>
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
            Touch(path, global);
            return global;
        }

        private void Touch(string path, XsNode? global)
        {
            if (tx is null || tx.Accessed.ContainsKey(path))
            {
                return;
            }

            if (tx.Accessed.Count >= Q.NodesPerTransaction && !Privileged)
            {
                throw Fail(XsWire.XSD_ERROR_ENOSPC);
            }

            tx = tx with
            {
                Accessed = tx.Accessed.Add(path, new XsAccess(global?.Generation ?? NoGeneration, global?.Perms ?? default)),
            };
        }

        private void StoreNode(string path, XsNode node, bool quotaCheck = true)
        {
            if (quotaCheck && !Privileged && node.RecordSize >= Q.MaxEntrySize)
            {
                throw Fail(XsWire.XSD_ERROR_ENOSPC);
            }

            node = node with { Generation = ++generation };
            if (tx is null)
            {
                nodes = nodes.SetItem(path, node);
            }
            else
            {
                Touch(path, nodes.GetValueOrDefault(path));
                tx = tx with { Overlay = tx.Overlay.SetItem(path, node) };
            }
        }

        private void DeleteNode(string path)
        {
            if (tx is null)
            {
                nodes = nodes.Remove(path);
            }
            else
            {
                Touch(path, nodes.GetValueOrDefault(path));
                tx = tx with { Overlay = tx.Overlay.SetItem(path, null) };
            }
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
        /// otherwise throws ENOENT or EACCES, EACCES whenever the nearest existing ancestor would not grant
        /// <paramref name="perm"/> either (so a missing node reveals nothing).
        /// </summary>
        private XsNode GetNode(string? name, XsPermFlags perm) =>
            TryGetNode(name, perm, out var node) is { } err ? throw Fail(err) : node!;

        /// <summary>GetNode that returns null for ENOENT (callers that create).</summary>
        /// <remarks>Without an exception on the ENOENT path: every write that creates a node takes it.</remarks>
        private XsNode? GetNodeOrNull(string? name, XsPermFlags perm) =>
            TryGetNode(name, perm, out var node) switch
            {
                null => node,
                XsWire.XSD_ERROR_ENOENT => null,
                var err => throw Fail(err),
            };

        /// <summary>xenstored's get_node: the node, or the errno name that explains why not (errno_from_parents for a missing or forbidden one).</summary>
        private string? TryGetNode(string? name, XsPermFlags perm, out XsNode? found)
        {
            found = null;
            if (name is null || !IsValidNodeName(name, Q.MaxPathLength))
            {
                return XsWire.XSD_ERROR_EINVAL;
            }

            var node = ReadNode(name);
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
                p = Parent(p);
                if (ReadNode(p) is { } ancestor)
                {
                    parentPerm = PermFor(conn, ancestor.Perms);
                    break;
                }
            }

            return (parentPerm & perm) != 0 ? err : XsWire.XSD_ERROR_EACCES;
        }

        /// <summary>xenstored's create_node: makes the node and any missing ancestors; new nodes inherit their parent's permissions, owned by the creator if unprivileged.</summary>
        private XsNode CreateNode(string name, byte[] value)
        {
            var missing = new List<string>();
            var at = name;
            XsNode? parent;
            while (true)
            {
                missing.Add(at);
                at = Parent(at);
                parent = ReadNode(at);
                if (parent is not null)
                {
                    break;
                }

                if (at == "/")
                {
                    throw Fail(XsWire.XSD_ERROR_EIO);
                }
            }

            var parentPath = at;
            XsNode created = parent;
            for (var i = missing.Count - 1; i >= 0; i--)
            {
                var path = missing[i];
                if (!Privileged && EntriesOf(DomId) >= Q.EntriesPerDomain)
                {
                    throw Fail(XsWire.XSD_ERROR_ENOSPC);
                }

                parent = parent.AddChild(BaseName(path));
                StoreNode(parentPath, parent);
                var perms = parent.Perms;
                if (!Privileged)
                {
                    perms = perms.SetItem(0, perms[0] with { DomId = DomId });
                }

                created = new XsNode(i == 0 ? value : [], [], 0, perms, 0);
                StoreNode(path, created);
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
            foreach (var c in AllConnections())
            {
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

        private IEnumerable<XsConnection> AllConnections()
        {
            foreach (var (id, c) in others)
            {
                yield return id == conn.Id ? conn : c;
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

        private string WatchPath(XsConnection c, XsWatch w, string name)
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

        public byte[] Directory(byte[] payload)
        {
            var node = GetNode(Canon(XsWireCodec.OneArg(payload)), XsPermFlags.Read);
            return node.ChildrenBytes();
        }

        private string? Canon(string? name) => name is null ? null : Canonicalize(name);

        public byte[] DirectoryPart(byte[] payload)
        {
            if (XsWireCodec.CountStrings(payload) != 2)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var args = XsWireCodec.SplitStrings(payload, 2);
            var node = GetNode(Canonicalize(args[0]), XsPermFlags.Read);
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

        public byte[] Read(byte[] payload) => GetNode(Canon(XsWireCodec.OneArg(payload)), XsPermFlags.Read).Value;

        public byte[] Write(byte[] payload)
        {
            var nul = Array.IndexOf(payload, (byte)0);
            if (nul < 0)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var name = Canonicalize(XsWireCodec.Latin1(payload.AsSpan(0, nul)));
            var value = payload[(nul + 1)..];
            var node = GetNodeOrNull(name, XsPermFlags.Write);
            if (node is null)
            {
                node = CreateNode(name, value);
            }
            else
            {
                node = node with { Value = value };
                StoreNode(name, node);
            }

            FireWatches(name, exact: false, node);
            return Ok;
        }

        public byte[] Mkdir(byte[] payload)
        {
            var name = Canon(XsWireCodec.OneArg(payload));
            if (GetNodeOrNull(name, XsPermFlags.Write) is null)
            {
                var node = CreateNode(name!, []);
                FireWatches(name!, exact: false, node);
            }

            return Ok;
        }

        public byte[] Rm(byte[] payload)
        {
            var name = Canon(XsWireCodec.OneArg(payload));
            if (GetNodeOrNull(name, XsPermFlags.Write) is null)
            {
                // Already gone: fine if the parent exists.
                return ReadNode(Parent(name!)) is not null ? Ok : throw Fail(XsWire.XSD_ERROR_ENOENT);
            }

            if (name == "/")
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            RemoveTree(name!);
            return Ok;
        }

        /// <summary>xenstored's rm_node: deletes the subtree bottom-up (children fire exact watches, the root fires for watchers of it and its ancestors) and unlinks it from its parent.</summary>
        private void RemoveTree(string name)
        {
            var parentPath = Parent(name);
            var parent = ReadNode(parentPath) ?? throw Fail(XsWire.XSD_ERROR_EINVAL);
            DeleteSubtree(name, name);
            StoreNode(parentPath, parent.RemoveChild(BaseName(name)), quotaCheck: false);
        }

        private void DeleteSubtree(string path, string root)
        {
            var node = ReadNode(path);
            if (node is null)
            {
                return;
            }

            foreach (var child in node.Children)
            {
                DeleteSubtree(Child(path, child), root);
            }

            DeleteNode(path);
            FireWatches(path, exact: path != root, node);
            AddEntries(node.Owner, -1);
        }

        public byte[] GetPerms(byte[] payload)
        {
            var node = GetNode(Canon(XsWireCodec.OneArg(payload)), XsPermFlags.Read);
            return XsWireCodec.JoinStrings([.. node.Perms.Select(p => p.ToString())]);
        }

        public byte[] SetPerms(byte[] payload)
        {
            var count = XsWireCodec.CountStrings(payload);
            if (count < 2)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            if (!Privileged && count - 1 > Q.PermsPerNode)
            {
                throw Fail(XsWire.XSD_ERROR_ENOSPC);
            }

            var args = XsWireCodec.SplitStrings(payload);
            var perms = ImmutableArray.CreateBuilder<XsPerm>(count - 1);
            foreach (var s in args.Skip(1))
            {
                perms.Add(XsPerm.TryParse(s, out var p) ? p : throw Fail(XsWire.XSD_ERROR_EINVAL));
            }

            var newPerms = perms.MoveToImmutable();
            var name = args[0];
            if (name.StartsWith('@'))
            {
                ref var special = ref name == "@releaseDomain" ? ref releasePerms
                    : ref name == "@introduceDomain" ? ref introducePerms
                    : ref ThrowRef(XsWire.XSD_ERROR_EINVAL);
                const XsPermFlags need = XsPermFlags.Write | XsPermFlags.Owner;
                if ((PermFor(conn, special) & need) != need)
                {
                    throw Fail(XsWire.XSD_ERROR_EACCES);
                }

                special = newPerms;
                return Ok;
            }

            var path = Canonicalize(name);
            var node = GetNode(path, XsPermFlags.Write | XsPermFlags.Owner);
            if (!Privileged && newPerms[0].DomId != node.Owner)
            {
                throw Fail(XsWire.XSD_ERROR_EPERM);
            }

            var old = node.Perms;
            AddEntries(node.Owner, -1);
            AddEntries(newPerms[0].DomId, +1);
            node = node with { Perms = newPerms };
            StoreNode(path, node);
            FireWatches(path, exact: false, node, old);
            return Ok;
        }

        private static ref ImmutableArray<XsPerm> ThrowRef(string error) => throw Fail(error);

        public byte[] Watch(byte[] payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count != 2 || XsWireCodec.CountStrings(payload) != 2)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var (path, token) = (args[0], args[1]);
            bool relative;
            if (path.StartsWith('@'))
            {
                relative = false;
                if (path.Length > XsWire.XENSTORE_REL_PATH_MAX)
                {
                    throw Fail(XsWire.XSD_ERROR_EINVAL);
                }
            }
            else
            {
                relative = !path.StartsWith('/');
                path = Canonicalize(path);
                if (!IsValidNodeName(path, Q.MaxPathLength))
                {
                    throw Fail(XsWire.XSD_ERROR_EINVAL);
                }
            }

            if (conn.Watches.Any(w => w.Node == path && w.Token == token))
            {
                throw Fail(XsWire.XSD_ERROR_EEXIST);
            }

            if (!Privileged && WatchesOfDomain() > Q.WatchesPerDomain)
            {
                throw Fail(XsWire.XSD_ERROR_E2BIG);
            }

            var watch = new XsWatch(path, token, relative);
            conn = conn with { Watches = conn.Watches.Add(watch) };

            // The initial event, sent after the acknowledgement.
            afterReply.Add(new XsWatchEvent(conn.Id, WatchPath(conn, watch, path), token));
            return Ok;
        }

        private int WatchesOfDomain() =>
            AllConnections().Where(c => c.DomId == DomId).Sum(c => c.Watches.Count);

        public byte[] Unwatch(byte[] payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count != 2 || XsWireCodec.CountStrings(payload) != 2)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var path = Canonicalize(args[0]);
            var watch = conn.Watches.FirstOrDefault(w => w.Node == path && w.Token == args[1])
                ?? throw Fail(XsWire.XSD_ERROR_ENOENT);
            conn = conn with { Watches = conn.Watches.Remove(watch) };
            return Ok;
        }

        public byte[] TransactionStart()
        {
            if (tx is not null)
            {
                throw Fail(XsWire.XSD_ERROR_EBUSY);
            }

            if (!Privileged && conn.Transactions.Count > Q.TransactionsPerConnection)
            {
                throw Fail(XsWire.XSD_ERROR_ENOSPC);
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

        public byte[] TransactionEnd(byte[] payload)
        {
            var arg = XsWireCodec.OneArg(payload);
            if (arg is not ("T" or "F"))
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var t = tx ?? throw Fail(XsWire.XSD_ERROR_ENOENT);
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
                        throw Fail(XsWire.XSD_ERROR_ENOSPC);
                    }
                }
            }

            foreach (var (path, access) in t.Accessed)
            {
                var now = nodes.TryGetValue(path, out var n) ? n.Generation : NoGeneration;
                if (now != access.Generation)
                {
                    throw Fail(XsWire.XSD_ERROR_EAGAIN);
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

        public byte[] GetDomainPath(byte[] payload)
        {
            var arg = XsWireCodec.OneArg(payload) ?? throw Fail(XsWire.XSD_ERROR_EINVAL);
            return XsWireCodec.String(HomePath(unchecked((uint)XsWireCodec.Atoi(arg))));
        }

        public byte[] IsDomainIntroduced(byte[] payload)
        {
            var arg = XsWireCodec.OneArg(payload) ?? throw Fail(XsWire.XSD_ERROR_EINVAL);
            var domid = unchecked((uint)XsWireCodec.Atoi(arg));
            var yes = domid == XenStoreLimits.DomidSelf || (domains.TryGetValue(domid, out var d) && d.Introduced);
            return XsWireCodec.String(yes ? "T" : "F");
        }

        public byte[] Introduce(byte[] payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 3);
            if (args.Count < 3)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(args[0]));
            var port = XsWireCodec.Atoi(args[2]);
            if (port <= 0 || domid >= XenStoreLimits.DomidFirstReserved)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
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

        private XsDomain IntroducedDomainArg(byte[] payload)
        {
            var arg = XsWireCodec.OneArg(payload) ?? throw Fail(XsWire.XSD_ERROR_EINVAL);
            var domid = unchecked((uint)XsWireCodec.Atoi(arg));
            if (domid == 0)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            return domains.TryGetValue(domid, out var d) && d.Introduced ? d : throw Fail(XsWire.XSD_ERROR_ENOENT);
        }

        public byte[] Release(byte[] payload)
        {
            var d = IntroducedDomainArg(payload);
            domains = domains.Remove(d.DomId);

            // destroy_domain: the domain's nodes go (keep_orphans is off by default) ...
            if (entries.GetValueOrDefault(d.DomId) > 0)
            {
                RemoveOwnedBy(d.DomId, "/");
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

        private void RemoveOwnedBy(uint domid, string path)
        {
            var node = nodes.GetValueOrDefault(path);
            if (node is null)
            {
                return;
            }

            if (path != "/" && node.Owner == domid)
            {
                RemoveTree(path);
                return;
            }

            foreach (var child in node.Children)
            {
                RemoveOwnedBy(domid, Child(path, child));
            }
        }

        private static ImmutableArray<XsPerm> WithoutDomain(ImmutableArray<XsPerm> perms, uint domid)
        {
            var owner = perms[0].DomId == domid ? perms[0] with { DomId = 0 } : perms[0];
            return [owner, .. perms.Skip(1).Where(p => p.DomId != domid)];
        }

        public byte[] Resume(byte[] payload)
        {
            IntroducedDomainArg(payload);
            return Ok;
        }

        public byte[] SetTarget(byte[] payload)
        {
            var args = XsWireCodec.SplitStrings(payload, 2);
            if (args.Count < 2)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            var domid = unchecked((uint)XsWireCodec.Atoi(args[0]));
            var target = unchecked((uint)XsWireCodec.Atoi(args[1]));
            if (!domains.TryGetValue(domid, out var d) || !d.Introduced ||
                !domains.TryGetValue(target, out var t) || !t.Introduced)
            {
                throw Fail(XsWire.XSD_ERROR_ENOENT);
            }

            domains = domains.SetItem(domid, d with { Target = target });
            return Ok;
        }

        public byte[] ResetWatches()
        {
            conn = conn with { Watches = [], Transactions = ImmutableDictionary<uint, XsTransaction>.Empty };
            tx = null;
            return Ok;
        }

        public byte[] Control(byte[] payload)
        {
            var args = XsWireCodec.SplitStrings(payload);
            if (args.Count == 0)
            {
                throw Fail(XsWire.XSD_ERROR_EINVAL);
            }

            switch (args[0])
            {
                case "print" when args.Count == 2:
                    return Ok;
                case "help" when args.Count == 1:
                    return XsWireCodec.String("Supported commands:\nhelp\nprint <string>\n");
                default:
                    throw Fail(XsWire.XSD_ERROR_EINVAL);
            }
        }
    }
}
