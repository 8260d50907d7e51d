using System.Buffers;

namespace Paravirt.Core.Memory;

/// <summary>A <see cref="MemoryManager{T}"/> over a <see cref="PinnedPage"/>, so the page can be a <see cref="Memory{T}"/>.</summary>
internal sealed unsafe class PinnedPageMemory(PinnedPage page) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => page.Bytes;

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, MachineMemory.PageSize);

        // SAFETY: machine memory is unmanaged and never moves; the frame stays referenced until the
        // PinnedPage is disposed, and elementIndex <= 4096 keeps the pointer within (or one past) the page.
        return new MemoryHandle(page.Pointer + elementIndex);
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        // The PinnedPage owns the frame reference; it is disposed by whoever pinned it.
    }
}
