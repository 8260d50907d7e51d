namespace Paravirt.Core.Events;

/// <summary>
/// How pending events reach a domain: the 2-level bitmaps in shared_info (<see cref="TwoLevelEvents"/>),
/// the FIFO queues (<see cref="FifoEvents"/>), or, for the host (domain 0), signals the host awaits
/// (<see cref="HostEventDelivery"/>). The channel table decides which port fires; this decides how.
/// </summary>
internal interface IEventDelivery
{
    void SetPending(int vcpuId, uint port);

    void ClearPending(uint port);

    void Unmask(int vcpuId, uint port);

    bool IsPending(uint port);

    bool IsMasked(uint port);

    /// <summary>Xen's evtchn_port_init: a port was just bound.</summary>
    void InitPort(uint port)
    {
    }

    /// <summary>Xen's is_busy: a free port that must not be handed out yet (FIFO: still LINKED).</summary>
    bool IsBusy(uint port) => false;
}
