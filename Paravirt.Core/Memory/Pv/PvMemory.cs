using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Memory.Pv;

/// <summary>
/// The classic PV memory model's entry points for the domain builder, the PV CPU engine and the
/// hypercall layer: pin a page table, set a vCPU's base pointers, translate a guest virtual address
/// the way Xen's <c>copy_from_guest</c> does, and copy through that translation. Results to a guest
/// are 0 or a negative Xen errno, as the matching <c>mmuext_op</c> would return.
/// See docs/pv-memory.md.
/// </summary>
public static unsafe class PvMemory
{
    /// <summary>
    /// MMUEXT_PIN_L<paramref name="level"/>_TABLE on <paramref name="mfn"/>: validates the table (and,
    /// recursively, every table it references), and keeps it validated until unpinned or the domain
    /// dies. 0, or -EINVAL (not the domain's frame, already pinned, a type clash, a bad entry),
    /// -EBUSY/-EPERM (an L1 entry mapping a frame it may not), as Xen 4.17.
    /// </summary>
    public static long PinTable(Domain d, ulong mfn, int level)
    {
        ArgumentNullException.ThrowIfNull(d);
        ArgumentOutOfRangeException.ThrowIfLessThan(level, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(level, 4);
        if (d.IsTranslated)
        {
            return -(long)Errno.EINVAL;
        }

        var mm = d.PvMm;
        lock (mm.Lock)
        {
            return Result(mm.Pin(mfn, (PageType)level));
        }
    }

    /// <summary>MMUEXT_UNPIN_TABLE: 0, or -EINVAL when the frame is not the domain's or not pinned.</summary>
    public static long UnpinTable(Domain d, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(d);
        if (d.IsTranslated)
        {
            return -(long)Errno.EINVAL;
        }

        var mm = d.PvMm;
        lock (mm.Lock)
        {
            return Result(mm.Unpin(mfn));
        }
    }

    /// <summary>
    /// MMUEXT_NEW_BASEPTR: makes <paramref name="mfn"/> (an L4, validated now if it is not yet) the
    /// vCPU's kernel page-table base, holding a general and an L4 type reference on it, drops the
    /// old base's, and asks the vCPU to flush its TLB. 0 or -errno; -EINVAL for a translated domain.
    /// </summary>
    public static long SetKernelBase(Vcpu v, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(v);
        return SetBase(v, mfn, user: false);
    }

    /// <summary>MMUEXT_NEW_USER_BASEPTR: as <see cref="SetKernelBase"/> for the user-mode L4 (0 clears it).</summary>
    public static long SetUserBase(Vcpu v, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(v);
        return SetBase(v, mfn, user: true);
    }

    private static long SetBase(Vcpu v, ulong mfn, bool user)
    {
        if (v.Domain.IsTranslated)
        {
            return -(long)Errno.EINVAL;
        }

        var mm = v.Domain.PvMm;
        lock (mm.Lock)
        {
            return Result(mm.SetBase(v, mfn, user));
        }
    }

    /// <summary>The page type a frame has now (for diagnostics and tests).</summary>
    public static PageType TypeOf(Domain d, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(d);
        var frames = d.Hypervisor.Frames;
        return frames.IsValid(mfn) ? frames.Types.TypeOf(mfn) : PageType.None;
    }

    /// <summary>
    /// Takes a segment-descriptor type on a frame of the domain (a GDT or LDT frame), with a general
    /// reference: afterwards no writable mapping of it can exist until <see cref="PutSegDescPage"/>,
    /// so the caller checks the descriptors once, after this call. 0, or -EINVAL (not the domain's,
    /// mapped writable, a page table).
    /// </summary>
    public static long GetSegDescPage(Domain d, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(d);
        if (d.IsTranslated)
        {
            return -(long)Errno.EINVAL;
        }

        var mm = d.PvMm;
        lock (mm.Lock)
        {
            return Result(mm.GetPageAndType(mfn, PageType.SegDesc));
        }
    }

    /// <summary>Drops what <see cref="GetSegDescPage"/> took.</summary>
    public static void PutSegDescPage(Domain d, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(d);
        var mm = d.PvMm;
        lock (mm.Lock)
        {
            mm.PutPageAndType(mfn);
        }
    }

    /// <summary>
    /// do_update_descriptor's hold on the frame it writes: the segment-descriptor type if the frame
    /// has it (an installed GDT/LDT frame), else the writable type, with a general reference. Either
    /// keeps the frame from being validated as a page table until <see cref="PutDescriptorWritePage"/>.
    /// 0, or -EINVAL (not the domain's, or a page table).
    /// </summary>
    public static long GetDescriptorWritePage(Domain d, ulong mfn)
    {
        ArgumentNullException.ThrowIfNull(d);
        var mm = d.PvMm;
        lock (mm.Lock)
        {
            var type = TypeOf(d, mfn) == PageType.SegDesc ? PageType.SegDesc : PageType.Writable;
            return Result(mm.GetPageAndType(mfn, type));
        }
    }

    /// <summary>Drops what <see cref="GetDescriptorWritePage"/> took.</summary>
    public static void PutDescriptorWritePage(Domain d, ulong mfn) => PutSegDescPage(d, mfn);

    /// <summary>The LDT the vCPU set with MMUEXT_SET_LDT: its linear base and number of entries (0 = none).</summary>
    public static (ulong Base, uint Entries) Ldt(Vcpu v)
    {
        ArgumentNullException.ThrowIfNull(v);
        return v.Domain.PvMm.Ldt(v.Id);
    }

    /// <summary>
    /// __addr_ok for a 64-bit PV guest: below 2^47, or above Xen's reserved range (so the whole
    /// hypervisor hole, the read-only M2P included, is never a guest handle).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool AddressOk(ulong va) => va < (1UL << 47) || va >= ArchX86.HYPERVISOR_VIRT_END;

    /// <summary>
    /// Translates <paramref name="va"/> through the vCPU's current page tables
    /// (<see cref="PvVcpuState.CurrentBaseMfn"/>) as the processor does for Xen's copy_from_guest /
    /// copy_to_guest: Xen runs in ring 0 with CR0.WP set, so every level must be present, and for a
    /// write every level must be writable; the user bit and NX do not matter. False when the vCPU
    /// is unpaged, the address is not a guest address, or the walk faults. Accessed and dirty bits
    /// are not set (a software walk; the engine's MMU sets them for the guest's own accesses).
    /// </summary>
    public static bool TryTranslate(Vcpu v, ulong va, bool write, out ulong machineAddress)
    {
        ArgumentNullException.ThrowIfNull(v);
        machineAddress = 0;
        var table = v.Pv.CurrentBaseMfn;
        if (table == 0 || !AddressOk(va))
        {
            return false;
        }

        var frames = v.Domain.Hypervisor.Frames;
        var memory = frames.Memory;
        var owner = v.Domain.Id;
        for (var level = 4; level >= 1; level--)
        {
            // Validated tables only reach the domain's own frames; a table changed under the walk
            // (or written by a managed guest directly) must still never send it outside them.
            if (!frames.IsValid(table) || frames.OwnerOf(table) != owner)
            {
                return false;
            }

            var index = (int)((va >> (12 + (9 * (level - 1)))) & 511);
            // SAFETY: table < Frames (checked above) and index < 512, so the word is inside machine memory.
            var entry = Volatile.Read(ref ((ulong*)memory.FramePointer(table))[index]);
            if ((entry & PvDomainMemory.P) == 0 || (write && (entry & PvDomainMemory.RW) == 0))
            {
                return false;
            }

            if (level is 2 or 3 && (entry & PvDomainMemory.PSE) != 0)
            {
                return false; // no superpages in a PV guest's tables (PSE is a disallowed bit)
            }

            table = (entry & PvDomainMemory.AddressMask) >> MachineMemory.PageShift;
        }

        machineAddress = (table << MachineMemory.PageShift) | (va & MachineMemory.PageMask);
        return true;
    }

    /// <summary>copy_from_guest through the vCPU's page tables: page by page, each frame referenced while it is copied.</summary>
    public static bool TryCopyFromGuest(Vcpu v, ulong va, Span<byte> destination) => Copy(v, va, destination, write: false);

    /// <summary>copy_to_guest through the vCPU's page tables; a fault part-way leaves the earlier pages written, as in Xen.</summary>
    public static bool TryCopyToGuest(Vcpu v, ulong va, ReadOnlySpan<byte> source) =>
        // Copy only reads the buffer when it writes the guest, so the read-only source may pass as writable.
        Copy(v, va, MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(source), source.Length), write: true);

    internal static bool TryCopyFromGuest<T>(Vcpu v, ulong va, out T value)
        where T : unmanaged
    {
        value = default;
        return Copy(v, va, new Span<byte>(Unsafe.AsPointer(ref value), sizeof(T)), write: false);
    }

    internal static bool TryCopyToGuest<T>(Vcpu v, ulong va, in T value)
        where T : unmanaged
    {
        fixed (T* p = &value)
        {
            return Copy(v, va, new Span<byte>(p, sizeof(T)), write: true);
        }
    }

    /// <summary>
    /// A store of one 64-bit word through the vCPU's tables: a single ordered store when the word
    /// is aligned (it then lies in one page), else a plain copy, as __raw_copy_to_guest.
    /// </summary>
    internal static bool TryWriteGuestWord(Vcpu v, ulong va, ulong value)
    {
        if ((va & 7) != 0)
        {
            return TryCopyToGuest(v, va, in value);
        }

        if (!TryTranslate(v, va, write: true, out var ma))
        {
            return false;
        }

        var frames = v.Domain.Hypervisor.Frames;
        var mfn = ma >> MachineMemory.PageShift;
        if (!frames.TryGet(mfn, v.Domain.Id))
        {
            return false;
        }

        // SAFETY: the frame is referenced and the aligned word lies inside it.
        Volatile.Write(ref *(ulong*)(frames.Memory.FramePointer(mfn) + (ma & MachineMemory.PageMask)), value);
        frames.Put(mfn);
        return true;
    }

    /// <summary>Copies between <paramref name="buffer"/> and guest virtual memory (into the guest when <paramref name="write"/>).</summary>
    private static bool Copy(Vcpu v, ulong va, Span<byte> buffer, bool write)
    {
        var frames = v.Domain.Hypervisor.Frames;
        var memory = frames.Memory;
        var owner = v.Domain.Id;
        var done = 0;
        while (done < buffer.Length)
        {
            var address = va + (ulong)done;
            if (address < va)
            {
                return false; // wrapped around
            }

            var inPage = (int)Math.Min((ulong)(buffer.Length - done), MachineMemory.PageSize - (address & MachineMemory.PageMask));
            if (!TryTranslate(v, address, write, out var ma))
            {
                return false;
            }

            var mfn = ma >> MachineMemory.PageShift;
            if (!frames.TryGet(mfn, owner))
            {
                return false;
            }

            // SAFETY: the frame is referenced (it cannot be freed during the copy) and the range stays inside it.
            var page = new Span<byte>(memory.FramePointer(mfn) + (ma & MachineMemory.PageMask), inPage);
            if (write)
            {
                buffer.Slice(done, inPage).CopyTo(page);
            }
            else
            {
                page.CopyTo(buffer.Slice(done, inPage));
            }

            frames.Put(mfn);
            done += inPage;
        }

        return true;
    }

    /// <summary>Releases every type, pin and reference the domain's page tables hold (domain destruction).</summary>
    internal static void Teardown(Domain d) => d.PvMm.Teardown();

    internal static long Result(Errno? e) => e is { } errno ? -(long)errno : 0;
}
