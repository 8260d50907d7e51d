using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Paravirt.Core.Grants;

namespace Paravirt.Core.Backends.Block;

/// <summary>A writable grant mapping as <see cref="Memory{T}"/>, so a ring can sit on it. Every access after unmapping throws.</summary>
internal sealed unsafe class GrantPageMemory(HostGrantMapping mapping) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => mapping.WritableBytes;

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        var span = GetSpan();
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, span.Length);

        // SAFETY: the page is machine memory (unmanaged, never moves), referenced by the mapping until
        // it is disposed; elementIndex <= the page length keeps the pointer inside (or one past) it.
        return new MemoryHandle((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span)) + elementIndex);
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        // The mapping is owned (and unmapped) by the connection.
    }
}
