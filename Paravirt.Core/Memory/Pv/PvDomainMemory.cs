using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Memory.Pv;

/// <summary>
/// One classic PV domain's page tables as Xen keeps them (xen/arch/x86/mm.c): taking a page-table
/// type validates every entry of the frame, and every validated entry holds a reference on what it
/// maps (a general reference on the frame; for an L1 writable entry also a writable type; for an
/// L2–L4 entry the type of the next level down). Dropping the last type reference of a table drops
/// what its entries hold. Page-table changes of one domain are serialised by <see cref="Lock"/>
/// (Xen's page lock and preemptible validation, without the preemption).
/// </summary>
/// <remarks>
/// The methods named after Xen's (mod_l1_entry …) return an <see cref="Errno"/> or null and must be
/// called with <see cref="Lock"/> held; the public surface is <see cref="PvMemory"/> and the
/// hypercalls.
/// </remarks>
internal sealed unsafe class PvDomainMemory
{
    // PTE bits (Intel SDM vol. 3, 4.5; Xen's _PAGE_*).
    public const ulong P = 1, RW = 2, US = 4, PWT = 8, PCD = 0x10, A = 0x20, D = 0x40, PSE = 0x80, G = 0x100;

    /// <summary>_PAGE_GUEST_KERNEL (pte bit 52): Xen marks kernel mappings it made user-accessible.</summary>
    public const ulong GuestKernel = 1UL << 52;

    /// <summary>_PAGE_GNTTAB (pte bit 62): only Xen sets it, on grant mappings.</summary>
    public const ulong GntTab = 1UL << 62;

    public const ulong NX = 1UL << 63;

    /// <summary>The frame bits of an entry (bits 12–51).</summary>
    public const ulong AddressMask = 0x000F_FFFF_FFFF_F000UL;

    /// <summary>
    /// base_disallow_mask: everything but present, RW, user, accessed, dirty, the available bits and
    /// NX, i.e. PWT, PCD, PSE/PAT and global.
    /// </summary>
    public const ulong BaseDisallow = PWT | PCD | PSE | G;

    /// <summary>L1_DISALLOW_MASK for a domain with no I/O memory: global allowed, cache attributes and _PAGE_GNTTAB not.</summary>
    public const ulong L1Disallow = (BaseDisallow | GntTab) & ~G;

    /// <summary>The root slots Xen keeps for itself (HYPERVISOR_VIRT_START..END: ROOT_PAGETABLE_FIRST/LAST_XEN_SLOT).</summary>
    public const int FirstXenSlot = (int)((ArchX86.HYPERVISOR_VIRT_START >> 39) & 511);

    public const int LastXenSlot = (int)(((ArchX86.HYPERVISOR_VIRT_END - 1) >> 39) & 511);

    /// <summary>PADDR_MASK &gt;&gt; PAGE_SHIFT: the "invalid MFN" of an L1 entry that Xen answers -EINVAL rather than -EPERM.</summary>
    private const ulong InvalidMfn = (1UL << 40) - 1;

    private readonly Domain _domain;
    private readonly FrameTable _frames;
    private readonly PageTypeTable _types;
    private readonly MachineMemory _memory;
    private readonly ulong[] _ldtBase;
    private readonly uint[] _ldtEntries;

    // The base pointers this model holds an L4 type reference for, per vCPU: [2v] kernel, [2v+1]
    // user. Teardown and base changes release exactly these, whatever else wrote PvVcpuState.
    private readonly ulong[] _heldBases;

    public PvDomainMemory(Domain domain, FrameTable frames, int vcpus)
    {
        _domain = domain;
        _frames = frames;
        _types = frames.Types;
        _memory = frames.Memory;
        _ldtBase = new ulong[vcpus];
        _ldtEntries = new uint[vcpus];
        _heldBases = new ulong[vcpus * 2];
    }

    /// <summary>Serialises this domain's page-table validation, updates, pins and base-pointer changes.</summary>
    public Lock Lock { get; } = new();

    private ushort Owner => _domain.Id;

    public static bool IsXenSlot(int slot) => slot is >= FirstXenSlot and <= LastXenSlot;

    /// <summary>The LDT a vCPU set with MMUEXT_SET_LDT (linear base, entries).</summary>
    public (ulong Base, uint Entries) Ldt(int vcpu)
    {
        lock (Lock)
        {
            return (_ldtBase[vcpu], _ldtEntries[vcpu]);
        }
    }

    public void SetLdt(int vcpu, ulong linear, uint entries)
    {
        lock (Lock)
        {
            _ldtBase[vcpu] = linear;
            _ldtEntries[vcpu] = entries;
        }
    }

    /// <summary>Asks every vCPU of the domain to drop its cached translations.</summary>
    public void FlushAllTlbs()
    {
        foreach (var v in _domain.Vcpus)
        {
            v.Pv.RequestTlbFlush();
        }
    }

    // ---- references and types ----

    /// <summary>get_page_from_mfn + get_page_type: a general reference and a type reference, validating the frame if its type is new.</summary>
    public Errno? GetPageAndType(ulong mfn, PageType type)
    {
        if (!_frames.IsValid(mfn) || !_frames.TryGet(mfn, Owner))
        {
            return Errno.EINVAL;
        }

        var rc = GetType(mfn, type);
        if (rc is not null)
        {
            _frames.Put(mfn);
        }

        return rc;
    }

    public void PutPageAndType(ulong mfn)
    {
        PutType(mfn);
        _frames.Put(mfn);
    }

    /// <summary>_get_page_type: the caller holds a general reference on the frame.</summary>
    public Errno? GetType(ulong mfn, PageType type)
    {
        switch (_types.TryGet(mfn, type, out var previous))
        {
            case PageTypeTable.GetResult.Done:
                return null;
            case PageTypeTable.GetResult.Mismatch:
                return Errno.EINVAL;
        }

        // The type changed: nothing may keep a writable translation of what is about to be checked.
        if (previous == PageType.Writable)
        {
            FlushAllTlbs();
        }

        var rc = type is >= PageType.L1 and <= PageType.L4 ? Promote(mfn, (int)type) : null;
        _types.FinishValidation(mfn, rc is null);
        return rc;
    }

    /// <summary>put_page_type: dropping the last reference of a validated table drops what its entries hold.</summary>
    public void PutType(ulong mfn)
    {
        var type = _types.TypeOf(mfn);
        if (_types.Put(mfn))
        {
            Demote(mfn, (int)type);
            _types.FinishDevalidation(mfn);
        }
    }

    // ---- validation (promote_lN_table / demote_lN_table) ----

    private ulong* Table(ulong mfn) => (ulong*)_memory.FramePointer(mfn);

    private Errno? Promote(ulong mfn, int level)
    {
        // SAFETY: the caller holds a general reference on mfn, so the frame stays allocated; 512 entries fill the page.
        var table = Table(mfn);
        for (var i = 0; i < 512; i++)
        {
            if (level == 4 && IsXenSlot(i))
            {
                continue;
            }

            var e = Volatile.Read(ref table[i]);
            if ((e & P) == 0)
            {
                continue;
            }

            var rc = GetFromEntry(e, level, mfn);
            if (rc is not null)
            {
                for (var j = 0; j < i; j++)
                {
                    if (!(level == 4 && IsXenSlot(j)))
                    {
                        PutFromEntry(Volatile.Read(ref table[j]), level, mfn);
                    }
                }

                return rc;
            }

            Volatile.Write(ref table[i], Adjust(e, level));
        }

        if (level == 4)
        {
            // init_xen_l4_slots clobbers whatever the guest left in Xen's slots; ours stay empty
            // (the engine presents the read-only M2P window itself).
            for (var i = FirstXenSlot; i <= LastXenSlot; i++)
            {
                Volatile.Write(ref table[i], 0);
            }
        }

        return null;
    }

    private void Demote(ulong mfn, int level)
    {
        var table = Table(mfn);
        for (var i = 0; i < 512; i++)
        {
            if (!(level == 4 && IsXenSlot(i)))
            {
                PutFromEntry(Volatile.Read(ref table[i]), level, mfn);
            }
        }
    }

    /// <summary>get_page_from_l1e … get_page_from_l4e for a present entry of a table at <paramref name="level"/>.</summary>
    private Errno? GetFromEntry(ulong e, int level, ulong tableMfn)
    {
        var mfn = (e & AddressMask) >> MachineMemory.PageShift;
        if (level == 1)
        {
            if ((e & L1Disallow) != 0)
            {
                return Errno.EINVAL;
            }

            if (!_frames.IsValid(mfn))
            {
                // Not RAM: MMIO, which a domain without I/O capabilities may not map.
                return mfn == InvalidMfn ? Errno.EINVAL : Errno.EPERM;
            }

            // Another domain's frame, or a free one: "could not pin".
            if (!_frames.TryGet(mfn, Owner))
            {
                return Errno.EBUSY;
            }

            if ((e & RW) != 0 && GetType(mfn, PageType.Writable) is not null)
            {
                _frames.Put(mfn);
                return Errno.EBUSY;
            }

            return null;
        }

        if ((e & BaseDisallow) != 0)
        {
            return Errno.EINVAL;
        }

        // Linear (recursive) page tables are not supported: a self-reference fails its type check.
        return GetPageAndType(mfn, (PageType)(level - 1));
    }

    /// <summary>put_page_from_l1e … put_page_from_l4e.</summary>
    private void PutFromEntry(ulong e, int level, ulong tableMfn)
    {
        if ((e & P) == 0)
        {
            return;
        }

        var mfn = (e & AddressMask) >> MachineMemory.PageShift;
        if (level == 1)
        {
            if ((e & RW) != 0)
            {
                PutType(mfn);
            }

            _frames.Put(mfn);
            return;
        }

        if (mfn != tableMfn)
        {
            PutPageAndType(mfn);
        }
    }

    /// <summary>adjust_guest_l1e … adjust_guest_l4e for a 64-bit PV domain: what Xen stores for a guest entry.</summary>
    public static ulong Adjust(ulong e, int level)
    {
        if ((e & P) == 0)
        {
            return e;
        }

        switch (level)
        {
            case 1:
                // The guest kernel runs in ring 3: its supervisor pages become user pages marked
                // _PAGE_GUEST_KERNEL; real user pages become global.
                if ((e & US) == 0)
                {
                    e |= GuestKernel | US;
                }

                if ((e & GuestKernel) == 0)
                {
                    e |= G | US;
                }

                return e;
            case 4:
                return e | A | US;
            default:
                return e | US;
        }
    }

    // ---- entry updates (mod_lN_entry) ----

    /// <summary>
    /// mod_l1_entry … mod_l4_entry: replaces entry <paramref name="index"/> of the validated table
    /// <paramref name="tableMfn"/> at <paramref name="level"/> with <paramref name="value"/>, taking
    /// what the new entry needs before dropping what the old one held.
    /// </summary>
    public Errno? ModifyEntry(ulong tableMfn, int index, int level, ulong value, bool preserveAd)
    {
        if (level == 4 && IsXenSlot(index))
        {
            return Errno.EINVAL; // "L4 update in Xen-private area"
        }

        if (TakeNewEntry(ref value, level, tableMfn) is { } rc)
        {
            return rc;
        }

        var old = WriteEntry(tableMfn, index, value, preserveAd);
        PutFromEntry(old, level, tableMfn);
        return null;
    }

    /// <summary>
    /// The checks and references of a new entry, as mod_lN_entry and ptwr_emulated_update take them
    /// before the write: the disallowed bits, Xen's adjustment (<paramref name="value"/> becomes what
    /// is stored) and get_page_from_lNe. A not-present entry needs nothing.
    /// </summary>
    private Errno? TakeNewEntry(ref ulong value, int level, ulong tableMfn)
    {
        if ((value & P) == 0)
        {
            return null;
        }

        var disallow = level == 1 ? L1Disallow : BaseDisallow;
        if ((value & disallow) != 0)
        {
            return Errno.EINVAL;
        }

        value = Adjust(value, level);
        return GetFromEntry(value, level, tableMfn);
    }

    /// <summary>
    /// ptwr_emulated_update: a guest store of <paramref name="size"/> (1, 2, 4 or 8) bytes at byte
    /// <paramref name="offset"/> of the validated L1 table <paramref name="tableMfn"/>, which Xen
    /// emulates for a guest with VMASST_TYPE_writable_pagetables. A store narrower than an entry is
    /// merged with the rest of its 8-byte entry, and the whole new entry is checked and referenced
    /// exactly as mod_l1_entry does (then the old one's references are dropped). With a
    /// <paramref name="comparand"/> it is a compare-exchange of the stored bytes: when they differ,
    /// nothing is checked or written. <paramref name="found"/> is what the stored bytes held.
    /// -EINVAL for a store that is not naturally aligned (so never crosses an entry).
    /// </summary>
    public Errno? UpdateL1Entry(ulong tableMfn, uint offset, int size, ulong value, ulong? comparand, out ulong found)
    {
        found = 0;
        if (size is not (1 or 2 or 4 or 8) || offset >= MachineMemory.PageSize || (offset & (uint)(size - 1)) != 0)
        {
            return Errno.EINVAL; // "bad access"
        }

        var shift = (int)(offset & 7) * 8;
        var bits = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        var mask = bits << shift;
        // SAFETY: the caller holds a general reference on tableMfn; offset < 4096, so the entry is inside the frame.
        ref var slot = ref Table(tableMfn)[offset >> 3];
        while (true)
        {
            var current = Volatile.Read(ref slot);
            found = (current & mask) >> shift;
            if (comparand is { } expected && found != (expected & bits))
            {
                return null; // X86EMUL_CMPXCHG_FAILED: the guest sees what is there
            }

            var entry = (current & ~mask) | ((value & bits) << shift);
            if (TakeNewEntry(ref entry, 1, tableMfn) is { } rc)
            {
                return rc;
            }

            // Only another vCPU's MMU setting an accessed or dirty bit can change the entry under
            // the domain's lock; then the merge starts again from what it wrote.
            if (Interlocked.CompareExchange(ref slot, entry, current) == current)
            {
                PutFromEntry(current, 1, tableMfn);
                return null;
            }

            PutFromEntry(entry, 1, tableMfn);
        }
    }

    /// <summary>update_intpte: writes an entry (ORing in the old accessed/dirty bits if asked) and returns the old one.</summary>
    private ulong WriteEntry(ulong tableMfn, int index, ulong value, bool preserveAd)
    {
        ref var slot = ref Table(tableMfn)[index];
        if (!preserveAd)
        {
            return Interlocked.Exchange(ref slot, value);
        }

        while (true)
        {
            var old = Volatile.Read(ref slot);
            if (Interlocked.CompareExchange(ref slot, value | (old & (A | D)), old) == old)
            {
                return old;
            }
        }
    }

    /// <summary>A raw write of one word into a frame that is not a page table (mmu_update on a writable page).</summary>
    public void WriteWord(ulong mfn, int index, ulong value) => Volatile.Write(ref Table(mfn)[index], value);

    // ---- pins and base pointers ----

    /// <summary>MMUEXT_PIN_Ln_TABLE: a general and a type reference held until unpinned.</summary>
    public Errno? Pin(ulong mfn, PageType type)
    {
        if (!_frames.IsValid(mfn) || !_frames.TryGet(mfn, Owner))
        {
            return Errno.EINVAL;
        }

        if (GetType(mfn, type) is { } rc)
        {
            _frames.Put(mfn);
            return rc;
        }

        if (!_types.TrySetPinned(mfn))
        {
            PutPageAndType(mfn); // "already pinned"
            return Errno.EINVAL;
        }

        return null;
    }

    /// <summary>MMUEXT_UNPIN_TABLE.</summary>
    public Errno? Unpin(ulong mfn)
    {
        if (!_frames.IsValid(mfn) || !_frames.TryGet(mfn, Owner))
        {
            return Errno.EINVAL;
        }

        if (!_types.TryClearPinned(mfn))
        {
            _frames.Put(mfn); // "not pinned"
            return Errno.EINVAL;
        }

        PutPageAndType(mfn); // what the pin held
        _frames.Put(mfn);
        return null;
    }

    /// <summary>new_guest_cr3 (MMUEXT_NEW_BASEPTR) or MMUEXT_NEW_USER_BASEPTR.</summary>
    public Errno? SetBase(Vcpu vcpu, ulong mfn, bool user)
    {
        var pv = vcpu.Pv;
        ref var held = ref _heldBases[(vcpu.Id * 2) + (user ? 1 : 0)];
        var old = held;
        if (old == mfn && (user ? pv.UserBaseMfn : pv.KernelBaseMfn) == mfn)
        {
            vcpu.Pv.RequestTlbFlush();
            return null;
        }

        if (mfn != 0 || !user)
        {
            // MFN 0 is "no table" in PvVcpuState (and an I/O frame in Xen): never a base.
            if (mfn == 0)
            {
                return Errno.EINVAL;
            }

            if (GetPageAndType(mfn, PageType.L4) is { } rc)
            {
                return rc;
            }
        }

        held = mfn;
        if (user)
        {
            pv.UserBaseMfn = mfn;
        }
        else
        {
            pv.KernelBaseMfn = mfn;
        }

        vcpu.Pv.RequestTlbFlush();
        if (old != 0)
        {
            PutPageAndType(old);
        }

        return null;
    }

    /// <summary>The frame PHYSDEVOP_pirq_eoi_gmfn registered (0 = none); for a classic PV domain it holds a writable type until teardown.</summary>
    public ulong PirqEoiMfn { get; private set; }

    /// <summary>
    /// PHYSDEVOP_pirq_eoi_gmfn_v1/v2: takes a general reference and the writable type on the frame
    /// (a classic PV domain names an MFN; a translated one a GFN, looked up in its physmap) and keeps
    /// it as the domain's PIRQ EOI map. 0, -EINVAL (not the domain's, or not writable: a page table
    /// or descriptor page) or -EBUSY (a map is registered already).
    /// </summary>
    public long RegisterPirqEoiFrame(ulong gmfn)
    {
        lock (Lock)
        {
            if (_domain.IsTranslated)
            {
                if (!_domain.PhysMap.TryLookup(gmfn, out var backing, out _) || !_frames.TryGet(backing, Owner))
                {
                    return -(long)Errno.EINVAL;
                }

                if (PirqEoiMfn != 0)
                {
                    _frames.Put(backing);
                    return -(long)Errno.EBUSY;
                }

                PirqEoiMfn = backing;
                return 0;
            }

            if (GetPageAndType(gmfn, PageType.Writable) is not null)
            {
                return -(long)Errno.EINVAL;
            }

            if (PirqEoiMfn != 0)
            {
                PutPageAndType(gmfn);
                return -(long)Errno.EBUSY;
            }

            PirqEoiMfn = gmfn;
            return 0;
        }
    }

    /// <summary>Lets go of everything the domain's page tables hold: bases, pins, then any table still validated.</summary>
    public void Teardown()
    {
        lock (Lock)
        {
            if (PirqEoiMfn != 0)
            {
                if (_domain.IsTranslated)
                {
                    _frames.Put(PirqEoiMfn);
                }
                else
                {
                    PutPageAndType(PirqEoiMfn);
                }

                PirqEoiMfn = 0;
            }
        }

        if (_domain.IsTranslated)
        {
            return; // no PV page tables, pins or bases (every PV entry point refuses a translated domain)
        }

        lock (Lock)
        {
            foreach (var v in _domain.Vcpus)
            {
                v.Pv.KernelBaseMfn = 0;
                v.Pv.UserBaseMfn = 0;
            }

            for (var i = 0; i < _heldBases.Length; i++)
            {
                var mfn = _heldBases[i];
                _heldBases[i] = 0;
                if (mfn != 0)
                {
                    PutPageAndType(mfn);
                }
            }

            foreach (var mfn in _types.PinnedFrames().ToList())
            {
                if (_frames.OwnerOf(mfn) == Owner && _types.TryClearPinned(mfn))
                {
                    PutPageAndType(mfn);
                }
            }

            // Something else still holds a table type (a segment-descriptor or table reference the
            // engine kept): force the tables' entries to let go, as relinquish_memory does.
            foreach (var mfn in _types.ValidatedTables().ToList())
            {
                if (_frames.OwnerOf(mfn) == Owner && _types.IsValidated(mfn))
                {
                    Demote(mfn, (int)_types.TypeOf(mfn));
                    _types.Abandon(mfn);
                }
            }
        }
    }
}
