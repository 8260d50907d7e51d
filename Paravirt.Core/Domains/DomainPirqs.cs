using Paravirt.Core.Abi;

namespace Paravirt.Core.Domains;

/// <summary>
/// The physical IRQ numbers (PIRQs) of an unprivileged domain, as Xen 4.17 sizes them: the host's
/// GSIs (<see cref="NrIrqsGsi"/>, a host with one 24-pin IO-APIC) plus <c>extra_domU_irqs</c>
/// (32). No device is passed through, so a PIRQ is only ever allocated (PHYSDEVOP_get_free_pirq),
/// never bound to a host interrupt.
/// </summary>
public sealed class DomainPirqs
{
    /// <summary>nr_irqs_gsi: the host's GSIs.</summary>
    public const int NrIrqsGsi = 24;

    /// <summary>d->nr_pirqs of a domU: nr_static_irqs + extra_domU_irqs (32).</summary>
    public const int Count = NrIrqsGsi + 32;

    private readonly Lock _lock = new();
    private readonly bool[] _allocated = new bool[Count];

    /// <summary>pirq_info(d, pirq) is not NULL: the PIRQ was allocated.</summary>
    public bool IsAllocated(uint pirq)
    {
        lock (_lock)
        {
            return pirq < Count && _allocated[pirq];
        }
    }

    /// <summary>
    /// get_free_pirq: a GSI-type PIRQ is the lowest free one from 16 below <see cref="NrIrqsGsi"/>;
    /// any other type takes the highest free one at or above it. The PIRQ, or -ENOSPC.
    /// </summary>
    public int AllocateFree(int type)
    {
        lock (_lock)
        {
            if (type == Physdev.MAP_PIRQ_TYPE_GSI)
            {
                for (var i = 16; i < NrIrqsGsi; i++)
                {
                    if (!_allocated[i])
                    {
                        _allocated[i] = true;
                        return i;
                    }
                }
            }

            for (var i = Count - 1; i >= NrIrqsGsi; i--)
            {
                if (!_allocated[i])
                {
                    _allocated[i] = true;
                    return i;
                }
            }

            return -(int)Errno.ENOSPC;
        }
    }
}
