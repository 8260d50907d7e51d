using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Grants;

/// <summary>One end of a host-driven copy: a grant reference of <see cref="Domain"/> to domain 0, and the byte offset in the granted page.</summary>
public readonly record struct GrantReference(Domain Domain, uint Ref, int Offset = 0);

/// <summary>
/// The host's (domain 0's) grant access, as a backend uses it: a backend sees a guest's data only
/// through grants the guest made to domain 0 — mapped (<see cref="Map"/>) or copied
/// (<see cref="CopyFrom"/>, <see cref="CopyTo"/>, <see cref="Copy"/>) — with Xen's checks and
/// GNTST_* outcomes. Host mappings count against domain 0's maptrack limit.
/// </summary>
public sealed class HostGrants
{
    private readonly Hypervisor _hv;

    internal HostGrants(Hypervisor hv) => _hv = hv;

    /// <summary>Grants domain 0 has mapped now.</summary>
    public int MappingCount => _hv.HostDomain.Grants.MappingCount;

    /// <summary>
    /// Maps grant <paramref name="grantRef"/> of <paramref name="guest"/> (GNTMAP_host_map, read-only
    /// if asked). The entry must permit access to domain 0 (and writing, unless read-only); while
    /// mapped it shows GTF_reading (and GTF_writing) to the guest. Throws <see cref="GrantException"/>
    /// with the status Xen would give.
    /// </summary>
    public HostGrantMapping Map(Domain guest, uint grantRef, bool readOnly)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var flags = (uint)GrantTable.GNTMAP_host_map | (readOnly ? (uint)GrantTable.GNTMAP_readonly : 0);
        var granter = _hv.FindDomain(guest.Id) == guest ? guest : null;
        var rc = GrantOps.Map(_hv.HostDomain, granter, grantRef, flags, 0, out var handle, out var mfn);
        return rc == GrantStatus.Okay
            ? new HostGrantMapping(_hv, guest, grantRef, readOnly, handle, mfn)
            : throw new GrantException(rc, $"cannot map grant {grantRef} of domain {guest.Id}");
    }

    /// <summary>GNTTABOP_copy from a guest's grant into <paramref name="destination"/>.</summary>
    public GrantStatus CopyFrom(Domain guest, uint grantRef, int offset, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var granter = Live(guest);
        if (granter is null)
        {
            return GrantStatus.BadDomain;
        }

        return GrantOps.HostCopyOut(_hv.HostDomain, granter, grantRef, offset, destination);
    }

    /// <summary>GNTTABOP_copy from <paramref name="source"/> into a guest's writable grant.</summary>
    public GrantStatus CopyTo(Domain guest, uint grantRef, int offset, ReadOnlySpan<byte> source)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var granter = Live(guest);
        if (granter is null)
        {
            return GrantStatus.BadDomain;
        }

        return GrantOps.HostCopyIn(_hv.HostDomain, granter, grantRef, offset, source);
    }

    /// <summary>GNTTABOP_copy between two grants to domain 0 (GNTCOPY_source_gref | GNTCOPY_dest_gref).</summary>
    public GrantStatus Copy(GrantReference source, GrantReference destination, int length)
    {
        ArgumentNullException.ThrowIfNull(source.Domain);
        ArgumentNullException.ThrowIfNull(destination.Domain);
        if ((uint)source.Offset > ushort.MaxValue || (uint)destination.Offset > ushort.MaxValue || (uint)length > ushort.MaxValue)
        {
            return GrantStatus.BadCopyArg;
        }

        if (Live(source.Domain) is null || Live(destination.Domain) is null)
        {
            return GrantStatus.BadDomain;
        }

        return GrantOps.Copy(_hv.HostDomain,
            new GrantOps.CopyEnd(source.Domain.Id, true, source.Ref, 0, (ushort)source.Offset),
            new GrantOps.CopyEnd(destination.Domain.Id, true, destination.Ref, 0, (ushort)destination.Offset),
            (ushort)length);
    }

    private Domain? Live(Domain guest) => _hv.FindDomain(guest.Id) == guest ? guest : null;
}

/// <summary>
/// A grant the host has mapped: the guest's page, readable (and writable unless read-only) through
/// <see cref="Bytes"/> until <see cref="Dispose"/> unmaps it. The mapping holds a reference on the
/// frame, so even a guest destroyed meanwhile cannot have the page reused under it.
/// </summary>
public sealed unsafe class HostGrantMapping : IDisposable
{
    private readonly Hypervisor _hv;
    private readonly byte* _page;
    private int _unmapped;

    internal HostGrantMapping(Hypervisor hv, Domain guest, uint grantRef, bool readOnly, uint handle, ulong mfn)
    {
        _hv = hv;
        Guest = guest;
        Ref = grantRef;
        ReadOnly = readOnly;
        Handle = handle;
        Mfn = mfn;
        _page = hv.Machine.FramePointer(mfn);
    }

    public Domain Guest { get; }

    public uint Ref { get; }

    public bool ReadOnly { get; }

    /// <summary>The maptrack handle (what GNTTABOP_map_grant_ref returns).</summary>
    public uint Handle { get; }

    internal ulong Mfn { get; }

    public bool IsMapped => Volatile.Read(ref _unmapped) == 0;

    /// <summary>The page, read-only. Throws once unmapped.</summary>
    public ReadOnlySpan<byte> Bytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(!IsMapped, this);
            return new ReadOnlySpan<byte>(_page, MachineMemory.PageSize);
        }
    }

    /// <summary>The page, writable. Throws for a read-only mapping and once unmapped.</summary>
    public Span<byte> WritableBytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(!IsMapped, this);
            if (ReadOnly)
            {
                throw new InvalidOperationException($"grant {Ref} of domain {Guest.Id} is mapped read-only");
            }

            return new Span<byte>(_page, MachineMemory.PageSize);
        }
    }

    /// <summary>Unmaps (GNTTABOP_unmap_grant_ref): the guest's GTF_reading/GTF_writing drop when no other pin holds them.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _unmapped, 1) == 0)
        {
            GrantOps.Unmap(_hv.HostDomain, Handle, hostAddr: 1, devBusAddr: 0);
        }
    }
}
