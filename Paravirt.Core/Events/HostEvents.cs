using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Events;

/// <summary>
/// The host's (domain 0's) end of event channels, as a backend uses them: offer a port a guest
/// binds to, or bind to a port a guest offered, then notify and await notifications.
/// </summary>
public sealed class HostEvents
{
    private readonly Hypervisor _hv;

    internal HostEvents(Hypervisor hv) => _hv = hv;

    /// <summary>A dom0 port that <paramref name="guest"/> may bind with EVTCHNOP_bind_interdomain (remote_dom 0).</summary>
    public HostEventChannel AllocUnbound(Domain guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var port = _hv.HostDomain.Events.AllocUnbound(guest.Id);
        if (port < 0)
        {
            throw new XenException((Errno)(-port), $"cannot allocate a host port for domain {guest.Id}");
        }

        return new HostEventChannel(_hv.HostDomain, guest, (uint)port);
    }

    /// <summary>Binds to <paramref name="guestPort"/>, an unbound port of <paramref name="guest"/> that names domain 0.</summary>
    public HostEventChannel BindInterdomain(Domain guest, uint guestPort)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var port = EventChannelTable.BindInterdomain(_hv.HostDomain, guest, guestPort);
        if (port < 0)
        {
            throw new XenException((Errno)(-port),
                $"cannot bind to port {guestPort} of domain {guest.Id}: it must be an unbound port allocated for domain 0");
        }

        return new HostEventChannel(_hv.HostDomain, guest, (uint)port);
    }
}

/// <summary>The host's end of one event channel with a guest.</summary>
public sealed class HostEventChannel : IDisposable
{
    private readonly Domain _host;
    private readonly HostEventDelivery.PortSignal _signal;
    private int _closed;

    internal HostEventChannel(Domain host, Domain guest, uint port)
    {
        _host = host;
        Guest = guest;
        LocalPort = port;
        _signal = ((HostEventDelivery)host.Events.Delivery).Signal(port);
    }

    public Domain Guest { get; }

    /// <summary>The host's port number.</summary>
    public uint LocalPort { get; }

    /// <summary>The guest's port, once the channel is connected.</summary>
    public uint? RemotePort
    {
        get
        {
            var s = default(evtchn_status);
            return _host.Events.Status(LocalPort, ref s) == 0 && s.status == EventChannel.EVTCHNSTAT_interdomain ? s.u.interdomain.port : null;
        }
    }

    /// <summary>EVTCHNOP_send from the host: marks the guest's end pending. Dropped while the guest has not bound yet.</summary>
    public void Notify()
    {
        var rc = _host.Events.Send(LocalPort);
        if (rc < 0)
        {
            throw new XenException((Errno)(-rc), $"host port {LocalPort} is closed");
        }
    }

    /// <summary>Waits for the next notification from the guest; false once this end is closed.</summary>
    public ValueTask<bool> WaitAsync(CancellationToken cancellationToken = default) => _signal.WaitAsync(cancellationToken);

    /// <summary>Whether a notification arrived that no <see cref="WaitAsync"/> has consumed yet.</summary>
    public bool IsPending => _signal.IsSet;

    /// <summary>Closes the host's end; the guest's end becomes unbound.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            _host.Events.Close(LocalPort);
        }
    }
}
