using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// Guest memory's 1, 2, 4 or 8-byte little-endian words at a host address: what a bus over host
/// memory and the interpreter's direct TLB path both read and write.
/// </summary>
internal static unsafe class GuestWords
{
    /// <summary>The <paramref name="size"/>-byte word at <paramref name="p"/>, zero-extended.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(byte* p, int size) => size switch
    {
        1 => *p,
        2 => BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(p, 2)),
        4 => BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(p, 4)),
        _ => BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(p, 8)),
    };

    /// <summary>Writes the low <paramref name="size"/> bytes of <paramref name="value"/> at <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(byte* p, int size, ulong value)
    {
        switch (size)
        {
            case 1: *p = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(new Span<byte>(p, 2), (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(p, 4), (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(p, 8), value); break;
        }
    }
}
