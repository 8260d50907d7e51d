using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_xen_version(cmd, arg)</c> with Xen 4.17's sub-ops and answers. With
/// <see cref="HypervisorOptions.HideVersionDetails"/> the build details read as empty strings and
/// build_id is -EPERM, as a release Xen answers an unprivileged guest.
/// </summary>
internal static class XenVersionOp
{
    /// <summary>What a 64-bit PV guest is offered (XENVER_capabilities).</summary>
    public const string Capabilities = Hypervisor.Capabilities;

    public const string Changeset = "paravirt";

    public const string Compiler = ".NET";

    public const string CompileBy = "paravirt";

    public const string CompileDomain = "paravirt";

    public const string CompileDate = "";

    public static long Handle(Vcpu vcpu, ulong cmd, ulong arg, ulong a3, ulong a4, ulong a5)
    {
        var hv = vcpu.Domain.Hypervisor;
        var deny = hv.Options.HideVersionDetails;
        switch ((int)cmd)
        {
            case XenVersion.XENVER_version:
                return (Hypervisor.MajorVersion << 16) | Hypervisor.MinorVersion;
            case XenVersion.XENVER_extraversion:
                return CopyString(vcpu, arg, deny ? "" : Hypervisor.ExtraVersion, XenVersion.XEN_EXTRAVERSION_LEN);
            case XenVersion.XENVER_compile_info:
                return CompileInfo(vcpu, arg, deny);
            case XenVersion.XENVER_capabilities:
                return CopyString(vcpu, arg, deny ? "" : Capabilities, XenVersion.XEN_CAPABILITIES_INFO_LEN);
            case XenVersion.XENVER_changeset:
                return CopyString(vcpu, arg, deny ? "" : Changeset, XenVersion.XEN_CHANGESET_INFO_LEN);
            case XenVersion.XENVER_platform_parameters:
                // Xen keeps reporting HYPERVISOR_VIRT_START to 64-bit PV guests in release builds.
                var parameters = new xen_platform_parameters { virt_start = ArchX86.__HYPERVISOR_VIRT_START };
                return vcpu.TryCopyTo(arg, parameters) ? Result.Ok : Result.Err(Errno.EFAULT);
            case XenVersion.XENVER_get_features:
                return GetFeatures(vcpu, arg);
            case XenVersion.XENVER_pagesize:
                return arg != 0 ? Result.Err(Errno.EINVAL) : Memory.MachineMemory.PageSize;
            case XenVersion.XENVER_guest_handle:
                Span<byte> handle = stackalloc byte[16];
                if (!deny)
                {
                    vcpu.Domain.Uuid.TryWriteBytes(handle, bigEndian: true, out _);
                }
                else
                {
                    handle.Clear();
                }

                return vcpu.TryCopyTo(arg, handle) ? Result.Ok : Result.Err(Errno.EFAULT);
            case XenVersion.XENVER_commandline:
                return deny
                    ? CopyString(vcpu, arg, "", 1)
                    : CopyString(vcpu, arg, hv.Options.CommandLine, 1024);
            case XenVersion.XENVER_build_id:
                return deny ? Result.Err(Errno.EPERM) : BuildId(vcpu, arg);
            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    /// <summary>
    /// Submap 0 by Xen 4.17's rules (xen/common/kernel.c, XENVER_get_features) for a 64-bit PV
    /// domU: a translated domain adds writable_page_tables and auto_translated_physmap and is
    /// not direct-mapped; a classic PV domain is direct-mapped.
    /// </summary>
    public static uint FeatureSubmap0(Domain domain) =>
        (1u << Features.XENFEAT_memory_op_vnode_supported)
        | ((domain.VmAssist & (1UL << Xen.VMASST_TYPE_pae_extended_cr3)) != 0 ? 1u << Features.XENFEAT_pae_pgdir_above_4gb : 0)
        | (domain.IsTranslated ? (1u << Features.XENFEAT_writable_page_tables) | (1u << Features.XENFEAT_auto_translated_physmap) : 0)
        | (1u << Features.XENFEAT_mmu_pt_update_preserve_ad)
        | (1u << Features.XENFEAT_highmem_assist)
        | (1u << Features.XENFEAT_gnttab_map_avail_bits)
        | (domain.IsTranslated ? 1u << Features.XENFEAT_not_direct_mapped : 1u << Features.XENFEAT_direct_mapped);

    private static long GetFeatures(Vcpu vcpu, ulong arg)
    {
        if (!vcpu.TryCopyFrom(arg, out xen_feature_info fi))
        {
            return Result.Err(Errno.EFAULT);
        }

        if (fi.submap_idx != 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        fi.submap = FeatureSubmap0(vcpu.Domain);
        return vcpu.TryCopyTo(arg, fi) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    private static long CompileInfo(Vcpu vcpu, ulong arg, bool deny)
    {
        var info = default(xen_compile_info);
        unsafe
        {
            Fill(new Span<byte>(info.compiler, 64), deny ? "" : Compiler);
            Fill(new Span<byte>(info.compile_by, 16), deny ? "" : CompileBy);
            Fill(new Span<byte>(info.compile_domain, 32), deny ? "" : CompileDomain);
            Fill(new Span<byte>(info.compile_date, 32), deny ? "" : CompileDate);
        }

        return vcpu.TryCopyTo(arg, info) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    /// <summary>
    /// XENVER_build_id: <c>xen_build_id.len</c> is IN (the buffer's size) and the result is the
    /// id's length; a null handle asks for the size only; a buffer too small is -ENOBUFS.
    /// </summary>
    private static long BuildId(Vcpu vcpu, ulong arg)
    {
        ReadOnlySpan<byte> id = BuildIdBytes;
        if (arg == 0)
        {
            return id.Length;
        }

        if (!vcpu.TryCopyFrom(arg, out xen_build_id hdr))
        {
            return Result.Err(Errno.EFAULT);
        }

        if (hdr.len == 0)
        {
            return Result.Err(Errno.EINVAL);
        }

        if (hdr.len < (uint)id.Length)
        {
            return Result.Err(Errno.ENOBUFS);
        }

        // buf[] follows len (a flexible array member): it starts at sizeof(xen_build_id).
        var bufOffset = (ulong)System.Runtime.CompilerServices.Unsafe.SizeOf<xen_build_id>();
        return vcpu.TryCopyTo(arg + bufOffset, id) ? id.Length : Result.Err(Errno.EFAULT);
    }

    /// <summary>A stable identity of this Paravirt build: the SHA-1 of its version string.</summary>
    private static byte[] BuildIdBytes { get; } = System.Security.Cryptography.SHA1.HashData(
        Encoding.UTF8.GetBytes($"paravirt {Hypervisor.MajorVersion}.{Hypervisor.MinorVersion}{Hypervisor.ExtraVersion} {typeof(XenVersionOp).Assembly.GetName().Version}"));

    private static long CopyString(Vcpu vcpu, ulong arg, string value, int size)
    {
        Span<byte> buffer = stackalloc byte[size];
        Fill(buffer, value);
        return vcpu.TryCopyTo(arg, buffer) ? Result.Ok : Result.Err(Errno.EFAULT);
    }

    /// <summary>Writes a NUL-terminated string, truncated to fit, zero-padded (Xen's safe_strcpy into a cleared buffer).</summary>
    private static void Fill(Span<byte> buffer, string value)
    {
        buffer.Clear();
        var n = Math.Min(Encoding.UTF8.GetByteCount(value), buffer.Length - 1);
        Encoding.UTF8.GetBytes(value.AsSpan(0, Math.Min(value.Length, n)), buffer);
    }
}
