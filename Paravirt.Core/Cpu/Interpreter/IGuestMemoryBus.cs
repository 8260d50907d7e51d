namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// The interpreter's only door to memory: physical addresses in, little-endian values out. The
/// interpreter never asks for an access that crosses a 4 KiB page (it splits such accesses itself),
/// so an implementation only checks that the page is backed. Every method returns <c>false</c>
/// for an address that is not backed instead of throwing: a fault is part of the hot path.
/// </summary>
/// <remarks>
/// Locked instructions of other vCPUs on the same memory must see each other's updates atomically:
/// <see cref="TryCompareExchange"/> is the one primitive they are built from (a <c>lock add</c> is a
/// read and a compare-exchange loop).
/// </remarks>
public interface IGuestMemoryBus
{
    /// <summary>Reads 1, 2, 4 or 8 bytes at <paramref name="pa"/>, zero-extended.</summary>
    bool TryRead(ulong pa, int size, out ulong value);

    /// <summary>Writes the low 1, 2, 4 or 8 bytes of <paramref name="value"/> at <paramref name="pa"/>.</summary>
    bool TryWrite(ulong pa, int size, ulong value);

    /// <summary>Copies <paramref name="destination"/>.Length bytes (at most one page) from <paramref name="pa"/>.</summary>
    bool TryRead(ulong pa, Span<byte> destination);

    /// <summary>Copies <paramref name="source"/> (at most one page) to <paramref name="pa"/>.</summary>
    bool TryWrite(ulong pa, ReadOnlySpan<byte> source);

    /// <summary>
    /// Atomically: if the 1, 2, 4 or 8-byte value at <paramref name="pa"/> equals
    /// <paramref name="comparand"/>, store <paramref name="value"/>. <paramref name="original"/> is the
    /// value found; the exchange happened when it equals <paramref name="comparand"/>.
    /// </summary>
    bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original);

    /// <summary>The 16-byte compare-exchange of <c>cmpxchg16b</c>; <paramref name="pa"/> is 16-byte aligned.</summary>
    bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original);
}
