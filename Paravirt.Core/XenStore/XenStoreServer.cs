namespace Paravirt.Core.XenStore;

/// <summary>
/// The store shared by all transports: holds the <see cref="XenStoreState"/> and runs
/// <see cref="XenStoreCore"/> one request at a time, handing each reply and watch event to the
/// sink of the connection it is for. Thread safe; sinks are called under the store's lock and must
/// not block (a transport queues). A sink must not keep the message's payload array: it may be the
/// node's own value (a READ) or a shared constant (OK, an error name); encode or copy it.
/// </summary>
/// <remarks>
/// The steady state allocates nothing per request that changes nothing: one reusable
/// <see cref="XenStoreCore.Processor"/> works every request, paths are interned per connection, a
/// READ answers with the node's own value and an error with a prebuilt payload.
/// </remarks>
internal sealed class XenStoreServer(XsQuotas? quotas = null)
{
    private readonly Lock gate = new();
    private readonly Dictionary<uint, Sink> sinks = [];
    private readonly XenStoreCore.Processor processor = new();
    private bool processing;
    private XenStoreState state = XenStoreState.Initial(quotas);

    private sealed record Sink(Action<XsMessage> Deliver, XsPathCache Paths);

    /// <summary>A snapshot of the whole store.</summary>
    public XenStoreState State
    {
        get
        {
            lock (gate)
            {
                return state;
            }
        }
    }

    /// <summary>Adds a connection acting as <paramref name="domId"/> (0 is privileged); its messages go to <paramref name="sink"/>.</summary>
    public uint Connect(uint domId, Action<XsMessage> sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        lock (gate)
        {
            state = state.Connect(domId, out var id);
            sinks[id] = new Sink(sink, new XsPathCache(domId));
            return id;
        }
    }

    /// <summary>Removes a connection: its watches and open transactions go with it.</summary>
    public void Disconnect(uint connectionId)
    {
        lock (gate)
        {
            state = state.Disconnect(connectionId);
            sinks.Remove(connectionId);
        }
    }

    /// <summary>Processes one request; its reply and any watch events reach the sinks before this returns.</summary>
    public void Submit(uint connectionId, in XsMessage request) =>
        Submit(connectionId, new XsHeader(request.Type, request.ReqId, request.TxId), request.Payload);

    /// <summary>
    /// Processes one request whose payload the caller owns (a transport's reused buffer); nothing
    /// keeps <paramref name="payload"/> after the call. Reply and events reach the sinks before this returns.
    /// </summary>
    public void Submit(uint connectionId, XsHeader header, ReadOnlySpan<byte> payload)
    {
        lock (gate)
        {
            if (!state.Connections.TryGetValue(connectionId, out var conn) || !sinks.TryGetValue(connectionId, out var own))
            {
                return; // released or disconnected meanwhile
            }

            // A sink that submits again from inside a delivery (the lock is re-entrant) gets a
            // processor of its own, so the outer request's events stay intact.
            var step = processing ? new XenStoreCore.Processor() : processor;
            var outer = processing;
            processing = true;
            try
            {
                var reply = step.Run(state, conn, header, payload, own.Paths);
                state = step.Result;
                own.Deliver(reply);
                foreach (var e in step.Events)
                {
                    if (sinks.TryGetValue(e.ConnectionId, out var sink))
                    {
                        sink.Deliver(e.ToMessage());
                    }
                }

                step.Events.Clear();
            }
            finally
            {
                processing = outer;
            }

            // A RELEASE may have dropped connections of the released domain. Only then do the
            // counts differ, so the common request does not walk the sinks.
            if (sinks.Count != state.Connections.Count)
            {
                foreach (var id in sinks.Keys.Where(id => !state.Connections.ContainsKey(id)).ToList())
                {
                    sinks.Remove(id);
                }
            }
        }
    }
}
