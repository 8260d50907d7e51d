using System.Runtime.CompilerServices;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// An <see cref="IGuestMemoryBus"/> over one byte array: physical address N is byte N. For tests,
/// benchmarks and tools; the PV model supplies a bus over a domain's machine frames.
/// </summary>
/// <remarks>
/// Compare-exchanges that fit in one aligned 8-byte word are lock-free (a 64-bit CAS on the word
/// that holds them), so they are atomic against each other from any number of threads. Ones that
/// straddle an 8-byte boundary and the 16-byte exchange take this instance's lock, so they are
/// atomic only against each other.
/// </remarks>
public sealed class FlatMemory : IGuestMemoryBus
{
    private readonly byte[] _bytes;
    private readonly Lock _splitLock = new();

    public FlatMemory(int size)
    {
        if (size <= 0 || size % 4096 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "the size must be a positive multiple of 4096 bytes");
        }

        // The array's data is 8-byte aligned on 64-bit .NET, which the word CAS below relies on;
        // pinned so the address never changes under an Interlocked operation's feet.
        _bytes = GC.AllocateArray<byte>(size, pinned: true);
    }

    /// <summary>The bytes themselves, for loading code and checking results.</summary>
    public Span<byte> Bytes => _bytes;

    public int Size => _bytes.Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool InBounds(ulong pa, int size) => pa <= (ulong)_bytes.Length && (ulong)size <= (ulong)_bytes.Length - pa;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRead(ulong pa, int size, out ulong value)
    {
        if (!InBounds(pa, size))
        {
            value = 0;
            return false;
        }

        ref var b = ref _bytes[(int)pa];
        value = size switch
        {
            1 => b,
            2 => Unsafe.ReadUnaligned<ushort>(ref b),
            4 => Unsafe.ReadUnaligned<uint>(ref b),
            _ => Unsafe.ReadUnaligned<ulong>(ref b),
        };
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryWrite(ulong pa, int size, ulong value)
    {
        if (!InBounds(pa, size))
        {
            return false;
        }

        ref var b = ref _bytes[(int)pa];
        switch (size)
        {
            case 1: b = (byte)value; break;
            case 2: Unsafe.WriteUnaligned(ref b, (ushort)value); break;
            case 4: Unsafe.WriteUnaligned(ref b, (uint)value); break;
            default: Unsafe.WriteUnaligned(ref b, value); break;
        }

        return true;
    }

    public bool TryRead(ulong pa, Span<byte> destination)
    {
        if (!InBounds(pa, destination.Length))
        {
            return false;
        }

        _bytes.AsSpan((int)pa, destination.Length).CopyTo(destination);
        return true;
    }

    public bool TryWrite(ulong pa, ReadOnlySpan<byte> source)
    {
        if (!InBounds(pa, source.Length))
        {
            return false;
        }

        source.CopyTo(_bytes.AsSpan((int)pa, source.Length));
        return true;
    }

    public bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original)
    {
        if (!InBounds(pa, size))
        {
            original = 0;
            return false;
        }

        var offset = (int)(pa & 7);
        if (offset + size > 8)
        {
            original = WordAtomics.CompareExchangeSplit(this, _splitLock, pa, size, value, comparand);
            return true;
        }

        // SAFETY of the cast: the word index is in bounds (pa is, and the array length is a multiple of 8).
        original = WordAtomics.CompareExchange(ref Unsafe.As<byte, ulong>(ref _bytes[(int)(pa & ~7UL)]), offset, size, value, comparand);
        return true;
    }

    public bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original)
    {
        if (!InBounds(pa, 16))
        {
            original = 0;
            return false;
        }

        lock (_splitLock)
        {
            ref var cell = ref Unsafe.As<byte, UInt128>(ref _bytes[(int)pa]);
            original = Unsafe.ReadUnaligned<UInt128>(ref Unsafe.As<UInt128, byte>(ref cell));
            if (original == comparand)
            {
                Unsafe.WriteUnaligned(ref Unsafe.As<UInt128, byte>(ref cell), value);
            }
        }

        return true;
    }
}
