namespace Paravirt.Core.Backends.Block;

/// <summary>
/// A disk whose reads and writes may run on the calling thread (a file in the page cache, memory).
/// blkback runs each request on a thread-pool worker already; for such a device it reads and
/// writes there, straight between the disk and the guest's granted page, with no async state, no
/// second hop through the pool and no bounce buffer. Same contract as <see cref="IBlockDevice"/>.
/// </summary>
internal interface ISynchronousBlockDevice
{
    /// <summary>Reads <c>destination.Length / SectorSize</c> sectors from <paramref name="sector"/>.</summary>
    void Read(long sector, Span<byte> destination);

    /// <summary>Writes <c>source.Length / SectorSize</c> sectors at <paramref name="sector"/>.</summary>
    void Write(long sector, ReadOnlySpan<byte> source);
}
