using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Memory.Pv;

/// <summary>
/// The memory model's half of Xen's writable page tables (VMASST_TYPE_writable_pagetables;
/// xen/arch/x86/pv/ro-page-fault.c, Xen 4.17): a guest kernel that stores to one of its validated
/// L1 page tables through its read-only mapping page-faults, and the engine emulates the store,
/// handing each write of the instruction to <see cref="Update"/>, which checks and references the
/// new entry exactly as <c>mmu_update</c> would. See docs/pv-memory.md.
/// </summary>
public static unsafe class WritablePageTables
{
    /// <summary>
    /// ptwr_do_page_fault's first checks for a write fault at <paramref name="va"/>: the L1 entry
    /// mapping it in the vCPU's current tables (guest_get_eff_kern_l1e: every level present, no
    /// superpage) is present and read-only, and maps a frame of the domain that is a validated L1
    /// page table, <paramref name="mfn"/>. False otherwise (the fault is the guest's).
    /// </summary>
    public static bool TryFindTable(Vcpu v, ulong va, out ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(v);
        mfn = 0;
        var table = v.Pv.CurrentBaseMfn;
        if (v.Domain.IsTranslated || table == 0 || !PvMemory.AddressOk(va))
        {
            return false;
        }

        var frames = v.Domain.Hypervisor.Frames;
        var owner = v.Domain.Id;
        ulong entry = 0;
        for (var level = 4; level >= 1; level--)
        {
            if (!frames.IsValid(table) || frames.OwnerOf(table) != owner)
            {
                return false;
            }

            var index = (int)((va >> (12 + (9 * (level - 1)))) & 511);
            // SAFETY: table < Frames (checked above) and index < 512, so the word is inside machine memory.
            entry = Volatile.Read(ref ((ulong*)frames.Memory.FramePointer(table))[index]);
            if ((entry & PvDomainMemory.P) == 0 || (level is 2 or 3 && (entry & PvDomainMemory.PSE) != 0))
            {
                return false;
            }

            table = (entry & PvDomainMemory.AddressMask) >> MachineMemory.PageShift;
        }

        // "We are only looking for read-only mappings" of a page-table page the domain owns.
        if ((entry & PvDomainMemory.RW) != 0 || !frames.IsValid(table) || frames.OwnerOf(table) != owner)
        {
            return false;
        }

        var types = frames.Types;
        if (types.TypeOf(table) != PageType.L1 || !types.IsValidated(table) || types.CountOf(table) == 0)
        {
            return false;
        }

        mfn = table;
        return true;
    }

    /// <summary>
    /// ptwr_emulated_write / ptwr_emulated_cmpxchg: the guest's store of <paramref name="size"/>
    /// (1, 2, 4 or 8) bytes of <paramref name="value"/> at byte <paramref name="offset"/> of the L1
    /// table <paramref name="mfn"/>, merged into its 8-byte entry and validated as mod_l1_entry
    /// does. With a <paramref name="comparand"/>, a compare-exchange: nothing is written (and 0 is
    /// still the answer) when the stored bytes differ. <paramref name="found"/> is what the stored
    /// bytes held. 0, or -EINVAL (the frame is no longer the domain's validated L1, or the store is
    /// not naturally aligned) or the new entry's errno (-EINVAL, -EBUSY, -EPERM as mmu_update): the
    /// emulation then fails and the guest gets its page fault.
    /// </summary>
    public static long Update(Domain d, ulong mfn, uint offset, int size, ulong value, ulong? comparand, out ulong found)
    {
        ArgumentNullException.ThrowIfNull(d);
        found = 0;
        var frames = d.Hypervisor.Frames;
        if (d.IsTranslated || !frames.IsValid(mfn) || !frames.TryGet(mfn, d.Id))
        {
            return -(long)Errno.EINVAL;
        }

        try
        {
            var mm = d.PvMm;
            lock (mm.Lock)
            {
                // page_lock and the type check, again: the table may have been unpinned since the fault.
                var types = frames.Types;
                if (types.TypeOf(mfn) != PageType.L1 || !types.IsValidated(mfn) || types.CountOf(mfn) == 0)
                {
                    return -(long)Errno.EINVAL;
                }

                return PvMemory.Result(mm.UpdateL1Entry(mfn, offset, size, value, comparand, out found));
            }
        }
        finally
        {
            frames.Put(mfn);
        }
    }
}
