using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// The guest's half of one byte ring in a shared page: the console's <c>in</c>/<c>out</c>
/// (io/console.h) and XenStore's <c>req</c>/<c>rsp</c> (io/xs_wire.h). Indices run free and are
/// masked by the ring size (a power of two); the other end's index is never trusted: indices
/// more than a ring apart are a protocol error (<see cref="InvalidOperationException"/>).
/// Data is copied before the producer index moves, and the consumer index moves only after the
/// data was copied out. Callers serialise their own use of one ring.
/// </summary>
internal sealed class GuestByteRing(IGuestPhysicalMemory memory, ulong data, uint size, ulong consAt, ulong prodAt, string name)
{
    /// <summary>Bytes in the ring (written and not yet consumed).</summary>
    public uint Used => Indices(out _, out _);

    /// <summary>Producer: copies what fits (up to the wrap) and publishes it. Returns the count; 0 when the ring is full.</summary>
    public int Write(ReadOnlySpan<byte> source)
    {
        var used = Indices(out _, out var prod);
        var at = prod & (size - 1);
        var n = (int)Math.Min(Math.Min(size - used, size - at), (uint)source.Length);
        if (n == 0)
        {
            return 0;
        }

        memory.Write(data + at, source[..n]);
        Thread.MemoryBarrier(); // the bytes before the index
        memory.WriteVolatile(prodAt, 4, prod + (uint)n);
        return n;
    }

    /// <summary>Consumer: copies out what is there (up to the wrap) and frees it. Returns the count; 0 when the ring is empty.</summary>
    public int Read(Span<byte> destination)
    {
        var avail = Indices(out var cons, out _);
        var at = cons & (size - 1);
        var n = (int)Math.Min(Math.Min(avail, size - at), (uint)destination.Length);
        if (n == 0)
        {
            return 0;
        }

        Thread.MemoryBarrier(); // the index before the bytes
        memory.Read(data + at, destination[..n]);
        Thread.MemoryBarrier();
        memory.WriteVolatile(consAt, 4, cons + (uint)n);
        return n;
    }

    private uint Indices(out uint cons, out uint prod)
    {
        cons = (uint)memory.ReadVolatile(consAt, 4);
        prod = (uint)memory.ReadVolatile(prodAt, 4);
        var used = prod - cons;
        return used <= size
            ? used
            : throw new InvalidOperationException($"{name} ring: the producer index {prod} is {used} bytes ahead of the consumer index {cons} (the ring holds {size})");
    }
}
