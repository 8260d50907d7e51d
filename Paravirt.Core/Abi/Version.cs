using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi;

// Mirrors xen/version.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// Constants of <c>xen/version.h</c>: the <c>XENVER_*</c> sub-ops of <c>HYPERVISOR_xen_version</c> and
/// the sizes of its fixed-size string results. (Named so as not to clash with <see cref="System.Version"/>.)
/// </summary>
public static class XenVersion
{
    /// <summary>arg == NULL; returns major:minor (16:16).</summary>
    public const int XENVER_version = 0;
    /// <summary>arg: xen_extraversion_t, <see cref="XEN_EXTRAVERSION_LEN"/> chars (OUT).</summary>
    public const int XENVER_extraversion = 1;
    /// <summary>arg: <see cref="xen_compile_info"/> (OUT).</summary>
    public const int XENVER_compile_info = 2;
    /// <summary>arg: xen_capabilities_info_t, <see cref="XEN_CAPABILITIES_INFO_LEN"/> chars (OUT).</summary>
    public const int XENVER_capabilities = 3;
    /// <summary>arg: xen_changeset_info_t, <see cref="XEN_CHANGESET_INFO_LEN"/> chars (OUT).</summary>
    public const int XENVER_changeset = 4;
    /// <summary>arg: <see cref="xen_platform_parameters"/> (OUT).</summary>
    public const int XENVER_platform_parameters = 5;
    /// <summary>arg: <see cref="xen_feature_info"/> (IN submap_idx, OUT submap).</summary>
    public const int XENVER_get_features = 6;
    /// <summary>arg == NULL; returns the host page size.</summary>
    public const int XENVER_pagesize = 7;
    /// <summary>arg: xen_domain_handle_t, 16 bytes (OUT): the guest's UUID as the toolstack set it.</summary>
    public const int XENVER_guest_handle = 8;
    /// <summary>arg: xen_commandline_t, 1024 chars (OUT): Xen's command line.</summary>
    public const int XENVER_commandline = 9;
    /// <summary>arg: <see cref="xen_build_id"/>; returns bytes written, or the size of the build id if arg is NULL.</summary>
    public const int XENVER_build_id = 10;

    /// <summary>sizeof(xen_extraversion_t).</summary>
    public const int XEN_EXTRAVERSION_LEN = 16;
    /// <summary>sizeof(xen_capabilities_info_t).</summary>
    public const int XEN_CAPABILITIES_INFO_LEN = 1024;
    /// <summary>sizeof(xen_changeset_info_t).</summary>
    public const int XEN_CHANGESET_INFO_LEN = 64;
}

/// <summary>XENVER_compile_info (OUT): how Xen was built. NUL-terminated strings.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xen_compile_info
{
    public fixed byte compiler[64];
    public fixed byte compile_by[16];
    public fixed byte compile_domain[32];
    public fixed byte compile_date[32];
}

/// <summary>XENVER_platform_parameters (OUT).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_platform_parameters
{
    /// <summary>OUT: start of Xen's virtual address range in the guest (<c>HYPERVISOR_VIRT_START</c>).</summary>
    public ulong virt_start;
}

/// <summary>XENVER_get_features: one 32-bit word of the <c>XENFEAT_*</c> bitmap.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_feature_info
{
    /// <summary>IN: which 32-bit submap to return (below <c>XENFEAT_NR_SUBMAPS</c>).</summary>
    public uint submap_idx;
    /// <summary>OUT: the 32-bit submap.</summary>
    public uint submap;
}

/// <summary>
/// XENVER_build_id. In C a flexible array <c>unsigned char buf[]</c> follows <see cref="len"/>
/// (OUT: the build id); it has no size of its own, so only the header is mirrored.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct xen_build_id
{
    /// <summary>IN: size of the buffer that follows.</summary>
    public uint len;
}
