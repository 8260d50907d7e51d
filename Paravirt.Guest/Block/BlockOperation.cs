using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>
/// One submitted block operation (a read or write may span several ring requests). It completes
/// when every ring request it was split into has its response; <see cref="Status"/> is the first
/// non-OKAY <c>BLKIF_RSP_*</c>, if any. A completed operation may be passed to a Submit call
/// again to reuse it (no allocation per operation).
/// </summary>
public sealed class BlockOperation
{
    private int _parts;
    private bool _submitting;

    /// <summary>Creates an idle operation (for reuse with the Submit methods).</summary>
    public BlockOperation() => IsDoneCondition = () => IsCompleted;

    /// <summary>The <c>BLKIF_OP_*</c> of the request(s).</summary>
    public int Operation { get; private set; }

    /// <summary>The first sector (sector-size units).</summary>
    public long Sector { get; private set; }

    /// <summary>Bytes transferred (reads and writes), or sectors (discard).</summary>
    public long Length { get; private set; }

    /// <summary>True once every ring request of the operation has been answered.</summary>
    public bool IsCompleted => !_submitting && Volatile.Read(ref _parts) == 0;

    /// <summary><c>BLKIF_RSP_OKAY</c> (0), or the first failure's <c>BLKIF_RSP_*</c>.</summary>
    public short Status { get; private set; }

    /// <summary>Why the frontend failed the operation itself (a protocol error by the backend, a disconnect), or null.</summary>
    public string? FailureReason { get; private set; }

    internal Func<bool> IsDoneCondition { get; }

    internal void Begin(int operation, long sector, long length)
    {
        if (!IsCompleted)
        {
            throw new InvalidOperationException($"the operation ({OpName(Operation)} at sector {Sector}) is still in flight; only a completed operation may be reused");
        }

        Operation = operation;
        Sector = sector;
        Length = length;
        Status = Blkif.BLKIF_RSP_OKAY;
        FailureReason = null;
        _submitting = true;
    }

    internal void AddPart() => Interlocked.Increment(ref _parts);

    internal void EndSubmit() => _submitting = false;

    /// <summary>Called with the frontend's lock held (interrupt context or main flow).</summary>
    internal void Complete(short status, string? reason = null)
    {
        if (status != Blkif.BLKIF_RSP_OKAY && Status == Blkif.BLKIF_RSP_OKAY)
        {
            Status = status;
            FailureReason = reason;
        }

        Interlocked.Decrement(ref _parts);
    }

    /// <summary>Throws <see cref="BlockIOException"/> when the operation failed.</summary>
    public void ThrowIfFailed()
    {
        if (Status != Blkif.BLKIF_RSP_OKAY)
        {
            throw new BlockIOException(Status, Operation, Sector, FailureReason);
        }
    }

    internal static string OpName(int op) => op switch
    {
        Blkif.BLKIF_OP_READ => "read",
        Blkif.BLKIF_OP_WRITE => "write",
        Blkif.BLKIF_OP_WRITE_BARRIER => "barrier",
        Blkif.BLKIF_OP_FLUSH_DISKCACHE => "flush",
        Blkif.BLKIF_OP_DISCARD => "discard",
        _ => $"op {op}",
    };
}

/// <summary>A block request the backend answered with something other than <c>BLKIF_RSP_OKAY</c>, or that the frontend had to fail.</summary>
public sealed class BlockIOException : IOException
{
    /// <summary>Creates the exception for a failed request.</summary>
    public BlockIOException(short status, int operation, long sector, string? reason = null)
        : base(Describe(status, operation, sector, reason))
    {
        Status = status;
        Operation = operation;
        Sector = sector;
    }

    /// <summary>The <c>BLKIF_RSP_*</c> status (<c>BLKIF_RSP_ERROR</c> -1, <c>BLKIF_RSP_EOPNOTSUPP</c> -2).</summary>
    public short Status { get; }

    /// <summary>The <c>BLKIF_OP_*</c>.</summary>
    public int Operation { get; }

    /// <summary>The first sector of the operation.</summary>
    public long Sector { get; }

    private static string Describe(short status, int operation, long sector, string? reason)
    {
        var name = status switch
        {
            Blkif.BLKIF_RSP_ERROR => "BLKIF_RSP_ERROR",
            Blkif.BLKIF_RSP_EOPNOTSUPP => "BLKIF_RSP_EOPNOTSUPP",
            _ => $"status {status}",
        };
        return $"block {BlockOperation.OpName(operation)} at sector {sector} failed: {name}" + (reason is null ? "" : $" ({reason})");
    }
}
