using System.Runtime.CompilerServices;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>The kind of a memory access, for permission checks and the #PF error code.</summary>
internal enum Access
{
    Read = 0,
    Write = 1,
    Execute = 2,
}

/// <summary>The outcome of a translation.</summary>
internal enum TranslateStatus
{
    Ok,

    /// <summary>#PF with the error code given.</summary>
    PageFault,

    /// <summary>A non-canonical address: #GP(0).</summary>
    NonCanonical,

    /// <summary>A paging structure lies outside the bus: the returned address is the physical one.</summary>
    BusError,
}

/// <summary>
/// Linear → physical translation: the 4-level walk of Intel SDM vol. 3, 4.5 over the bus, with a
/// direct-mapped software TLB in front. With CR0.PG clear, linear addresses are physical (flat mode).
/// </summary>
/// <remarks>
/// A TLB entry caches, for one 4 KiB linear page, the physical page, the accesses allowed at
/// supervisor and user level (computed at fill time from the combined R/W, U/S and XD bits of
/// every level, CR0.WP and EFER.NXE), whether the dirty bit is already set, and whether the page is
/// global. A write through an entry whose dirty bit is not yet set walks again so that D is set in
/// memory. Writes to CR3 flush all but global entries; CR0, CR4 and EFER writes flush everything;
/// <c>invlpg</c> flushes every entry of the page (including entries cut from a 2 MiB or 1 GiB page).
/// Accessed and dirty bits are set with a compare-exchange on the entry, as hardware sets them
/// atomically with respect to other processors. SMEP, SMAP, PKU and PCIDs are not modelled.
/// </remarks>
internal sealed unsafe class Mmu
{
    private const int TlbSize = 256;
    private const ulong AddressMask = 0x000F_FFFF_FFFF_F000UL;
    private const ulong P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, G = 0x100, XD = 1UL << 63;

    // Allowed-access bits: (access kind) + 3 × (user ? 1 : 0).
    private const byte SupRead = 1, SupWrite = 2, SupExec = 4, UserRead = 8, UserWrite = 16, UserExec = 32;

    private readonly IGuestMemoryBus _bus;
    private readonly IDirectMemoryBus? _direct;
    private readonly PageEpoch? _epoch;
    private readonly CpuState _cpu;
    private readonly Entry[] _tlb = new Entry[TlbSize];

    public Mmu(IGuestMemoryBus bus, CpuState cpu)
    {
        _bus = bus;
        _cpu = cpu;
        _direct = bus as IDirectMemoryBus;
        _epoch = _direct?.Epoch;
    }

    /// <summary>Whether loads and stores may use the host pointers of a direct bus (off while the machine substitutes another bus for one instruction).</summary>
    public bool DirectEnabled { get; set; } = true;

    /// <summary>Walks done since creation (TLB misses, and writes that had to set a dirty bit).</summary>
    public long Walks { get; private set; }

    private struct Entry
    {
        public ulong Tag;        // linear page number + 1; 0 = empty
        public ulong PageBase;   // physical address of the 4 KiB page
        public ulong RegionMask; // ~(page size − 1) of the mapping the entry came from
        public byte Allowed;
        public bool Dirty;
        public bool Global;

        // The page in host memory (0: not directly accessible) and the bus's epoch when it was got.
        public nint Host;
        public long HostEpoch;
    }

    public bool PagingEnabled => (_cpu.Cr0 & ControlBits.Cr0PG) != 0;

    /// <summary>The machine's own linear window (see <see cref="LinearWindow"/>), consulted on a TLB miss before the walk.</summary>
    public LinearWindow? Window { get; set; }

    /// <summary>
    /// Linear page number + 1 of a page whose writes are allowed wherever its reads are (0: none),
    /// while the machine emulates one instruction's store to it. The page stays read-only in the
    /// TLB and no dirty bit is set: the store does not go through the guest's mapping.
    /// </summary>
    public ulong WritableOverride { get; set; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TranslateStatus Translate(ulong la, Access access, out ulong pa, out uint errorCode)
    {
        errorCode = 0;
        if ((_cpu.Cr0 & ControlBits.Cr0PG) == 0)
        {
            pa = la;
            return TranslateStatus.Ok;
        }

        ref var e = ref Hit(la, access);
        if (!Unsafe.IsNullRef(ref e))
        {
            pa = e.PageBase | (la & 0xFFF);
            return TranslateStatus.Ok;
        }

        return Walk(la, access, out pa, out errorCode);
    }

    /// <summary>The TLB entry that allows <paramref name="access"/> to <paramref name="la"/> at the current CPL (a write needs D set), or a null reference.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref Entry Hit(ulong la, Access access)
    {
        var vpn = la >> 12;
        ref var e = ref _tlb[(int)(vpn & (TlbSize - 1))];
        var bit = (byte)(1 << ((int)access + (_cpu.Cpl == 3 ? 3 : 0)));
        return ref e.Tag == vpn + 1 && (e.Allowed & bit) != 0 && (access != Access.Write || e.Dirty) ? ref e : ref Unsafe.NullRef<Entry>();
    }

    /// <summary>How many flushes (of any kind) there were: what was translated before may no longer hold.</summary>
    public long Flushes { get; private set; }

    /// <summary>
    /// The host address of linear <paramref name="la"/> when a TLB entry allows the access and
    /// holds a current host pointer (no walk, no bus call), with its physical address; else null,
    /// and the caller takes the translated path. The access must not cross a page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* TryDirect(ulong la, Access access, out ulong pa)
    {
        pa = 0;
        if (_epoch is null || !DirectEnabled || (_cpu.Cr0 & ControlBits.Cr0PG) == 0)
        {
            return null;
        }

        ref var e = ref Hit(la, access);
        if (Unsafe.IsNullRef(ref e) || e.Host == 0)
        {
            return null;
        }

        if (e.HostEpoch != _epoch.Value && !RefreshHost(ref e))
        {
            return null;
        }

        pa = e.PageBase | (la & 0xFFF);
        return (byte*)e.Host + (la & 0xFFF);
    }

    /// <summary>The bus's epoch moved: ask for the entry's page again (it may no longer be the guest's).</summary>
    private bool RefreshHost(ref Entry e)
    {
        var epoch = _epoch!.Value;
        e.Host = (nint)_direct!.PagePointer(e.PageBase);
        e.HostEpoch = epoch;
        return e.Host != 0;
    }

    /// <summary>A write to CR3: every entry but global ones goes.</summary>
    public void FlushNonGlobal()
    {
        Flushes++;
        for (var i = 0; i < _tlb.Length; i++)
        {
            if (!_tlb[i].Global)
            {
                _tlb[i] = default;
            }
        }
    }

    /// <summary>A change of paging mode or permissions (CR0, CR4, EFER): everything goes.</summary>
    public void FlushAll()
    {
        Flushes++;
        Array.Clear(_tlb);
    }

    /// <summary><c>invlpg</c>: every entry whose mapping covers <paramref name="la"/>, global or not.</summary>
    public void Invalidate(ulong la)
    {
        Flushes++;
        for (var i = 0; i < _tlb.Length; i++)
        {
            ref var e = ref _tlb[i];
            if (e.Tag != 0 && (((e.Tag - 1) << 12) & e.RegionMask) == (la & e.RegionMask))
            {
                e = default;
            }
        }
    }

    private static bool IsCanonical(ulong la) => (ulong)((long)(la << 16) >> 16) == la;

    private TranslateStatus Walk(ulong la, Access access, out ulong pa, out uint errorCode)
    {
        Walks++;
        pa = 0;
        errorCode = 0;
        if (!IsCanonical(la))
        {
            return TranslateStatus.NonCanonical;
        }

        var user = _cpu.Cpl == 3;
        var nxe = (_cpu.Efer & ControlBits.EferNXE) != 0;
        var baseCode = (access == Access.Write ? PageFaultErrorCode.Write : 0)
            | (user ? PageFaultErrorCode.User : 0)
            | (access == Access.Execute && nxe ? PageFaultErrorCode.InstructionFetch : 0);
        if (Window is { } window && window.Contains(la))
        {
            return WindowTranslate(window, la, access, baseCode, out pa, out errorCode);
        }

        Span<ulong> entryAddresses = stackalloc ulong[4];
        var table = _cpu.Cr3 & AddressMask;
        bool rw = true, us = true, xd = false;
        ulong pageSize = 4096;
        var levels = 0;
        ulong entry = 0;
        for (var level = 4; level >= 1; level--)
        {
            var index = (la >> (12 + (9 * (level - 1)))) & 511;
            var entryAddress = table + (index * 8);
            if (!_bus.TryRead(entryAddress, 8, out entry))
            {
                pa = entryAddress;
                return TranslateStatus.BusError;
            }

            if ((entry & P) == 0)
            {
                errorCode = baseCode;
                return Fault(la);
            }

            entryAddresses[levels++] = entryAddress;
            if (IsReserved(entry, level, nxe))
            {
                errorCode = baseCode | PageFaultErrorCode.Present | PageFaultErrorCode.Reserved;
                return Fault(la);
            }

            rw &= (entry & RW) != 0;
            us &= (entry & US) != 0;
            xd |= nxe && (entry & XD) != 0;
            if (level is 3 or 2 && (entry & PS) != 0)
            {
                pageSize = level == 3 ? 1UL << 30 : 1UL << 21;
                break;
            }

            table = entry & AddressMask;
        }

        var wp = (_cpu.Cr0 & ControlBits.Cr0WP) != 0;
        var allowed = (byte)(SupRead
            | (rw || !wp ? SupWrite : 0)
            | (!xd ? SupExec : 0)
            | (us ? UserRead : 0)
            | (us && rw ? UserWrite : 0)
            | (us && !xd ? UserExec : 0));
        var bit = (byte)(1 << ((int)access + (user ? 3 : 0)));
        if ((allowed & bit) == 0)
        {
            var readable = (allowed & (byte)(1 << (user ? 3 : 0))) != 0;
            if (access != Access.Write || WritableOverride != (la >> 12) + 1 || !readable)
            {
                errorCode = baseCode | PageFaultErrorCode.Present;
                return Fault(la);
            }

            access = Access.Read; // the override: walked and cached as the read it is allowed to be
        }

        // The access is allowed: set A on every level, and D on the leaf for a write.
        for (var i = 0; i < levels; i++)
        {
            var set = A | (i == levels - 1 && access == Access.Write ? D : 0);
            if (!SetBits(entryAddresses[i], set, out var leaf))
            {
                pa = entryAddresses[i];
                return TranslateStatus.BusError;
            }

            if (i == levels - 1)
            {
                entry = leaf;
            }
        }

        var frame = entry & AddressMask & ~(pageSize - 1);
        var pageBase = frame | (la & (pageSize - 1) & ~0xFFFUL);
        var vpn = la >> 12;
        ref var e = ref _tlb[(int)(vpn & (TlbSize - 1))];
        e.Tag = vpn + 1;
        e.PageBase = pageBase;
        e.RegionMask = ~(pageSize - 1);
        e.Allowed = allowed;
        e.Dirty = (entry & D) != 0;
        e.Global = (entry & G) != 0 && (_cpu.Cr4 & ControlBits.Cr4PGE) != 0;
        if (_direct is not null)
        {
            RefreshHost(ref e);
        }

        pa = pageBase | (la & 0xFFF);
        return TranslateStatus.Ok;
    }

    /// <summary>The machine's window: read-only pages where it is readable, not-present faults elsewhere; never the guest's tables.</summary>
    private TranslateStatus WindowTranslate(LinearWindow window, ulong la, Access access, uint baseCode, out ulong pa, out uint errorCode)
    {
        pa = 0;
        errorCode = baseCode;
        var offset = la - window.Start;
        if (offset >= window.ReadableBytes)
        {
            return Fault(la);
        }

        errorCode |= PageFaultErrorCode.Present;
        if (access != Access.Read)
        {
            return Fault(la);
        }

        var vpn = la >> 12;
        ref var e = ref _tlb[(int)(vpn & (TlbSize - 1))];
        e.Tag = vpn + 1;
        e.PageBase = window.PhysicalBase + (offset & ~0xFFFUL);
        e.RegionMask = ~0xFFFUL;
        e.Allowed = SupRead | UserRead;
        e.Dirty = false;
        e.Global = false;
        e.Host = 0; // the machine's window is served by the bus alone
        errorCode = 0;
        pa = e.PageBase | (la & 0xFFF);
        return TranslateStatus.Ok;
    }

    private TranslateStatus Fault(ulong la)
    {
        _cpu.Cr2 = la;
        return TranslateStatus.PageFault;
    }

    // Reserved bits with MAXPHYADDR = 52 (none above the address): XD without EFER.NXE, PS in a
    // PML4 entry, and the low address bits of a large page's frame (SDM vol. 3, 4.5.4 tables 4-15..4-19).
    private static bool IsReserved(ulong entry, int level, bool nxe)
    {
        if (!nxe && (entry & XD) != 0)
        {
            return true;
        }

        if (level == 4 && (entry & PS) != 0)
        {
            return true;
        }

        if (level == 3 && (entry & PS) != 0)
        {
            return (entry & 0x3FFF_E000UL) != 0;
        }

        if (level == 2 && (entry & PS) != 0)
        {
            return (entry & 0x001F_E000UL) != 0;
        }

        return false;
    }

    private bool SetBits(ulong address, ulong bits, out ulong entry)
    {
        while (true)
        {
            if (!_bus.TryRead(address, 8, out entry))
            {
                return false;
            }

            if ((entry & bits) == bits)
            {
                return true;
            }

            if (!_bus.TryCompareExchange(address, 8, entry | bits, entry, out var found))
            {
                return false;
            }

            if (found == entry)
            {
                entry |= bits;
                return true;
            }
        }
    }
}
