using System.Collections.Immutable;
using System.Text;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;

namespace Paravirt.Tests.XenStore;

/// <summary>The reply to one request and the watch events it caused.</summary>
internal sealed record XsReply(XsMessage Message, ImmutableArray<XsWatchEvent> Events)
{
    /// <summary>The errno name of an XS_ERROR reply, else null.</summary>
    public string? Error => Message.Kind == xsd_sockmsg_type.XS_ERROR ? Text : null;

    /// <summary>The payload with one trailing NUL removed.</summary>
    public string Text => Encoding.Latin1.GetString(Message.Payload).TrimEnd('\0');

    /// <summary>The NUL-terminated strings of the payload.</summary>
    public List<string> Strings => XsWireCodec.SplitStrings(Message.Payload);

    public List<XsWatchEvent> EventsFor(uint conn) => [.. Events.Where(e => e.ConnectionId == conn)];
}

/// <summary>Drives <see cref="XenStoreCore"/> directly: a state, connections by domid, and requests as strings.</summary>
internal sealed class XsHarness(XsQuotas? quotas = null)
{
    private uint nextReq = 1;

    public XenStoreState State { get; private set; } = XenStoreState.Initial(quotas);

    public uint Connect(uint domid)
    {
        State = State.Connect(domid, out var id);
        return id;
    }

    public XsReply Raw(uint conn, XsMessage request)
    {
        var result = XenStoreCore.Process(State, conn, request);
        State = result.State;
        result.Reply.ReqId.Should().Be(request.ReqId, "a reply echoes the request's req_id");
        result.Reply.TxId.Should().Be(request.TxId, "a reply echoes the request's tx_id");
        return new XsReply(result.Reply, result.Events);
    }

    public XsReply Send(uint conn, xsd_sockmsg_type type, params string[] args) => SendTx(conn, type, 0, args);

    public XsReply SendTx(uint conn, xsd_sockmsg_type type, uint tx, params string[] args) =>
        Raw(conn, XsMessage.Strings(type, nextReq++, tx, args));

    /// <summary>WRITE with the value not NUL-terminated, as xs_write sends it.</summary>
    public XsReply Write(uint conn, string path, string value, uint tx = 0)
    {
        var payload = XsWireCodec.String(path).Concat(Encoding.Latin1.GetBytes(value)).ToArray();
        return Raw(conn, new XsMessage(xsd_sockmsg_type.XS_WRITE, nextReq++, tx, payload));
    }

    public void MustWrite(uint conn, string path, string value, uint tx = 0)
    {
        var r = Write(conn, path, value, tx);
        r.Error.Should().BeNull($"writing {path} should succeed");
        r.Message.Kind.Should().Be(xsd_sockmsg_type.XS_WRITE);
        r.Text.Should().Be("OK");
    }

    public XsReply Read(uint conn, string path, uint tx = 0) => SendTx(conn, xsd_sockmsg_type.XS_READ, tx, path);

    public string MustRead(uint conn, string path, uint tx = 0)
    {
        var r = Read(conn, path, tx);
        r.Error.Should().BeNull($"reading {path} should succeed");
        return Encoding.Latin1.GetString(r.Message.Payload);
    }

    public void MustOk(XsReply r)
    {
        r.Error.Should().BeNull();
        r.Text.Should().Be("OK");
    }

    public uint StartTransaction(uint conn)
    {
        var r = Send(conn, xsd_sockmsg_type.XS_TRANSACTION_START, "");
        r.Error.Should().BeNull();
        return uint.Parse(r.Text, System.Globalization.CultureInfo.InvariantCulture);
    }

    public XsReply EndTransaction(uint conn, uint tx, bool commit) =>
        SendTx(conn, xsd_sockmsg_type.XS_TRANSACTION_END, tx, commit ? "T" : "F");

    /// <summary>A guest domain as a toolstack sets one up: introduced, its home owned by it, and a connection.</summary>
    public uint Guest(uint dom0, uint domid)
    {
        var d = domid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        MustOk(Send(dom0, xsd_sockmsg_type.XS_INTRODUCE, d, "0", "1"));
        MustOk(Send(dom0, xsd_sockmsg_type.XS_MKDIR, $"/local/domain/{d}"));
        MustOk(Send(dom0, xsd_sockmsg_type.XS_SET_PERMS, $"/local/domain/{d}", $"n{d}"));
        return Connect(domid);
    }
}
