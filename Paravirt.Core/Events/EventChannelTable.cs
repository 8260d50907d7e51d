using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Events;

/// <summary>What a port is bound to (Xen's ECS_* states).</summary>
internal enum ChannelState : byte
{
    Free,
    /// <summary>Port 0: never handed out.</summary>
    Reserved,
    Unbound,
    Interdomain,
    Virq,
    Ipi,
}

/// <summary>One port's binding. Changed only under the owning domain's event lock.</summary>
internal struct Channel
{
    public ChannelState State;
    public int NotifyVcpu;

    /// <summary>Unbound: the domain allowed to bind. Interdomain: the other end's domain.</summary>
    public ushort RemoteDomid;

    /// <summary>Interdomain: the other end's port.</summary>
    public uint RemotePort;

    /// <summary>Virq: which VIRQ.</summary>
    public int Virq;
}

/// <summary>
/// A domain's event channels with Xen 4.17's semantics (xen/common/event_channel.c): ports are
/// allocated lowest-first from 1 (port 0 is reserved) up to the domain's limit; VIRQs bind per
/// vCPU (global ones only on vCPU 0); an interdomain port closed at one end leaves the other end
/// unbound and waiting for the same domain; closing clears the port's pending bit so a rebind
/// starts clean. Delivery is the 2-level ABI in <see cref="TwoLevelEvents"/> for guests until
/// their first EVTCHNOP_init_control switches them to the FIFO ABI (<see cref="FifoEvents"/>;
/// EVTCHNOP_reset switches back), and awaitable signals (<see cref="HostEventDelivery"/>) for the
/// host, domain 0.
/// </summary>
internal sealed class EventChannelTable
{
    private readonly Domain _domain;
    private readonly int _portLimit;
    private readonly int[] _virqToPort;
    private Channel[] _channels = new Channel[64];
    private IEventDelivery _delivery;
    private int _active;

    public EventChannelTable(Domain domain)
    {
        _domain = domain;
        _portLimit = domain.Limits.MaxEventChannels;
        _virqToPort = new int[domain.Vcpus.Length * Xen.NR_VIRQS];
        _channels[0].State = ChannelState.Reserved;
        _delivery = domain.Id == 0 ? new HostEventDelivery() : new TwoLevelEvents(domain);
    }

    /// <summary>The domain's event lock. Interdomain operations take both domains' locks, lower domid first.</summary>
    public Lock Lock { get; } = new();

    /// <summary>How events reach the domain now (it changes under <see cref="Lock"/> on init_control and reset).</summary>
    public IEventDelivery Delivery => Volatile.Read(ref _delivery);

    /// <summary>The FIFO ABI's state once the domain has switched to it.</summary>
    internal FifoEvents? Fifo => Delivery as FifoEvents;

    /// <summary>Ports in use (not counting the reserved port 0).</summary>
    public int ActiveCount => Volatile.Read(ref _active);

    /// <summary>
    /// Highest port this domain may use: its own limit (Xen's max_evtchn_port) and the ABI's
    /// (max_evtchns: 4096 ports for 2-level, 2^17 for FIFO, whether or not their event words exist yet).
    /// </summary>
    public int MaxPort => Math.Min(_portLimit, (Delivery is FifoEvents or HostEventDelivery ? EventChannel.EVTCHN_FIFO_NR_CHANNELS : EventChannel.EVTCHN_2L_NR_CHANNELS) - 1);

    /// <summary>Ports below this have been allocated at some time (Xen's valid_evtchns).</summary>
    public int ValidPorts => Volatile.Read(ref _channels).Length;

    public static bool VirqIsGlobal(int virq) => virq is not (Xen.VIRQ_TIMER or Xen.VIRQ_DEBUG or Xen.VIRQ_XENOPROF or Xen.VIRQ_XENPMU);

    internal bool IsValid(uint port) => port <= (uint)MaxPort && port < (uint)_channels.Length;

    internal ref Channel At(uint port) => ref _channels[port];

    /// <summary>EVTCHNOP_alloc_unbound in this domain, for <paramref name="remoteDomid"/> to bind.</summary>
    public long AllocUnbound(ushort remoteDomid)
    {
        lock (Lock)
        {
            var port = AllocatePortLocked();
            if (port < 0)
            {
                return port;
            }

            ref var c = ref _channels[port];
            c.State = ChannelState.Unbound;
            c.RemoteDomid = remoteDomid;
            return port;
        }
    }

    /// <summary>EVTCHNOP_bind_interdomain: connects a new port of <paramref name="local"/> to an unbound port of <paramref name="remote"/> that names it.</summary>
    public static long BindInterdomain(Domain local, Domain remote, uint remotePort)
    {
        using var locks = LockBoth(local, remote);
        var lt = local.Events;
        var rt = remote.Events;
        var lport = lt.AllocatePortLocked();
        if (lport < 0)
        {
            return lport;
        }

        if (!rt.IsValid(remotePort) || rt._channels[remotePort].State != ChannelState.Unbound
            || rt._channels[remotePort].RemoteDomid != local.Id || (local == remote && remotePort == (uint)lport))
        {
            lt.FreeLocked((uint)lport);
            return -(long)Errno.EINVAL;
        }

        ref var l = ref lt._channels[lport];
        l.State = ChannelState.Interdomain;
        l.RemoteDomid = remote.Id;
        l.RemotePort = remotePort;
        ref var r = ref rt._channels[remotePort];
        r.State = ChannelState.Interdomain;
        r.RemoteDomid = local.Id;
        r.RemotePort = (uint)lport;

        // Notifications sent to the remote port while it was unbound were dropped: Xen
        // conservatively marks the new local port pending.
        lt.Delivery.SetPending(l.NotifyVcpu, (uint)lport);
        return lport;
    }

    /// <summary>EVTCHNOP_bind_virq.</summary>
    public long BindVirq(int virq, uint vcpu)
    {
        if ((uint)virq >= Xen.NR_VIRQS || (VirqIsGlobal(virq) && vcpu != 0))
        {
            return -(long)Errno.EINVAL;
        }

        if (vcpu >= (uint)_domain.Vcpus.Length)
        {
            return -(long)Errno.ENOENT;
        }

        lock (Lock)
        {
            ref var slot = ref _virqToPort[(vcpu * Xen.NR_VIRQS) + virq];
            if (slot != 0)
            {
                return -(long)Errno.EEXIST;
            }

            var port = AllocatePortLocked();
            if (port < 0)
            {
                return port;
            }

            ref var c = ref _channels[port];
            c.State = ChannelState.Virq;
            c.NotifyVcpu = (int)vcpu;
            c.Virq = virq;
            Volatile.Write(ref slot, port);
            return port;
        }
    }

    /// <summary>EVTCHNOP_bind_ipi.</summary>
    public long BindIpi(uint vcpu)
    {
        if (vcpu >= (uint)_domain.Vcpus.Length)
        {
            return -(long)Errno.ENOENT;
        }

        lock (Lock)
        {
            var port = AllocatePortLocked();
            if (port < 0)
            {
                return port;
            }

            ref var c = ref _channels[port];
            c.State = ChannelState.Ipi;
            c.NotifyVcpu = (int)vcpu;
            return port;
        }
    }

    /// <summary>EVTCHNOP_close.</summary>
    public long Close(uint port)
    {
        while (true)
        {
            Domain? remote;
            lock (Lock)
            {
                if (!IsValid(port))
                {
                    return -(long)Errno.EINVAL;
                }

                ref var c = ref _channels[port];
                switch (c.State)
                {
                    case ChannelState.Free:
                    case ChannelState.Reserved:
                        return -(long)Errno.EINVAL;
                    case ChannelState.Virq:
                        var owner = VirqIsGlobal(c.Virq) ? 0 : c.NotifyVcpu;
                        Volatile.Write(ref _virqToPort[(owner * Xen.NR_VIRQS) + c.Virq], 0);
                        FreeLocked(port);
                        return 0;
                    case ChannelState.Unbound:
                    case ChannelState.Ipi:
                        FreeLocked(port);
                        return 0;
                    case ChannelState.Interdomain:
                        remote = _domain.Hypervisor.FindDomain(c.RemoteDomid) ?? _domain;
                        break;
                    default:
                        return -(long)Errno.EINVAL;
                }
            }

            // Interdomain: take both locks in order and re-check, as Xen's evtchn_close does.
            using (LockBoth(_domain, remote))
            {
                if (!IsValid(port))
                {
                    return -(long)Errno.EINVAL;
                }

                ref var c = ref _channels[port];
                if (c.State != ChannelState.Interdomain || c.RemoteDomid != remote.Id)
                {
                    continue; // changed while unlocked: start again
                }

                var rport = c.RemotePort;
                FreeLocked(port);
                if (remote.Events.IsValid(rport))
                {
                    ref var r = ref remote.Events._channels[rport];
                    if (r.State == ChannelState.Interdomain && r.RemoteDomid == _domain.Id && r.RemotePort == port)
                    {
                        r.State = ChannelState.Unbound;
                        r.RemoteDomid = _domain.Id;
                        r.RemotePort = 0;
                    }
                }

                return 0;
            }
        }
    }

    /// <summary>EVTCHNOP_send: interdomain → the other end; IPI → our own vCPU; unbound → dropped; anything else -EINVAL.</summary>
    public long Send(uint port)
    {
        Channel c;
        lock (Lock)
        {
            if (!IsValid(port))
            {
                return -(long)Errno.EINVAL;
            }

            c = _channels[port];
            switch (c.State)
            {
                case ChannelState.Interdomain:
                    break; // delivered below, outside our lock (lock order is by domid)
                case ChannelState.Ipi:
                    _domain.Meter.CountEventSent();
                    Delivery.SetPending(c.NotifyVcpu, port);
                    return 0;
                case ChannelState.Unbound:
                    return 0;
                default:
                    return -(long)Errno.EINVAL;
            }
        }

        _domain.Meter.CountEventSent();
        var remote = c.RemoteDomid == _domain.Id ? _domain : _domain.Hypervisor.FindDomain(c.RemoteDomid);
        remote?.Events.DeliverFromPeer(c.RemotePort, _domain.Id, port);
        return 0;
    }

    /// <summary>Marks a VIRQ pending if this vCPU (or vCPU 0, for a global VIRQ) has it bound.</summary>
    public void RaiseVirq(int vcpu, int virq)
    {
        if ((uint)virq >= Xen.NR_VIRQS)
        {
            return;
        }

        var owner = VirqIsGlobal(virq) ? 0 : vcpu;
        var port = Volatile.Read(ref _virqToPort[(owner * Xen.NR_VIRQS) + virq]);
        if (port == 0)
        {
            return;
        }

        lock (Lock)
        {
            ref var c = ref _channels[port];
            if (c.State == ChannelState.Virq && c.Virq == virq)
            {
                Delivery.SetPending(VirqIsGlobal(virq) ? c.NotifyVcpu : vcpu, (uint)port);
            }
        }
    }

    /// <summary>EVTCHNOP_status (the caller has checked it may look at this domain).</summary>
    public long Status(uint port, ref evtchn_status status)
    {
        lock (Lock)
        {
            if (!IsValid(port))
            {
                return -(long)Errno.EINVAL;
            }

            var c = _channels[port];
            status.u = default;
            switch (c.State)
            {
                case ChannelState.Free:
                case ChannelState.Reserved:
                    status.status = EventChannel.EVTCHNSTAT_closed;
                    break;
                case ChannelState.Unbound:
                    status.status = EventChannel.EVTCHNSTAT_unbound;
                    status.u.unbound.dom = c.RemoteDomid;
                    break;
                case ChannelState.Interdomain:
                    status.status = EventChannel.EVTCHNSTAT_interdomain;
                    status.u.interdomain.dom = c.RemoteDomid;
                    status.u.interdomain.port = c.RemotePort;
                    break;
                case ChannelState.Virq:
                    status.status = EventChannel.EVTCHNSTAT_virq;
                    status.u.virq = (uint)c.Virq;
                    break;
                case ChannelState.Ipi:
                    status.status = EventChannel.EVTCHNSTAT_ipi;
                    break;
            }

            status.vcpu = (uint)c.NotifyVcpu;
            return 0;
        }
    }

    /// <summary>EVTCHNOP_bind_vcpu: global VIRQs, unbound and interdomain ports may move; others -EINVAL.</summary>
    public long BindVcpu(uint port, uint vcpu)
    {
        if (vcpu >= (uint)_domain.Vcpus.Length)
        {
            return -(long)Errno.ENOENT;
        }

        lock (Lock)
        {
            if (!IsValid(port))
            {
                return -(long)Errno.EINVAL;
            }

            ref var c = ref _channels[port];
            switch (c.State)
            {
                case ChannelState.Virq when VirqIsGlobal(c.Virq):
                case ChannelState.Unbound:
                case ChannelState.Interdomain:
                    c.NotifyVcpu = (int)vcpu;
                    return 0;
                default:
                    return -(long)Errno.EINVAL;
            }
        }
    }

    /// <summary>EVTCHNOP_unmask: only a port in use is unmasked (evtchn_port_unmask checks evtchn_usable).</summary>
    public long Unmask(uint port)
    {
        lock (Lock)
        {
            if (!IsValid(port))
            {
                return -(long)Errno.EINVAL;
            }

            if (IsUsable(_channels[port].State))
            {
                Delivery.Unmask(_channels[port].NotifyVcpu, port);
            }

            return 0;
        }
    }

    /// <summary>
    /// EVTCHNOP_init_control (Xen's evtchn_fifo_init_control): -ENOENT for a vCPU the domain does
    /// not have; the control block must fit in the page and be 8-byte aligned (-EINVAL). The first
    /// one switches the domain to the FIFO ABI, carrying bound ports' pending state across
    /// (setup_ports); if it fails the domain stays on 2-level. Later ones register further vCPUs.
    /// </summary>
    public long InitControl(uint vcpu, ulong gfn, uint offset)
    {
        if (vcpu >= (uint)_domain.Vcpus.Length)
        {
            return -(long)Errno.ENOENT;
        }

        if (offset > (uint)(Memory.MachineMemory.PageSize - FifoEvents.ControlBlockSize) || (offset & 7) != 0)
        {
            return -(long)Errno.EINVAL;
        }

        lock (Lock)
        {
            if (Delivery is FifoEvents fifo)
            {
                return fifo.MapControlBlock((int)vcpu, gfn, offset);
            }

            if (Delivery is not TwoLevelEvents twoLevel)
            {
                return -(long)Errno.ENOSYS; // the host's own ports are not delivered through guest memory
            }

            var previousPorts = MaxPort + 1;
            var created = new FifoEvents(_domain, this, Math.Min(_portLimit, EventChannel.EVTCHN_FIFO_NR_CHANNELS - 1) + 1);
            var rc = created.MapControlBlock((int)vcpu, gfn, offset);
            if (rc < 0)
            {
                created.Destroy();
                return rc;
            }

            Volatile.Write(ref _delivery, created);
            created.SetupPorts(previousPorts, twoLevel.IsPending);
            return 0;
        }
    }

    /// <summary>EVTCHNOP_expand_array (evtchn_fifo_expand_array): -EOPNOTSUPP until the domain uses the FIFO ABI.</summary>
    public long ExpandArray(ulong gfn)
    {
        lock (Lock)
        {
            return Delivery is FifoEvents fifo ? fifo.AddPage(gfn) : -(long)Errno.EOPNOTSUPP;
        }
    }

    /// <summary>
    /// EVTCHNOP_set_priority (evtchn_set_priority, evtchn_port_set_priority): -EINVAL for an invalid
    /// port, -ENOSYS under the 2-level ABI (it has no priorities), -EACCES for a port not in use,
    /// then the FIFO rules.
    /// </summary>
    public long SetPriority(uint port, uint priority)
    {
        lock (Lock)
        {
            if (!IsValid(port))
            {
                return -(long)Errno.EINVAL;
            }

            if (Delivery is not FifoEvents fifo)
            {
                return -(long)Errno.ENOSYS;
            }

            if (!IsUsable(_channels[port].State))
            {
                return -(long)Errno.EACCES;
            }

            return fifo.SetPriority(port, priority);
        }
    }

    /// <summary>
    /// EVTCHNOP_reset (Xen's evtchn_reset): closes every port; if none is left open (-EAGAIN
    /// otherwise: something bound meanwhile), a FIFO domain lets go of its control blocks and event
    /// array and is back on the 2-level ABI.
    /// </summary>
    public long Reset()
    {
        CloseAll();
        lock (Lock)
        {
            if (ActiveCount > 0)
            {
                return -(long)Errno.EAGAIN;
            }

            if (Delivery is FifoEvents fifo)
            {
                fifo.Destroy();
                Volatile.Write(ref _delivery, new TwoLevelEvents(_domain));
            }

            return 0;
        }
    }

    /// <summary>Drops the FIFO ABI's hold on guest frames (Xen's evtchn_fifo_destroy at domain teardown).</summary>
    internal void ReleaseGuestFrames()
    {
        lock (Lock)
        {
            Fifo?.Destroy();
        }
    }

    /// <summary>Closes every port (EVTCHNOP_reset, and domain teardown so peers see their ends unbound).</summary>
    public void CloseAll()
    {
        for (var port = 1u; port < (uint)_channels.Length; port++)
        {
            ChannelState state;
            lock (Lock)
            {
                state = _channels[port].State;
            }

            if (state is not (ChannelState.Free or ChannelState.Reserved))
            {
                Close(port);
            }
        }
    }

    /// <summary>Sets a port pending on behalf of the other end of an interdomain channel.</summary>
    /// <remarks>The sender holds no lock; if either end was closed meanwhile, the binding no longer matches and the event is dropped.</remarks>
    private void DeliverFromPeer(uint port, ushort fromDomid, uint fromPort)
    {
        lock (Lock)
        {
            if (!IsValid(port))
            {
                return;
            }

            var c = _channels[port];
            if (c.State == ChannelState.Interdomain && c.RemoteDomid == fromDomid && c.RemotePort == fromPort)
            {
                Delivery.SetPending(c.NotifyVcpu, port);
            }
        }
    }

    /// <summary>The lowest free port, growing the table as needed; -ENOSPC at the limit, -EINVAL once the domain is dying.</summary>
    private int AllocatePortLocked()
    {
        if (!_domain.IsAlive)
        {
            return -(int)Errno.EINVAL;
        }

        var maxPort = MaxPort;
        var delivery = Delivery;
        for (var port = 1; port <= maxPort; port++)
        {
            if (port >= _channels.Length)
            {
                var grown = new Channel[Math.Min(_channels.Length * 2, maxPort + 1)];
                _channels.CopyTo(grown, 0);
                Volatile.Write(ref _channels, grown);
            }

            // A free port still queued in the guest's FIFO is busy until the guest unlinks it.
            if (_channels[port].State == ChannelState.Free && !delivery.IsBusy((uint)port))
            {
                _channels[port] = default;
                Interlocked.Increment(ref _active);
                delivery.InitPort((uint)port);
                return port;
            }
        }

        return -(int)Errno.ENOSPC;
    }

    /// <summary>Xen's evtchn_usable: a port in use by the guest (not free, not reserved).</summary>
    private static bool IsUsable(ChannelState state) => state is not (ChannelState.Free or ChannelState.Reserved);

    private void FreeLocked(uint port)
    {
        Delivery.ClearPending(port);
        _channels[port] = default;
        Interlocked.Decrement(ref _active);
    }

    private static BothLocks LockBoth(Domain a, Domain b)
    {
        var (first, second) = a.Id <= b.Id ? (a, b) : (b, a);
        first.Events.Lock.Enter();
        if (first != second)
        {
            second.Events.Lock.Enter();
        }

        return new BothLocks(first.Events.Lock, first == second ? null : second.Events.Lock);
    }

    private readonly struct BothLocks(Lock first, Lock? second) : IDisposable
    {
        public void Dispose()
        {
            second?.Exit();
            first.Exit();
        }
    }
}
