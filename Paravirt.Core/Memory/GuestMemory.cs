using System.Runtime.CompilerServices;

namespace Paravirt.Core.Memory;

/// <summary>
/// The only door to one domain's memory, by guest-physical address. Every access is bounds-checked
/// through the domain's <see cref="PhysMap"/>, safe across page boundaries, and holds a reference on
/// each frame while it copies, so a concurrent release never lets the copy reach a frame that has
/// passed to someone else. Failures return <c>false</c> (the hypercall layer turns that into
/// <c>-EFAULT</c>); nothing here throws because of what a guest wrote.
/// </summary>
public sealed unsafe class GuestMemory
{
    private const int PageSize = MachineMemory.PageSize;
    private const ulong PageMask = MachineMemory.PageMask;

    private readonly FrameTable _frames;
    private readonly MachineMemory _memory;

    public GuestMemory(FrameTable frames, PhysMap physMap, ushort owner)
    {
        _frames = frames;
        _memory = frames.Memory;
        PhysMap = physMap;
        Owner = owner;
    }

    public PhysMap PhysMap { get; }

    internal FrameTable Frames => _frames;

    internal MachineMemory Machine => _memory;

    /// <summary>The domain this memory belongs to.</summary>
    public ushort Owner { get; }

    /// <summary>Copies <paramref name="destination"/>.Length bytes starting at <paramref name="gpa"/>.</summary>
    public bool TryRead(ulong gpa, Span<byte> destination)
    {
        var done = 0;
        while (done < destination.Length)
        {
            var addr = gpa + (ulong)done;
            if (addr < gpa)
            {
                return false; // wrapped around the address space
            }

            var inPage = (int)Math.Min((ulong)(destination.Length - done), PageSize - (addr & PageMask));
            if (!TryGetFrame(addr >> MachineMemory.PageShift, write: false, out var mfn))
            {
                return false;
            }

            new ReadOnlySpan<byte>(_memory.FramePointer(mfn) + (addr & PageMask), inPage).CopyTo(destination.Slice(done, inPage));
            _frames.Put(mfn);
            done += inPage;
        }

        return true;
    }

    /// <summary>Copies <paramref name="source"/> to guest memory starting at <paramref name="gpa"/>.</summary>
    /// <remarks>A fault part-way leaves the earlier pages written, as a real copy_to_guest does.</remarks>
    public bool TryWrite(ulong gpa, ReadOnlySpan<byte> source)
    {
        var done = 0;
        while (done < source.Length)
        {
            var addr = gpa + (ulong)done;
            if (addr < gpa)
            {
                return false;
            }

            var inPage = (int)Math.Min((ulong)(source.Length - done), PageSize - (addr & PageMask));
            if (!TryGetFrame(addr >> MachineMemory.PageShift, write: true, out var mfn))
            {
                return false;
            }

            source.Slice(done, inPage).CopyTo(new Span<byte>(_memory.FramePointer(mfn) + (addr & PageMask), inPage));
            _frames.Put(mfn);
            done += inPage;
        }

        return true;
    }

    /// <summary>Copies a struct out of guest memory (one fetch; validate the copy, never the guest's bytes).</summary>
    public bool TryRead<T>(ulong gpa, out T value)
        where T : unmanaged
    {
        value = default;
        return TryRead(gpa, new Span<byte>(Unsafe.AsPointer(ref value), sizeof(T)));
    }

    public bool TryWrite<T>(ulong gpa, in T value)
        where T : unmanaged
    {
        fixed (T* p = &value)
        {
            return TryWrite(gpa, new ReadOnlySpan<byte>(p, sizeof(T)));
        }
    }

    /// <summary>Fills a range with zero bytes.</summary>
    public bool TryClear(ulong gpa, int length)
    {
        Span<byte> zeros = stackalloc byte[256];
        zeros.Clear();
        for (var done = 0; done < length; done += zeros.Length)
        {
            if (!TryWrite(gpa + (ulong)done, zeros[..Math.Min(zeros.Length, length - done)]))
            {
                return false;
            }
        }

        return true;
    }

    // Atomic operations on shared words. Guests change these words concurrently (event pending
    // and mask bits, ring indices), so the hypervisor side uses the same atomic instructions a
    // guest kernel does. Each word must be naturally aligned, which also keeps it within a page.

    public bool TryCompareExchange32(ulong gpa, uint value, uint comparand, out uint original) =>
        TryAtomic<uint>(gpa, value, comparand, &CompareExchange, out original);

    public bool TryCompareExchange64(ulong gpa, ulong value, ulong comparand, out ulong original) =>
        TryAtomic<ulong>(gpa, value, comparand, &CompareExchange, out original);

    /// <summary>Atomically ORs <paramref name="mask"/> into a 64-bit word; <paramref name="original"/> is the value before.</summary>
    public bool TryOr64(ulong gpa, ulong mask, out ulong original) => TryAtomic<ulong>(gpa, mask, 0, &Or, out original);

    /// <summary>Atomically ANDs <paramref name="mask"/> into a 64-bit word; <paramref name="original"/> is the value before.</summary>
    public bool TryAnd64(ulong gpa, ulong mask, out ulong original) => TryAtomic<ulong>(gpa, mask, 0, &And, out original);

    public bool TryOr32(ulong gpa, uint mask, out uint original) => TryAtomic<uint>(gpa, mask, 0, &Or, out original);

    public bool TryAnd32(ulong gpa, uint mask, out uint original) => TryAtomic<uint>(gpa, mask, 0, &And, out original);

    /// <summary>Pins the aligned word at <paramref name="gpa"/>, applies one interlocked operation to it, and lets go.</summary>
    private bool TryAtomic<T>(ulong gpa, T operand, T comparand, delegate*<ref T, T, T, T> op, out T original)
        where T : unmanaged
    {
        original = default;
        if (!TryPinWord(gpa, sizeof(T), out var mfn, out var p))
        {
            return false;
        }

        original = op(ref *(T*)p, operand, comparand);
        _frames.Put(mfn);
        return true;
    }

    private static uint CompareExchange(ref uint word, uint value, uint comparand) => Interlocked.CompareExchange(ref word, value, comparand);

    private static ulong CompareExchange(ref ulong word, ulong value, ulong comparand) => Interlocked.CompareExchange(ref word, value, comparand);

    private static uint Or(ref uint word, uint mask, uint unused) => Interlocked.Or(ref word, mask);

    private static ulong Or(ref ulong word, ulong mask, ulong unused) => Interlocked.Or(ref word, mask);

    private static uint And(ref uint word, uint mask, uint unused) => Interlocked.And(ref word, mask);

    private static ulong And(ref ulong word, ulong mask, ulong unused) => Interlocked.And(ref word, mask);

    /// <summary>Atomically sets bit <paramref name="bit"/> (0–63) of a 64-bit word; <paramref name="wasSet"/> says whether it already was.</summary>
    public bool TryTestAndSetBit64(ulong gpa, int bit, out bool wasSet)
    {
        var ok = TryOr64(gpa, 1UL << (bit & 63), out var old);
        wasSet = (old & (1UL << (bit & 63))) != 0;
        return ok;
    }

    /// <summary>Atomically clears bit <paramref name="bit"/> of a 64-bit word; <paramref name="wasSet"/> says whether it was set.</summary>
    public bool TryTestAndClearBit64(ulong gpa, int bit, out bool wasSet)
    {
        var ok = TryAnd64(gpa, ~(1UL << (bit & 63)), out var old);
        wasSet = (old & (1UL << (bit & 63))) != 0;
        return ok;
    }

    /// <summary>A volatile read of an aligned word (1, 2, 4 or 8 bytes).</summary>
    public bool TryReadVolatile(ulong gpa, int size, out ulong value)
    {
        value = 0;
        if (!TryPinWord(gpa, size, out var mfn, out var p, write: false))
        {
            return false;
        }

        value = size switch
        {
            1 => Volatile.Read(ref *p),
            2 => Volatile.Read(ref *(ushort*)p),
            4 => Volatile.Read(ref *(uint*)p),
            _ => Volatile.Read(ref *(ulong*)p),
        };
        _frames.Put(mfn);
        return true;
    }

    /// <summary>A volatile write of an aligned word (1, 2, 4 or 8 bytes).</summary>
    public bool TryWriteVolatile(ulong gpa, int size, ulong value)
    {
        if (!TryPinWord(gpa, size, out var mfn, out var p, write: true))
        {
            return false;
        }

        switch (size)
        {
            case 1: Volatile.Write(ref *p, (byte)value); break;
            case 2: Volatile.Write(ref *(ushort*)p, (ushort)value); break;
            case 4: Volatile.Write(ref *(uint*)p, (uint)value); break;
            default: Volatile.Write(ref *(ulong*)p, value); break;
        }

        _frames.Put(mfn);
        return true;
    }

    /// <summary>Translates a guest frame for access, taking a reference the caller must <see cref="FrameTable.Put"/>.</summary>
    internal bool TryGetFrame(ulong gfn, bool write, out ulong mfn)
    {
        if (!PhysMap.TryLookup(gfn, out mfn, out var type))
        {
            return false;
        }

        switch (type)
        {
            case P2mType.Ram:
            case P2mType.Shared:
                if (!_frames.TryGet(mfn, Owner))
                {
                    return false;
                }

                // A classic PV page table or descriptor page is read-only to everyone but the
                // memory model (in Xen no writable mapping of it can exist).
                if (write && _frames.Types.IsProtected(mfn))
                {
                    _frames.Put(mfn);
                    return false;
                }

                return true;
            case P2mType.GrantMapRw:
                return _frames.TryGet(mfn, _frames.OwnerOf(mfn));
            case P2mType.GrantMapRo:
                return !write && _frames.TryGet(mfn, _frames.OwnerOf(mfn));
            default:
                return false;
        }
    }

    private bool TryPinWord(ulong gpa, int size, out ulong mfn, out byte* pointer, bool write = true)
    {
        pointer = null;
        mfn = 0;
        if (size is not (1 or 2 or 4 or 8) || (gpa & (ulong)(size - 1)) != 0)
        {
            return false;
        }

        if (!TryGetFrame(gpa >> MachineMemory.PageShift, write, out mfn))
        {
            return false;
        }

        // SAFETY: the frame is referenced (cannot be freed) and gpa is size-aligned, so the word lies
        // wholly inside this one 4 KiB frame.
        pointer = _memory.FramePointer(mfn) + (gpa & PageMask);
        return true;
    }
}
