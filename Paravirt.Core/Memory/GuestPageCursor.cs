using System.Runtime.CompilerServices;

namespace Paravirt.Core.Memory;

/// <summary>
/// A run of small accesses to one domain's memory that mostly land on the same page (a multicall's
/// entries, a batch of grant-copy descriptors). The cursor keeps a reference on the last frame it
/// touched, so each access costs a plain read of the physmap entry instead of a reference taken and
/// dropped with two atomic operations.
/// </summary>
/// <remarks>
/// <para>Semantics are those of <see cref="GuestMemory"/>: every access goes through the mapping as it
/// is at that moment. The cursor re-reads the physmap entry on each access and uses the frame it
/// holds only when the entry still maps the same frame with the same type; otherwise it lets go and
/// looks up again. So a guest that unmaps or replaces the page between two accesses (from another
/// vCPU, or with an earlier entry of the same batch) sees the second access fail or reach the new
/// page, exactly as with one <see cref="GuestMemory.TryRead(ulong, Span{byte})"/> per access. The
/// reference only keeps the frame from being freed while the cursor holds it, which is what every
/// access does anyway.</para>
/// <para>Accesses that cross a page boundary go through <see cref="GuestMemory"/>. Dispose the cursor
/// to drop the reference (it is a <c>ref struct</c>: <c>using var cursor = …</c>).</para>
/// </remarks>
public unsafe ref struct GuestPageCursor
{
    private readonly GuestMemory _memory;
    private readonly PhysMap _physMap;
    private ulong _gfn;
    private ulong _mfn;
    private byte* _page;
    private P2mType _type;
    private bool _held;

    public GuestPageCursor(GuestMemory memory)
    {
        _memory = memory;
        _physMap = memory.PhysMap;
    }

    /// <summary>Copies a struct out of guest memory (one fetch; validate the copy).</summary>
    public bool TryRead<T>(ulong gpa, out T value)
        where T : unmanaged
    {
        var p = Locate(gpa, sizeof(T), write: false);
        if (p is null)
        {
            return _memory.TryRead(gpa, out value);
        }

        value = Unsafe.ReadUnaligned<T>(p);
        return true;
    }

    /// <summary>Copies a struct into guest memory.</summary>
    public bool TryWrite<T>(ulong gpa, in T value)
        where T : unmanaged
    {
        var p = Locate(gpa, sizeof(T), write: true);
        if (p is null)
        {
            return _memory.TryWrite(gpa, in value);
        }

        Unsafe.WriteUnaligned(p, value);
        return true;
    }

    /// <summary>Lets go of the frame the cursor holds.</summary>
    public void Dispose()
    {
        if (_held)
        {
            _held = false;
            _memory.Frames.Put(_mfn);
        }
    }

    /// <summary>
    /// A pointer to <paramref name="size"/> bytes at <paramref name="gpa"/> in the held frame, or null
    /// when the access crosses a page or the page cannot be held (the caller then takes the general
    /// path, which also reports the failure).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* Locate(ulong gpa, int size, bool write)
    {
        var offset = gpa & MachineMemory.PageMask;
        if (offset + (ulong)size > MachineMemory.PageSize)
        {
            return null;
        }

        var gfn = gpa >> MachineMemory.PageShift;
        if (!_held || gfn != _gfn || !StillMapped())
        {
            if (!Hold(gfn))
            {
                return null;
            }
        }

        if (write && (_type == P2mType.GrantMapRo || _memory.Frames.Types.IsProtected(_mfn)))
        {
            return null; // the general path refuses it too
        }

        // SAFETY: the frame is referenced by this cursor and offset + size <= 4096.
        return _page + offset;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly bool StillMapped() =>
        _physMap.DenseStillMaps(_gfn, _mfn, _type) || StillMappedSparse();

    private readonly bool StillMappedSparse() =>
        _physMap.TryLookup(_gfn, out var mfn, out var type) && mfn == _mfn && type == _type;

    private bool Hold(ulong gfn)
    {
        Dispose();
        if (!_physMap.TryLookup(gfn, out _, out var type) || !_memory.TryGetFrame(gfn, write: false, out var mfn))
        {
            return false;
        }

        // TryGetFrame looked the entry up again; record what it pinned and check that the type we
        // keep describes that frame (a concurrent change between the two lookups is re-checked).
        _gfn = gfn;
        _mfn = mfn;
        _type = type;
        _page = _memory.Machine.FramePointer(mfn);
        _held = true;
        if (!StillMapped())
        {
            Dispose();
            return false;
        }

        return true;
    }
}
