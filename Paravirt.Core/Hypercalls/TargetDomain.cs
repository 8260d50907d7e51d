using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>Which domain a hypercall argument names, as an unprivileged caller sees it.</summary>
internal enum TargetDomain
{
    /// <summary>DOMID_SELF or the caller's own id.</summary>
    Self,

    /// <summary>Another existing domain (the host included): XSM_TARGET refuses an unprivileged caller.</summary>
    Other,

    /// <summary>No such domain.</summary>
    Missing,
}

internal static class TargetDomains
{
    /// <summary>Xen's rcu_lock_domain_by_any_id, classified for the dummy XSM policy's XSM_TARGET check.</summary>
    public static TargetDomain Classify(Vcpu vcpu, ushort domid)
    {
        var self = vcpu.Domain;
        if (domid == Xen.DOMID_SELF || domid == self.Id)
        {
            return TargetDomain.Self;
        }

        return self.Hypervisor.FindDomain(domid) is null ? TargetDomain.Missing : TargetDomain.Other;
    }
}
