namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// The compare-exchange every memory bus needs for <c>lock cmpxchg</c> of 1, 2, 4 or 8 bytes: a
/// 64-bit compare-exchange loop on the aligned word that holds the operand, so narrow operands are
/// atomic against other vCPUs' locked operations on the same word.
/// </summary>
internal static class WordAtomics
{
    /// <summary>
    /// Compare-exchange of the <paramref name="size"/>-byte operand at byte <paramref name="offset"/>
    /// (with <c>offset + size ≤ 8</c>) of <paramref name="word"/>; returns the operand found.
    /// </summary>
    public static ulong CompareExchange(ref ulong word, int offset, int size, ulong value, ulong comparand)
    {
        var mask = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        value &= mask;
        comparand &= mask;
        var shift = offset * 8;
        while (true)
        {
            var old = Volatile.Read(ref word);
            var found = (old >> shift) & mask;
            if (found != comparand)
            {
                return found;
            }

            var updated = (old & ~(mask << shift)) | (value << shift);
            if (Interlocked.CompareExchange(ref word, updated, old) == old)
            {
                return found;
            }
        }
    }

    /// <summary>
    /// Compare-exchange of an operand that straddles two 8-byte words (a misaligned locked access):
    /// serialised on <paramref name="splitLock"/>, the bus's lock for such exchanges, as a read, a
    /// compare and a write. The caller has checked the range.
    /// </summary>
    public static ulong CompareExchangeSplit(IGuestMemoryBus bus, Lock splitLock, ulong pa, int size, ulong value, ulong comparand)
    {
        var mask = size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        lock (splitLock)
        {
            bus.TryRead(pa, size, out var original);
            if (original == (comparand & mask))
            {
                bus.TryWrite(pa, size, value);
            }

            return original;
        }
    }
}
