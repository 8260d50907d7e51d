using System.Diagnostics;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;

namespace Paravirt.Core.Backends.Network;

/// <summary>What the frontend wrote that shapes how netback serves it (Linux's <c>read_xenbus_vif_flags</c>).</summary>
/// <param name="RxNotify">feature-rx-notify: it notifies when it posts receive buffers (without it netback looks every 30 ms).</param>
/// <param name="Sg">feature-sg: it takes a receive packet in several buffers.</param>
/// <param name="GsoTcpV4">feature-gso-tcpv4: it takes IPv4 TCP GSO packets.</param>
/// <param name="GsoTcpV6">feature-gso-tcpv6: it takes IPv6 TCP GSO packets.</param>
/// <param name="ChecksumV4">Not feature-no-csum-offload: it finishes blank IPv4 TCP/UDP checksums.</param>
/// <param name="ChecksumV6">feature-ipv6-csum-offload: it finishes blank IPv6 TCP/UDP checksums.</param>
/// <param name="MulticastControl">request-multicast-control when it connected: only multicast addresses it added are delivered.</param>
internal sealed record NetifFeatures(bool RxNotify, bool Sg, bool GsoTcpV4, bool GsoTcpV6, bool ChecksumV4, bool ChecksumV6, bool MulticastControl);

/// <summary>One queue's rings and event channels as the frontend published them (<c>queue-N/…</c>, or the top level for one queue).</summary>
internal readonly record struct NetifQueueKeys(uint TxRef, uint RxRef, uint TxPort, uint RxPort);

/// <summary>
/// One connection of a network frontend, and its one port on the switch: its queues
/// (<see cref="NetifQueue"/>, one ring pair each; transmit from any of them enters the switch
/// through this port, and each frame for the vif goes to the queue a flow hash picks), its control
/// ring if it has one (<see cref="NetifControlRing"/>: the receive hash settings), its multicast
/// filter, and what it can take (GSO, blank checksums, several buffers per packet).
/// </summary>
internal sealed class NetifConnection : SwitchPort, XenBus.IBackendConnection
{
    /// <summary>XEN_NETBK_MCAST_MAX: multicast addresses a frontend may add.</summary>
    public const int MaxMulticast = 64;

    private readonly NetifQueue[] _queues;
    private readonly NetifControlRing? _control;
    private readonly Lock _creditLock = new();
    private readonly CreditLimiter? _limiter;
    private readonly Lock _multicastLock = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private NetifHashSettings _hash = NetifHashSettings.Initial;
    private ulong[] _multicast = [];
    private int _multicastControl;
    private IDisposable? _multicastWatch;
    private int _stopping;

    private NetifConnection(NetBack owner, NetifFeatures features, IReadOnlyList<(HostGrantMapping Tx, HostGrantMapping Rx, HostEventChannel TxChannel, HostEventChannel RxChannel)> queues, (HostGrantMapping Ring, HostEventChannel Channel)? control)
        : base(owner.Switch, $"vif{owner.Domain.Id}.{owner.DevId}", owner.QueueFrames, owner.Mtu + VirtualSwitch.MinFrameBytes, queues.Count)
    {
        Owner = owner;
        Features = features;
        _multicastControl = features.MulticastControl ? 1 : 0;
        if (owner.CreditBytes is { } credit)
        {
            // One credit for the vif, whichever queue sends (the rate limits what the guest sends).
            _limiter = new CreditLimiter(credit, owner.CreditWindow!.Value, Stopwatch.GetTimestamp());
        }

        _queues = new NetifQueue[queues.Count];
        for (var i = 0; i < queues.Count; i++)
        {
            var q = queues[i];
            _queues[i] = new NetifQueue(this, i, q.Tx, q.Rx, q.TxChannel, q.RxChannel);
        }

        if (control is { } c)
        {
            _control = new NetifControlRing(this, c.Ring, c.Channel);
        }
    }

    public NetBack Owner { get; }

    public NetifFeatures Features { get; }

    public bool HasCreditLimit => _limiter is not null;

    /// <summary>The receive hash settings (set through the control ring).</summary>
    public NetifHashSettings Hash
    {
        get => Volatile.Read(ref _hash);
        set => Volatile.Write(ref _hash, value);
    }

    /// <summary>Maps every queue's rings (writable grants) and binds their ports, and the control ring's if there is one.</summary>
    public static NetifConnection Open(NetBack owner, NetifFeatures features, IReadOnlyList<NetifQueueKeys> keys, (uint Ref, uint Port)? control)
    {
        var made = new List<IDisposable>();
        try
        {
            var queues = new List<(HostGrantMapping, HostGrantMapping, HostEventChannel, HostEventChannel)>(keys.Count);
            for (var i = 0; i < keys.Count; i++)
            {
                var k = keys[i];
                var what = keys.Count == 1 ? "" : $"queue {i} ";
                var tx = Keep(made, MapRing(owner, k.TxRef, what + "tx"));
                var rx = Keep(made, MapRing(owner, k.RxRef, what + "rx"));
                var txChannel = Keep(made, Bind(owner, k.TxPort));
                var rxChannel = k.RxPort == k.TxPort ? txChannel : Keep(made, Bind(owner, k.RxPort));
                queues.Add((tx, rx, txChannel, rxChannel));
            }

            (HostGrantMapping, HostEventChannel)? ctrl = null;
            if (control is { } c)
            {
                ctrl = (Keep(made, MapRing(owner, c.Ref, "control")), Keep(made, Bind(owner, c.Port)));
            }

            return new NetifConnection(owner, features, queues, ctrl);
        }
        catch
        {
            for (var i = made.Count - 1; i >= 0; i--)
            {
                made[i].Dispose();
            }

            throw;
        }
    }

    private static T Keep<T>(List<IDisposable> made, T resource)
        where T : IDisposable
    {
        made.Add(resource);
        return resource;
    }

    private static HostGrantMapping MapRing(NetBack owner, uint gref, string which)
    {
        try
        {
            return owner.Hypervisor.HostGrants.Map(owner.Domain, gref, readOnly: false);
        }
        catch (GrantException e)
        {
            throw new InvalidOperationException($"cannot map the {which} ring: grant {gref} of domain {owner.Domain.Id} must be a writable grant to domain 0 ({e.Message}, {e.Status})", e);
        }
    }

    private static HostEventChannel Bind(NetBack owner, uint port)
    {
        try
        {
            return owner.Hypervisor.Host.BindInterdomain(owner.Domain, port);
        }
        catch (XenException e)
        {
            throw new InvalidOperationException($"cannot bind event channel {port} of domain {owner.Domain.Id}: {e.Message}", e);
        }
    }

    public void Start()
    {
        if (Owner.Hypervisor.XenStore is { } store)
        {
            // feature-dynamic-multicast-control: request-multicast-control is followed while connected.
            var node = Owner.FrontendPath + "/request-multicast-control";
            _multicastWatch = store.Watch(node, "netback-mcast", _ =>
                Volatile.Write(ref _multicastControl, NetBack.ReadFlag(store.Read(node), false) ? 1 : 0));
        }

        foreach (var q in _queues)
        {
            q.Start();
        }

        _control?.Start();
    }

    /// <summary>Stops every queue and the control ring, takes the port off the switch (queued frames are released), unmaps the rings and closes the ports. Idempotent.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0)
        {
            await _stopped.Task.ConfigureAwait(false);
            return;
        }

        _multicastWatch?.Dispose();
        foreach (var q in _queues)
        {
            await q.StopAsync().ConfigureAwait(false);
        }

        if (_control is not null)
        {
            await _control.StopAsync().ConfigureAwait(false);
        }

        Switch.Detach(this);
        CloseQueue(); // not attached (a refused connect): still release anything queued
        foreach (var q in _queues)
        {
            await q.ReleaseAsync().ConfigureAwait(false);
        }

        _control?.Release();
        _stopped.SetResult();
    }

    /// <summary>True if the frontend finishes blank TCP/UDP checksums of this IP version.</summary>
    public bool TakesPartialChecksum(bool ipv6) => ipv6 ? Features.ChecksumV6 : Features.ChecksumV4;

    /// <summary>
    /// True if the frontend takes GSO frames of <paramref name="gsoType"/> whole: it asked for that
    /// GSO type, takes several buffers per packet and finishes blank checksums of that IP version
    /// (Linux drops TSO from a device without scatter-gather or checksum offload).
    /// </summary>
    public bool TakesGsoFrames(byte gsoType) => Features.Sg && gsoType switch
    {
        Abi.Io.Netif.XEN_NETIF_GSO_TYPE_TCPV4 => Features.GsoTcpV4 && Features.ChecksumV4,
        Abi.Io.Netif.XEN_NETIF_GSO_TYPE_TCPV6 => Features.GsoTcpV6 && Features.ChecksumV6,
        _ => false,
    };

    private protected override bool TakesGso(byte gsoType) => TakesGsoFrames(gsoType);

    /// <summary>With multicast control, a multicast (not broadcast) frame goes only to a frontend that added its address.</summary>
    private protected override bool Admits(ReadOnlySpan<byte> frame)
    {
        if (Volatile.Read(ref _multicastControl) == 0)
        {
            return true;
        }

        var destination = MacAddress.Read(frame);
        if (!destination.IsMulticast || destination.IsBroadcast)
        {
            return true;
        }

        foreach (var m in Volatile.Read(ref _multicast))
        {
            if (m == destination.Value)
            {
                return true;
            }
        }

        Interlocked.Increment(ref Owner.Counters.RxFiltered);
        return false;
    }

    private protected override int SelectQueue(ReadOnlySpan<byte> frame, ref FrameMeta meta)
    {
        var q = RxQueueSelector.Select(frame, Hash, _queues.Length, out var hash, out var hashType);
        if (hashType >= 0)
        {
            meta = meta with { HasHash = true, Hash = hash, HashType = (byte)hashType };
        }

        return q;
    }

    private protected override void OnFrameQueued(int queue) => _queues[queue].Kick();

    /// <summary>XEN_NETIF_EXTRA_TYPE_MCAST_ADD: false when the frontend already has <see cref="MaxMulticast"/> addresses.</summary>
    public bool AddMulticast(MacAddress mac)
    {
        lock (_multicastLock)
        {
            var list = _multicast;
            if (list.Length >= MaxMulticast)
            {
                return false;
            }

            Volatile.Write(ref _multicast, [.. list, mac.Value]);
            return true;
        }
    }

    /// <summary>XEN_NETIF_EXTRA_TYPE_MCAST_DEL: removes one entry of <paramref name="mac"/>, if any (always succeeds, as in netback).</summary>
    public bool RemoveMulticast(MacAddress mac)
    {
        lock (_multicastLock)
        {
            var list = _multicast;
            var i = Array.IndexOf(list, mac.Value);
            if (i >= 0)
            {
                Volatile.Write(ref _multicast, [.. list.AsSpan(0, i), .. list.AsSpan(i + 1)]);
            }

            return true;
        }
    }

    /// <summary>Takes <paramref name="bytes"/> of the vif's transmit credit, or says when to try again.</summary>
    public bool TryConsumeCredit(int bytes, out long retryAt)
    {
        retryAt = 0;
        if (_limiter is null)
        {
            return true;
        }

        lock (_creditLock)
        {
            return _limiter.TryConsume(bytes, Stopwatch.GetTimestamp(), out retryAt);
        }
    }
}
