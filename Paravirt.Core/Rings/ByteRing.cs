using System.Runtime.InteropServices;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Core.Rings;

/// <summary>
/// One direction of a byte ring as the console (<c>xencons_interface</c>) and XenStore
/// (<c>xenstore_domain_interface</c>) pages have them: a power-of-two data array with free-running
/// 32-bit consumer and producer indices (MASK_XENCONS_IDX / MASK_XENSTORE_IDX). The reader and
/// writer are each one side; the indices of the other side are read once per call and checked:
/// more than the ring's size between them is a protocol error.
/// </summary>
public sealed class ByteRing
{
    private readonly Memory<byte> _page;
    private readonly int _data;
    private readonly int _cons;
    private readonly int _prod;

    /// <param name="page">The shared page.</param>
    /// <param name="dataOffset">Where the data array starts.</param>
    /// <param name="size">Its size (a power of two).</param>
    /// <param name="consOffset">The consumer index's offset.</param>
    /// <param name="prodOffset">The producer index's offset.</param>
    public ByteRing(Memory<byte> page, int dataOffset, int size, int consOffset, int prodOffset)
    {
        if (size <= 0 || (size & (size - 1)) != 0)
        {
            throw new ArgumentException($"a byte ring's size must be a power of two, not {size}", nameof(size));
        }

        if (dataOffset < 0 || dataOffset + size > page.Length || consOffset + 4 > page.Length || prodOffset + 4 > page.Length)
        {
            throw new ArgumentException("the ring does not fit in the page");
        }

        _page = page;
        _data = dataOffset;
        Size = size;
        _cons = consOffset;
        _prod = prodOffset;
    }

    public int Size { get; }

    /// <summary>The guest → host half of a console page (<c>out</c>).</summary>
    public static ByteRing ConsoleOut(Memory<byte> page) =>
        new(page, Off<xencons_interface>("out"), 2048, Off<xencons_interface>(nameof(xencons_interface.out_cons)), Off<xencons_interface>(nameof(xencons_interface.out_prod)));

    /// <summary>The host → guest half of a console page (<c>in</c>).</summary>
    public static ByteRing ConsoleIn(Memory<byte> page) =>
        new(page, Off<xencons_interface>("in"), 1024, Off<xencons_interface>(nameof(xencons_interface.in_cons)), Off<xencons_interface>(nameof(xencons_interface.in_prod)));

    /// <summary>The guest → store half of a XenStore page (<c>req</c>).</summary>
    public static ByteRing XenStoreRequests(Memory<byte> page) =>
        new(page, Off<xenstore_domain_interface>("req"), XsWire.XENSTORE_RING_SIZE, Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_cons)), Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.req_prod)));

    /// <summary>The store → guest half of a XenStore page (<c>rsp</c>).</summary>
    public static ByteRing XenStoreResponses(Memory<byte> page) =>
        new(page, Off<xenstore_domain_interface>("rsp"), XsWire.XENSTORE_RING_SIZE, Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_cons)), Off<xenstore_domain_interface>(nameof(xenstore_domain_interface.rsp_prod)));

    private static int Off<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    /// <summary>Bytes waiting to be read, or -1 if the indices are inconsistent.</summary>
    public int Available
    {
        get
        {
            var (cons, prod) = Indices();
            var n = unchecked(prod - cons);
            return n > (uint)Size ? -1 : (int)n;
        }
    }

    /// <summary>Reads up to <paramref name="destination"/>.Length bytes; -1 on a protocol error (the producer ran past the consumer).</summary>
    public int Read(Span<byte> destination)
    {
        var (cons, prod) = Indices();
        var available = unchecked(prod - cons);
        if (available > (uint)Size)
        {
            return -1;
        }

        var n = (int)Math.Min(available, (uint)destination.Length);
        ReadAt(cons, destination[..n]);
        Volatile.Write(ref RingLayout.Index(_page, _cons), unchecked(cons + (uint)n)); // bytes read before the index moves
        return n;
    }

    /// <summary>Writes as much of <paramref name="source"/> as fits; returns the count, or -1 on a protocol error.</summary>
    public int Write(ReadOnlySpan<byte> source)
    {
        var (cons, prod) = Indices();
        var used = unchecked(prod - cons);
        if (used > (uint)Size)
        {
            return -1;
        }

        var n = (int)Math.Min((uint)Size - used, (uint)source.Length);
        WriteAt(prod, source[..n]);
        Volatile.Write(ref RingLayout.Index(_page, _prod), unchecked(prod + (uint)n)); // bytes written before the index moves
        return n;
    }

    private (uint Cons, uint Prod) Indices() =>
        (Volatile.Read(ref RingLayout.Index(_page, _cons)), Volatile.Read(ref RingLayout.Index(_page, _prod)));

    private void ReadAt(uint index, Span<byte> destination)
    {
        var data = _page.Span.Slice(_data, Size);
        var start = (int)(index & (uint)(Size - 1));
        var first = Math.Min(destination.Length, Size - start);
        data.Slice(start, first).CopyTo(destination);
        data[..(destination.Length - first)].CopyTo(destination[first..]);
    }

    private void WriteAt(uint index, ReadOnlySpan<byte> source)
    {
        var data = _page.Span.Slice(_data, Size);
        var start = (int)(index & (uint)(Size - 1));
        var first = Math.Min(source.Length, Size - start);
        source[..first].CopyTo(data[start..]);
        source[first..].CopyTo(data);
    }
}
