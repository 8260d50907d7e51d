using System.Globalization;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>
/// XenStore operations (docs/misc/xenstore.txt), inside a transaction or not. Paths without a
/// leading '/' are relative to the domain's home, <c>/local/domain/&lt;domid&gt;</c>. Every
/// method returns 0 or a negative Xen errno (the store's error name mapped to <c>Errno</c>: a
/// missing node is -ENOENT, a transaction that lost a race -EAGAIN).
/// </summary>
public abstract class XenStoreAccess
{
    private readonly XenBusClient? _client;

    private protected XenStoreAccess(XenBusClient? client, uint transaction)
    {
        _client = client;
        TransactionId = transaction;
    }

    /// <summary>The connection the requests go through.</summary>
    public XenBusClient Client => _client ?? (XenBusClient)this;

    /// <summary>The transaction id in each request's header (0 = none).</summary>
    public uint TransactionId { get; }

    /// <summary>XS_READ.</summary>
    public long Read(string path, out string value)
    {
        var rc = Client.Request(xsd_sockmsg_type.XS_READ, TransactionId, [path], null, out var reply);
        value = rc < 0 ? "" : XenBusClient.Text(reply);
        return rc;
    }

    /// <summary>XS_READ parsed as a decimal integer (-EINVAL when it is not one).</summary>
    public long ReadInt(string path, out int value)
    {
        value = 0;
        var rc = Read(path, out var text);
        if (rc < 0)
        {
            return rc;
        }

        return int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value) ? 0 : -(long)Core.Abi.Errno.EINVAL;
    }

    /// <summary>XS_WRITE: creates the node (and missing parents) or replaces its value.</summary>
    public long Write(string path, string value) =>
        Client.Request(xsd_sockmsg_type.XS_WRITE, TransactionId, [path], value, out _);

    /// <summary>XS_MKDIR.</summary>
    public long Mkdir(string path) => Client.Request(xsd_sockmsg_type.XS_MKDIR, TransactionId, [path], null, out _);

    /// <summary>XS_RM: the node and its children.</summary>
    public long Rm(string path) => Client.Request(xsd_sockmsg_type.XS_RM, TransactionId, [path], null, out _);

    /// <summary>XS_DIRECTORY: the children's names.</summary>
    public long Directory(string path, out string[] children)
    {
        var rc = Client.Request(xsd_sockmsg_type.XS_DIRECTORY, TransactionId, [path], null, out var reply);
        children = rc < 0 ? [] : XenBusClient.Strings(reply);
        return rc;
    }

    /// <summary>XS_GET_PERMS: e.g. ["n1", "r0"] (owner first; n/r/w/b then a domid).</summary>
    public long GetPerms(string path, out string[] perms)
    {
        var rc = Client.Request(xsd_sockmsg_type.XS_GET_PERMS, TransactionId, [path], null, out var reply);
        perms = rc < 0 ? [] : XenBusClient.Strings(reply);
        return rc;
    }

    /// <summary>XS_SET_PERMS.</summary>
    public long SetPerms(string path, params string[] perms)
    {
        ArgumentNullException.ThrowIfNull(perms);
        return Client.Request(xsd_sockmsg_type.XS_SET_PERMS, TransactionId, [path, .. perms], null, out _);
    }
}

/// <summary>A XenStore transaction: operations see a snapshot; <see cref="End"/> commits or aborts.</summary>
public sealed class XenBusTransaction : XenStoreAccess
{
    internal XenBusTransaction(XenBusClient client, uint id)
        : base(client, id)
    {
    }

    /// <summary>XS_TRANSACTION_END: commit (<paramref name="commit"/>) or abort. A commit that conflicted is -EAGAIN.</summary>
    public long End(bool commit) =>
        Client.Request(xsd_sockmsg_type.XS_TRANSACTION_END, TransactionId, [commit ? "T" : "F"], null, out _);
}
