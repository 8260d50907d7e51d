using Paravirt.Core.Cpu.Interpreter;

namespace Paravirt.Core.Memory.Pv;

/// <summary>
/// The interpreter's memory bus for a classic PV domain: physical addresses are machine addresses
/// (a PV guest's page tables hold machine frame numbers), and the bus backs exactly the frames the
/// domain owns. Any other frame is a bus error, which the engine turns into a domain crash: a
/// validated page table can only reach such a frame through a bug in the memory model.
/// </summary>
/// <remarks>
/// No reference is taken per access: the PV memory model keeps a reference on every frame a
/// validated page-table entry maps, so a frame the guest can reach cannot be freed under it.
/// The owner check is the last line of defence, not the mechanism.
/// </remarks>
public sealed unsafe class DomainMachineBus : IDirectMemoryBus
{
    private readonly FrameTable _frames;
    private readonly MachineMemory _memory;
    private readonly ushort _owner;
    private readonly Lock _splitLock = new();

    public DomainMachineBus(FrameTable frames, ushort owner)
    {
        _frames = frames;
        _memory = frames.Memory;
        _owner = owner;
        Epoch = frames.ReleaseEpoch(owner);
    }

    /// <summary>Advances whenever a frame of the owner is freed: a page pointer handed out before is checked again.</summary>
    public PageEpoch Epoch { get; }

    /// <summary>The owner's frame holding <paramref name="pa"/> in host memory, or null for any other frame.</summary>
    public byte* PagePointer(ulong pa) => TryPointer(pa & ~(ulong)MachineMemory.PageMask, MachineMemory.PageSize, out var p) ? p : null;

    public bool TryRead(ulong pa, int size, out ulong value)
    {
        if (!TryPointer(pa, size, out var p))
        {
            value = 0;
            return false;
        }

        value = GuestWords.Read(p, size);
        return true;
    }

    public bool TryWrite(ulong pa, int size, ulong value)
    {
        if (!TryPointer(pa, size, out var p))
        {
            return false;
        }

        GuestWords.Write(p, size, value);
        return true;
    }

    public bool TryRead(ulong pa, Span<byte> destination)
    {
        if (!TryPointer(pa, destination.Length, out var p))
        {
            return false;
        }

        new ReadOnlySpan<byte>(p, destination.Length).CopyTo(destination);
        return true;
    }

    public bool TryWrite(ulong pa, ReadOnlySpan<byte> source)
    {
        if (!TryPointer(pa, source.Length, out var p))
        {
            return false;
        }

        source.CopyTo(new Span<byte>(p, source.Length));
        return true;
    }

    public bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original)
    {
        original = 0;
        if (!TryPointer(pa, size, out var p))
        {
            return false;
        }

        var offset = (int)(pa & 7);
        if (offset + size > 8)
        {
            original = WordAtomics.CompareExchangeSplit(this, _splitLock, pa, size, value, comparand);
            return true;
        }

        // A frame is page-aligned, so the aligned word holding the operand is inside it.
        original = WordAtomics.CompareExchange(ref *(ulong*)((ulong)p & ~7UL), offset, size, value, comparand);
        return true;
    }

    public bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original)
    {
        original = default;
        if ((pa & 15) != 0 || !TryPointer(pa, 16, out var p))
        {
            return false;
        }

        // .NET has no 16-byte compare-exchange: serialise cmpxchg16b on this bus, as FlatMemory does.
        lock (_splitLock)
        {
            original = *(UInt128*)p;
            if (original == comparand)
            {
                *(UInt128*)p = value;
            }
        }

        return true;
    }

    private bool TryPointer(ulong pa, int length, out byte* p)
    {
        var mfn = pa >> MachineMemory.PageShift;
        if (length <= 0 || length > MachineMemory.PageSize || (pa & MachineMemory.PageMask) + (ulong)length > MachineMemory.PageSize
            || !_frames.IsValid(mfn) || _frames.OwnerOf(mfn) != _owner)
        {
            p = null;
            return false;
        }

        p = _memory.FramePointer(mfn) + (pa & MachineMemory.PageMask);
        return true;
    }
}
