namespace Paravirt.Core.XenStore;

/// <summary>
/// The store shared by all transports: holds the <see cref="XenStoreState"/> and runs
/// <see cref="XenStoreCore.Process"/> one request at a time, handing each reply and watch event to the
/// sink of the connection it is for. Thread safe; sinks are called under the store's lock and must
/// not block (a transport queues).
/// </summary>
internal sealed class XenStoreServer(XsQuotas? quotas = null)
{
    private readonly Lock gate = new();
    private readonly Dictionary<uint, Action<XsMessage>> sinks = [];
    private XenStoreState state = XenStoreState.Initial(quotas);

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
            sinks[id] = sink;
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
    public void Submit(uint connectionId, in XsMessage request)
    {
        lock (gate)
        {
            if (!state.Connections.ContainsKey(connectionId))
            {
                return; // released or disconnected meanwhile
            }

            var result = XenStoreCore.Process(state, connectionId, request);
            state = result.State;
            if (sinks.TryGetValue(connectionId, out var own))
            {
                own(result.Reply);
            }

            foreach (var e in result.Events)
            {
                if (sinks.TryGetValue(e.ConnectionId, out var sink))
                {
                    sink(e.ToMessage());
                }
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
