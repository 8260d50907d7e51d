using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Paravirt.Core.Rings;

/// <summary>
/// The shared header of an <c>io/ring.h</c> ring page (<c>DEFINE_RING_TYPES</c>'s <c>struct
/// NAME_sring</c>): req_prod at 0, req_event at 4, rsp_prod at 8, rsp_event at 12, 48 bytes of
/// private/padding, entries from byte 64. Entries are a union of request and response, so each
/// slot is as large as the larger of the two.
/// </summary>
public static class RingLayout
{
    public const int ReqProd = 0;
    public const int ReqEvent = 4;
    public const int RspProd = 8;
    public const int RspEvent = 12;
    public const int EntriesOffset = 64;

    /// <summary>Slot size for a request/response pair.</summary>
    public static int EntrySize<TReq, TRsp>()
        where TReq : unmanaged
        where TRsp : unmanaged => Math.Max(Unsafe.SizeOf<TReq>(), Unsafe.SizeOf<TRsp>());

    /// <summary>__RING_SIZE: as many entries as fit after the header, rounded down to a power of two.</summary>
    public static int Size(int bytes, int entrySize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(entrySize, 1);
        var fit = (bytes - EntriesOffset) / entrySize;
        if (fit < 1)
        {
            throw new ArgumentException($"a ring of {bytes} bytes has no room for an entry of {entrySize} bytes");
        }

        return 1 << (31 - System.Numerics.BitOperations.LeadingZeroCount((uint)fit));
    }

    internal static ref uint Index(Memory<byte> page, int offset) =>
        ref MemoryMarshal.AsRef<uint>(page.Span.Slice(offset, sizeof(uint)));
}

/// <summary>Outcome of taking from a ring.</summary>
public enum RingStatus
{
    /// <summary>An entry was taken.</summary>
    Ok,

    /// <summary>Nothing to take now.</summary>
    Empty,

    /// <summary>
    /// The other end broke the protocol: its producer index is more than a ring ahead of what was
    /// consumed (io/ring.h: RING_REQUEST_PROD_OVERFLOW). Nothing was taken; the ring is not usable.
    /// </summary>
    ProtocolError,
}
