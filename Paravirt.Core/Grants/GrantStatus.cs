using Paravirt.Core.Abi;

namespace Paravirt.Core.Grants;

/// <summary>The outcome of one grant operation: Xen's <c>enum grant_status</c> (GNTST_*), as written to each op's status field.</summary>
public enum GrantStatus : short
{
    Okay = GrantTable.GNTST_okay,
    GeneralError = GrantTable.GNTST_general_error,
    BadDomain = GrantTable.GNTST_bad_domain,
    BadGntref = GrantTable.GNTST_bad_gntref,
    BadHandle = GrantTable.GNTST_bad_handle,
    BadVirtAddr = GrantTable.GNTST_bad_virt_addr,
    BadDevAddr = GrantTable.GNTST_bad_dev_addr,
    NoDeviceSpace = GrantTable.GNTST_no_device_space,
    PermissionDenied = GrantTable.GNTST_permission_denied,
    BadPage = GrantTable.GNTST_bad_page,
    BadCopyArg = GrantTable.GNTST_bad_copy_arg,
    AddressTooBig = GrantTable.GNTST_address_too_big,
    Eagain = GrantTable.GNTST_eagain,
    NoSpace = GrantTable.GNTST_no_space,
}

/// <summary>A grant operation the host asked for failed; <see cref="Status"/> is what Xen would write to a guest's op.</summary>
public sealed class GrantException(GrantStatus status, string message) : Exception($"{message} ({status})")
{
    public GrantStatus Status { get; } = status;
}
