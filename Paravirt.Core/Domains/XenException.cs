using Paravirt.Core.Abi;

namespace Paravirt.Core.Domains;

/// <summary>The hypervisor refused a host request; <see cref="Errno"/> is the Xen errno it would give a guest.</summary>
public sealed class XenException(Errno errno, string message) : Exception($"{message} ({errno})")
{
    public Errno Errno { get; } = errno;
}
