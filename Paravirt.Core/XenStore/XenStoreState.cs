using System.Collections.Immutable;
using System.Text;

namespace Paravirt.Core.XenStore;

/// <summary>Access bits of one <see cref="XsPerm"/> (XS_PERM_* of xenstore_lib.h).</summary>
[Flags]
internal enum XsPermFlags
{
    None = 0x00,
    Read = 0x01,
    Write = 0x02,
    /// <summary>Internal: the owner's extra right (never stored in a node's list).</summary>
    Owner = 0x08,
}

/// <summary>One entry of a node's permission list: the first entry names the owner and the default for everyone else.</summary>
internal readonly record struct XsPerm(uint DomId, XsPermFlags Flags)
{
    /// <summary>The wire form: <c>n</c>, <c>r</c>, <c>w</c> or <c>b</c> followed by the decimal domid.</summary>
    public override string ToString()
    {
        var c = (Flags & (XsPermFlags.Read | XsPermFlags.Write)) switch
        {
            XsPermFlags.Read => 'r',
            XsPermFlags.Write => 'w',
            XsPermFlags.Read | XsPermFlags.Write => 'b',
            _ => 'n',
        };
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{c}{(int)DomId}");
    }

    /// <summary>Parses the wire form as xs_strings_to_perms does (the id may be decimal, 0x-hex or 0-octal).</summary>
    public static bool TryParse(string s, out XsPerm perm)
    {
        perm = default;
        if (s.Length < 2)
        {
            return false;
        }

        XsPermFlags flags;
        switch (s[0])
        {
            case 'r': flags = XsPermFlags.Read; break;
            case 'w': flags = XsPermFlags.Write; break;
            case 'b': flags = XsPermFlags.Read | XsPermFlags.Write; break;
            case 'n': flags = XsPermFlags.None; break;
            default: return false;
        }

        if (!TryParseCInteger(s.AsSpan(1), out var id))
        {
            return false;
        }

        perm = new XsPerm(id, flags);
        return true;
    }

    // strtol(p, &end, 0) that must consume everything; the value is stored in an unsigned domid.
    private static bool TryParseCInteger(ReadOnlySpan<char> s, out uint value)
    {
        value = 0;
        var negative = false;
        if (s.Length > 0 && (s[0] == '-' || s[0] == '+'))
        {
            negative = s[0] == '-';
            s = s[1..];
        }

        var radix = 10;
        if (s.Length > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        {
            radix = 16;
            s = s[2..];
        }
        else if (s.Length > 1 && s[0] == '0')
        {
            radix = 8;
            s = s[1..];
        }

        if (s.IsEmpty)
        {
            return false;
        }

        ulong v = 0;
        foreach (var ch in s)
        {
            var d = ch switch
            {
                >= '0' and <= '9' => ch - '0',
                >= 'a' and <= 'f' => ch - 'a' + 10,
                >= 'A' and <= 'F' => ch - 'A' + 10,
                _ => 99,
            };
            if (d >= radix)
            {
                return false;
            }

            v = Math.Min((v * (ulong)radix) + (ulong)d, uint.MaxValue + 1UL);
        }

        value = unchecked((uint)(negative ? -(long)v : (long)v));
        return true;
    }
}

/// <summary>
/// One node of the store. Immutable: a change makes a new node. <see cref="Value"/> is never mutated
/// after construction. <see cref="ChildBytes"/> is the length of the NUL-separated child list, as
/// xenstored's childlen.
/// </summary>
internal sealed record XsNode(byte[] Value, ImmutableList<string> Children, int ChildBytes, ImmutableArray<XsPerm> Perms, ulong Generation)
{
    public uint Owner => Perms[0].DomId;

    public XsNode AddChild(string name) =>
        this with { Children = Children.Add(name), ChildBytes = ChildBytes + name.Length + 1 };

    public XsNode RemoveChild(string name) =>
        this with { Children = Children.Remove(name, StringComparer.Ordinal), ChildBytes = ChildBytes - name.Length - 1 };

    /// <summary>The child list as xenstored stores it: each name followed by a NUL.</summary>
    public byte[] ChildrenBytes()
    {
        var bytes = new byte[ChildBytes];
        var at = 0;
        foreach (var c in Children)
        {
            at += Encoding.Latin1.GetBytes(c, bytes.AsSpan(at));
            bytes[at++] = 0;
        }

        return bytes;
    }

    /// <summary>Size of xenstored's TDB record for this node (the quantity the node-size quota bounds).</summary>
    public int RecordSize => XenStoreLimits.RecordHeaderSize + (Perms.Length * XenStoreLimits.PermSize) + Value.Length + ChildBytes;
}

/// <summary>A registered watch.</summary>
/// <param name="Node">Absolute path, or a special <c>@</c> name.</param>
/// <param name="Token">The client's token.</param>
/// <param name="Relative">Whether it was given relative to the domain's home, so events are reported relative too.</param>
internal sealed record XsWatch(string Node, string Token, bool Relative);

/// <summary>What a transaction remembers of a node it touched: its global generation then and, for watch checks, its permissions.</summary>
internal readonly record struct XsAccess(ulong Generation, ImmutableArray<XsPerm> Perms);

/// <summary>
/// An open transaction. Reads fall through to the global tree for untouched nodes (as xenstored);
/// <see cref="Overlay"/> holds the nodes it wrote (null: deleted in it); <see cref="Accessed"/> the
/// global generation of every node it looked at, checked on commit.
/// </summary>
internal sealed record XsTransaction(
    uint Id,
    ImmutableDictionary<string, XsNode?> Overlay,
    ImmutableDictionary<string, XsAccess> Accessed,
    ImmutableDictionary<string, bool> QueuedWatches,
    ImmutableDictionary<uint, int> EntryDelta,
    bool NodeCreated)
{
    public static XsTransaction Start(uint id) => new(
        id,
        ImmutableDictionary.Create<string, XsNode?>(StringComparer.Ordinal),
        ImmutableDictionary.Create<string, XsAccess>(StringComparer.Ordinal),
        ImmutableDictionary.Create<string, bool>(StringComparer.Ordinal),
        ImmutableDictionary<uint, int>.Empty,
        false);
}

/// <summary>One client of the store: a socket, or later a domain's ring.</summary>
internal sealed record XsConnection(
    uint Id,
    uint DomId,
    ImmutableList<XsWatch> Watches,
    ImmutableDictionary<uint, XsTransaction> Transactions,
    uint NextTransactionId);

/// <summary>A domain known to the store.</summary>
internal sealed record XsDomain(uint DomId, bool Introduced, uint? Target);

/// <summary>
/// The limits, with C xenstored 4.17's defaults (tools/xenstore/xenstored_core.c). They bind only
/// unprivileged domains, as in xenstored.
/// </summary>
internal sealed record XsQuotas
{
    /// <summary>Nodes a domain may own (quota_nb_entry_per_domain); creating more is ENOSPC.</summary>
    public int EntriesPerDomain { get; init; } = 1000;
    /// <summary>Watches of a domain (quota_nb_watch_per_domain); more is E2BIG.</summary>
    public int WatchesPerDomain { get; init; } = 128;
    /// <summary>Bytes of a node's record: header, permissions, value and child list (quota_max_entry_size); ENOSPC.</summary>
    public int MaxEntrySize { get; init; } = 2048;
    /// <summary>Open transactions of a connection (quota_max_transaction); ENOSPC.</summary>
    public int TransactionsPerConnection { get; init; } = 10;
    /// <summary>Permission entries of a node (quota_nb_perms_per_node); ENOSPC.</summary>
    public int PermsPerNode { get; init; } = 5;
    /// <summary>Nodes one transaction may touch (quota_trans_nodes); ENOSPC.</summary>
    public int NodesPerTransaction { get; init; } = 1024;
    /// <summary>Path length beyond a domain's home (quota_max_path_len = XENSTORE_REL_PATH_MAX); EINVAL.</summary>
    public int MaxPathLength { get; init; } = Abi.Io.XsWire.XENSTORE_REL_PATH_MAX;
    /// <summary>Requests a domain may have unanswered (quota_req_outstanding); enforced by a ring transport.</summary>
    public int OutstandingRequests { get; init; } = 20;

    public static XsQuotas Default { get; } = new();
}

/// <summary>Fixed sizes of xenstored's data layout that quotas are measured in.</summary>
internal static class XenStoreLimits
{
    /// <summary>sizeof(struct xs_tdb_record_hdr): u64 generation, u32 num_perms, datalen, childlen, padded to 8.</summary>
    public const int RecordHeaderSize = 24;
    /// <summary>sizeof(struct xs_permissions).</summary>
    public const int PermSize = 8;
    /// <summary>DOMID_SELF.</summary>
    public const uint DomidSelf = 0x7FF0;
    /// <summary>DOMID_FIRST_RESERVED: domids at or above it are not domains.</summary>
    public const uint DomidFirstReserved = 0x7FF0;
}

/// <summary>
/// The whole store as one immutable value: tree, connections (watches, transactions), domains,
/// per-domain node counts, the special watch permissions and the generation counter.
/// </summary>
internal sealed record XenStoreState(
    ImmutableDictionary<string, XsNode> Nodes,
    ulong Generation,
    ImmutableDictionary<uint, XsConnection> Connections,
    uint NextConnectionId,
    ImmutableDictionary<uint, XsDomain> Domains,
    ImmutableDictionary<uint, int> Entries,
    ImmutableArray<XsPerm> IntroducePerms,
    ImmutableArray<XsPerm> ReleasePerms,
    XsQuotas Quotas)
{
    /// <summary>
    /// A fresh store as xenstored's setup_structure leaves it: <c>/</c>, <c>/tool</c> and
    /// <c>/tool/xenstored</c>, owned by dom0 with no access for others; dom0 introduced.
    /// </summary>
    public static XenStoreState Initial(XsQuotas? quotas = null)
    {
        ImmutableArray<XsPerm> perms = [new XsPerm(0, XsPermFlags.None)];
        static XsNode Dir(ImmutableArray<XsPerm> p, params string[] children) =>
            new([], [.. children], children.Sum(c => c.Length + 1), p, 0);
        var nodes = ImmutableDictionary.Create<string, XsNode>(StringComparer.Ordinal)
            .Add("/", Dir(perms, "tool"))
            .Add("/tool", Dir(perms, "xenstored"))
            .Add("/tool/xenstored", Dir(perms));
        return new XenStoreState(
            nodes,
            0,
            ImmutableDictionary<uint, XsConnection>.Empty,
            1,
            ImmutableDictionary<uint, XsDomain>.Empty.Add(0, new XsDomain(0, true, null)),
            ImmutableDictionary<uint, int>.Empty.Add(0, 3),
            perms,
            perms,
            quotas ?? XsQuotas.Default);
    }

    /// <summary>Adds a connection for <paramref name="domId"/>; its id comes back in <paramref name="connectionId"/>.</summary>
    public XenStoreState Connect(uint domId, out uint connectionId)
    {
        connectionId = NextConnectionId;
        var conn = new XsConnection(connectionId, domId, [], ImmutableDictionary<uint, XsTransaction>.Empty, 1);
        return this with { Connections = Connections.Add(connectionId, conn), NextConnectionId = NextConnectionId + 1 };
    }

    /// <summary>Drops a connection with its watches and open transactions.</summary>
    public XenStoreState Disconnect(uint connectionId) => this with { Connections = Connections.Remove(connectionId) };

    /// <summary>Entries (owned nodes) of a domain.</summary>
    public int EntriesOf(uint domId) => Entries.GetValueOrDefault(domId);
}
