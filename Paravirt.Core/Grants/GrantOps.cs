using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Grants;

/// <summary>Works on a window of a referenced frame.</summary>
internal delegate void FrameAction(Span<byte> window);

/// <summary>
/// The grant mechanisms shared by the hypercall (a guest mapping or copying) and the host's
/// backend API (domain 0 doing the same): Xen's map_grant_ref, unmap_common, gnttab_copy_one and
/// gnttab_release_mappings, with their GNTST_* outcomes.
/// </summary>
internal static class GrantOps
{
    private const uint MapKinds = GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_host_map;

    /// <summary>
    /// map_grant_ref. A host_map is, for the mapper, a physmap entry at <paramref name="hostAddr"/>
    /// for a translated guest, or the host's own view of the frame (domain 0); a classic PV guest's host_addr is a PTE address this engine has no
    /// page tables for, and gets GNTST_general_error.
    /// </summary>
    public static GrantStatus Map(Domain mapper, Domain? granter, uint gref, uint flags, ulong hostAddr, out uint handle, out ulong mfn)
    {
        handle = 0;
        mfn = 0;
        uint pin = 0;
        var readOnly = (flags & GrantTable.GNTMAP_readonly) != 0;
        if ((flags & GrantTable.GNTMAP_device_map) != 0)
        {
            pin += readOnly ? DomainGrantTable.PinDeviceRead : DomainGrantTable.PinDeviceWrite;
        }

        if ((flags & GrantTable.GNTMAP_host_map) != 0)
        {
            pin += readOnly ? DomainGrantTable.PinHostRead : DomainGrantTable.PinHostWrite;
        }

        if (pin == 0)
        {
            return GrantStatus.BadGntref;
        }

        var isHost = mapper.Id == 0;
        if (mapper.IsTranslated && !isHost
            && (flags & (GrantTable.GNTMAP_device_map | GrantTable.GNTMAP_application_map | GrantTable.GNTMAP_contains_pte)) != 0)
        {
            return GrantStatus.GeneralError; // "No device mapping in HVM domain"
        }

        if (granter is null)
        {
            return GrantStatus.BadDomain;
        }

        if (!mapper.Grants.TryReserveHandle(out handle))
        {
            return GrantStatus.NoSpace;
        }

        var rc = granter.Grants.AcquireForMap(gref, mapper.Id, readOnly, pin, out mfn, out var cacheFlags);
        if (rc != GrantStatus.Okay)
        {
            mapper.Grants.FreeHandle(handle);
            return rc;
        }

        var frames = granter.Hypervisor.Frames;

        // One frame reference per kind of mapping (Xen takes one for the device and one for the host map).
        var references = 1;
        if ((flags & MapKinds) == MapKinds)
        {
            if (frames.TryGet(mfn, granter.Id))
            {
                references = 2;
            }
            else
            {
                rc = GrantStatus.GeneralError;
            }
        }

        // A writable mapping holds a writable type per reference (Xen's get_page_type(PGT_writable_page)),
        // so a classic PV granter's page table can never be mapped writable by anyone.
        var typed = 0;
        while (rc == GrantStatus.Okay && !readOnly && typed < references)
        {
            if (frames.Types.TryGet(mfn, Memory.Pv.PageType.Writable, out _) == Memory.Pv.PageTypeTable.GetResult.Done)
            {
                typed++;
            }
            else
            {
                rc = GrantStatus.GeneralError;
            }
        }

        ulong hostGfn = 0;
        if (rc == GrantStatus.Okay && (flags & GrantTable.GNTMAP_host_map) != 0 && !isHost)
        {
            if (!mapper.IsTranslated)
            {
                rc = GrantStatus.GeneralError; // no PV page tables to put a host mapping in
            }
            else if (cacheFlags != 0 || (flags & ~(uint)GrantTable.GNTMAP_readonly) != GrantTable.GNTMAP_host_map)
            {
                rc = GrantStatus.GeneralError; // create_grant_p2m_mapping
            }
            else
            {
                hostGfn = hostAddr >> MachineMemory.PageShift;
                if (!mapper.MapGrantFrame(hostGfn, mfn, readOnly))
                {
                    rc = GrantStatus.GeneralError;
                }
            }
        }

        if (rc != GrantStatus.Okay)
        {
            for (var i = 0; i < typed; i++)
            {
                frames.Types.Put(mfn);
            }

            for (var i = 0; i < references; i++)
            {
                frames.Put(mfn);
            }

            granter.Grants.ReleasePin(gref, readOnly, pin);
            mapper.Grants.FreeHandle(handle);
            return rc;
        }

        mapper.Grants.Publish(handle, new GrantMapping { Granter = granter, Ref = gref, Flags = flags, Mfn = mfn, HostGfn = hostGfn });
        return GrantStatus.Okay;
    }

    /// <summary>
    /// unmap_common + unmap_common_complete: the host mapping goes if <paramref name="hostAddr"/>
    /// is non-zero (a translated mapper's must name the physmap slot holding this very frame), the
    /// device mapping if <paramref name="devBusAddr"/> is; each kind undone drops its pin and its
    /// frame reference. A granter already destroyed only loses nothing more (its table is gone).
    /// </summary>
    public static GrantStatus Unmap(Domain mapper, uint handle, ulong hostAddr, ulong devBusAddr)
    {
        var rc = mapper.Grants.TakeComponents(handle, hostAddr != 0, devBusAddr, m => RemoveHostMapping(mapper, m, hostAddr), out var mapping, out var done);
        if (rc == GrantStatus.Okay && mapping is not null)
        {
            Complete(mapping, done);
        }

        return rc;
    }

    private static bool RemoveHostMapping(Domain mapper, GrantMapping m, ulong hostAddr)
    {
        if (mapper.Id == 0)
        {
            return true; // the host's view has no page-table or physmap entry
        }

        // replace_grant_p2m_mapping: the slot must hold this grant's frame as a grant mapping.
        return mapper.IsTranslated && mapper.UnmapGrantFrame(hostAddr >> MachineMemory.PageShift, m.Mfn);
    }

    private static void Complete(GrantMapping m, uint done)
    {
        var frames = m.Granter.Hypervisor.Frames;
        var readOnly = m.ReadOnly;
        if ((done & GrantTable.GNTMAP_device_map) != 0)
        {
            m.Granter.Grants.ReleasePin(m.Ref, readOnly, readOnly ? DomainGrantTable.PinDeviceRead : DomainGrantTable.PinDeviceWrite);
            PutFrame(frames, m.Mfn, readOnly);
        }

        if ((done & GrantTable.GNTMAP_host_map) != 0)
        {
            m.Granter.Grants.ReleasePin(m.Ref, readOnly, readOnly ? DomainGrantTable.PinHostRead : DomainGrantTable.PinHostWrite);
            PutFrame(frames, m.Mfn, readOnly);
        }
    }

    /// <summary>Drops one mapping's frame reference, and its writable type if it was a writable mapping.</summary>
    private static void PutFrame(FrameTable frames, ulong mfn, bool readOnly)
    {
        if (!readOnly)
        {
            frames.Types.Put(mfn);
        }

        frames.Put(mfn);
    }

    /// <summary>gnttab_release_mappings: everything a dying mapper still has mapped is unmapped (its physmap goes with it).</summary>
    public static void ReleaseMappings(Domain mapper)
    {
        foreach (var m in mapper.Grants.TakeAllMappings())
        {
            Complete(m, m.Flags & MapKinds);
        }
    }

    /// <summary>One end of a copy once claimed: the frame (referenced), the window the grant allows, and how to let go.</summary>
    private struct CopyBuffer
    {
        public Domain? Domain;
        public ulong Mfn;
        public ushort Start;
        public ushort Length;
        public bool HaveFrame;
        public bool HaveGrant;
        public uint Ref;
        public bool ReadOnly;
        public bool HaveType;

        /// <summary>A destination holds a writable type while it is written (gnttab_copy_claim_buf); false when the frame is a PV page table.</summary>
        public bool TryTypeWritable()
        {
            if (ReadOnly)
            {
                return true;
            }

            HaveType = Domain!.Hypervisor.Frames.Types.TryGet(Mfn, Memory.Pv.PageType.Writable, out _) == Memory.Pv.PageTypeTable.GetResult.Done;
            return HaveType;
        }

        public void Release()
        {
            if (HaveType)
            {
                Domain!.Hypervisor.Frames.Types.Put(Mfn);
                HaveType = false;
            }

            if (HaveGrant)
            {
                Domain!.Grants.ReleasePin(Ref, ReadOnly, ReadOnly ? DomainGrantTable.PinHostRead : DomainGrantTable.PinHostWrite);
                HaveGrant = false;
            }

            if (HaveFrame)
            {
                Domain!.Hypervisor.Frames.Put(Mfn);
                HaveFrame = false;
            }
        }
    }

    /// <summary>One end of a copy as the caller describes it: a grant of <see cref="Domain"/>, or (for a guest) one of its own frames.</summary>
    public readonly record struct CopyEnd(ushort Domid, bool IsGref, uint Ref, ulong Gmfn, ushort Offset);

    /// <summary>
    /// gnttab_copy_one for <paramref name="caller"/> (domain 0 for the host): both ends claimed
    /// (source read-only), then the bounds checked, then the bytes copied. A frame rather than a
    /// grant may only be named with DOMID_SELF.
    /// </summary>
    public static GrantStatus Copy(Domain caller, CopyEnd source, CopyEnd dest, ushort length)
    {
        var src = default(CopyBuffer);
        var dst = default(CopyBuffer);
        try
        {
            var rc = Lock(caller, source, ref src);
            if (rc == GrantStatus.Okay)
            {
                rc = Lock(caller, dest, ref dst);
            }

            if (rc == GrantStatus.Okay)
            {
                rc = Claim(caller, source, ref src, readOnly: true);
            }

            if (rc == GrantStatus.Okay)
            {
                rc = Claim(caller, dest, ref dst, readOnly: false);
            }

            if (rc != GrantStatus.Okay)
            {
                return rc;
            }

            if (source.Offset + length > MachineMemory.PageSize || dest.Offset + length > MachineMemory.PageSize)
            {
                return GrantStatus.BadCopyArg;
            }

            if (source.Offset < src.Start || source.Offset + length > src.Start + src.Length
                || dest.Offset < dst.Start || dest.Offset + length > dst.Start + dst.Length)
            {
                return GrantStatus.GeneralError;
            }

            // Both frames are referenced for the copy; the same frame on both sides is a memmove.
            var memory = caller.Hypervisor.Machine;
            memory.Frame(src.Mfn).Slice(source.Offset, length).CopyTo(memory.Frame(dst.Mfn).Slice(dest.Offset, length));
            return GrantStatus.Okay;
        }
        finally
        {
            src.Release();
            dst.Release();
        }
    }

    /// <summary>
    /// The host's side of a copy: one end is the host's own buffer, the other a grant of
    /// <paramref name="granter"/> to domain 0; the grant's window and the page bound apply.
    /// </summary>
    public static GrantStatus HostCopy(Domain host, Domain granter, uint gref, int offset, int length, bool toGuest, FrameAction transfer)
    {
        var rc = HostClaim(host, granter, gref, offset, length, toGuest, out var buffer);
        try
        {
            if (rc == GrantStatus.Okay)
            {
                transfer(host.Hypervisor.Machine.Frame(buffer.Mfn).Slice(offset, length));
            }

            return rc;
        }
        finally
        {
            buffer.Release();
        }
    }

    /// <summary>The host's copy out of a guest's grant into <paramref name="destination"/>, without a callback.</summary>
    public static GrantStatus HostCopyOut(Domain host, Domain granter, uint gref, int offset, Span<byte> destination)
    {
        var rc = HostClaim(host, granter, gref, offset, destination.Length, toGuest: false, out var buffer);
        try
        {
            if (rc == GrantStatus.Okay)
            {
                host.Hypervisor.Machine.Frame(buffer.Mfn).Slice(offset, destination.Length).CopyTo(destination);
            }

            return rc;
        }
        finally
        {
            buffer.Release();
        }
    }

    /// <summary>The host's copy from <paramref name="source"/> into a guest's writable grant, without a callback.</summary>
    public static GrantStatus HostCopyIn(Domain host, Domain granter, uint gref, int offset, ReadOnlySpan<byte> source)
    {
        var rc = HostClaim(host, granter, gref, offset, source.Length, toGuest: true, out var buffer);
        try
        {
            if (rc == GrantStatus.Okay)
            {
                source.CopyTo(host.Hypervisor.Machine.Frame(buffer.Mfn).Slice(offset, source.Length));
            }

            return rc;
        }
        finally
        {
            buffer.Release();
        }
    }

    /// <summary>
    /// Claims a guest's grant to domain 0 for one copy: pinned, the frame referenced, the window and
    /// page bounds checked. On success the caller copies within [offset, offset + length) of the
    /// frame; in every case it calls <see cref="CopyBuffer.Release"/>.
    /// </summary>
    private static GrantStatus HostClaim(Domain host, Domain granter, uint gref, int offset, int length, bool toGuest, out CopyBuffer buffer)
    {
        buffer = new CopyBuffer { Domain = granter, ReadOnly = !toGuest };
        if (length < 0 || offset < 0 || offset > ushort.MaxValue || length > ushort.MaxValue)
        {
            return GrantStatus.BadCopyArg;
        }

        var rc = granter.Grants.AcquireForCopy(gref, host.Id, !toGuest, out buffer.Mfn, out buffer.Start, out buffer.Length);
        if (rc != GrantStatus.Okay)
        {
            return rc;
        }

        buffer.HaveFrame = true;
        buffer.HaveGrant = true;
        buffer.Ref = gref;
        if (!buffer.TryTypeWritable())
        {
            return GrantStatus.GeneralError;
        }

        if (offset + length > MachineMemory.PageSize)
        {
            return GrantStatus.BadCopyArg;
        }

        if (offset < buffer.Start || offset + length > buffer.Start + buffer.Length)
        {
            return GrantStatus.GeneralError;
        }

        return GrantStatus.Okay;
    }

    private static GrantStatus Lock(Domain caller, CopyEnd end, ref CopyBuffer buffer)
    {
        if (end.Domid != Xen.DOMID_SELF && !end.IsGref)
        {
            return GrantStatus.PermissionDenied;
        }

        buffer.Domain = end.Domid == Xen.DOMID_SELF || end.Domid == caller.Id ? caller : caller.Hypervisor.FindDomain(end.Domid);
        return buffer.Domain is null ? GrantStatus.BadDomain : GrantStatus.Okay;
    }

    private static GrantStatus Claim(Domain caller, CopyEnd end, ref CopyBuffer buffer, bool readOnly)
    {
        var domain = buffer.Domain!;
        buffer.ReadOnly = readOnly;
        if (end.IsGref)
        {
            var rc = domain.Grants.AcquireForCopy(end.Ref, caller.Id, readOnly, out buffer.Mfn, out buffer.Start, out buffer.Length);
            if (rc != GrantStatus.Okay)
            {
                return rc;
            }

            buffer.HaveFrame = true;
            buffer.HaveGrant = true;
            buffer.Ref = end.Ref;
            return buffer.TryTypeWritable() ? GrantStatus.Okay : GrantStatus.GeneralError;
        }

        if (!domain.Grants.TryGetPagedFrame(end.Gmfn, out buffer.Mfn))
        {
            return GrantStatus.BadPage;
        }

        buffer.HaveFrame = true;
        buffer.Start = 0;
        buffer.Length = MachineMemory.PageSize;
        return buffer.TryTypeWritable() ? GrantStatus.Okay : GrantStatus.GeneralError;
    }
}
