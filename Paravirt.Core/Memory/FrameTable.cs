using Paravirt.Core.Cpu.Interpreter;
namespace Paravirt.Core.Memory;

/// <summary>
/// Ownership and reference counts of every machine frame, the free list, and the machine-to-physical
/// table (m2p). A frame's count is 0 when free; allocation holds one reference, and every accessor
/// that touches a frame takes another for the duration (Xen's get_page/put_page), so a frame a
/// domain releases while another vCPU is copying into it is not reused until the copy is done.
/// </summary>
public sealed class FrameTable
{
    /// <summary>Owner of a free frame.</summary>
    public const ushort NoOwner = 0x7FF4; // DOMID_INVALID

    /// <summary>m2p entry of a frame that is in no physmap.</summary>
    public const ulong InvalidGfn = ulong.MaxValue;

    private readonly MachineMemory _memory;
    private readonly ushort[] _owner;
    private readonly int[] _count;
    private readonly ulong[] _m2p;
    private readonly Lock _freeLock = new();
    private readonly Stack<uint> _free;

    public FrameTable(MachineMemory memory)
    {
        _memory = memory;
        var n = memory.Frames;
        _owner = new ushort[n];
        _count = new int[n];
        _m2p = new ulong[n];
        Array.Fill(_owner, NoOwner);
        Array.Fill(_m2p, InvalidGfn);
        Types = new Pv.PageTypeTable(n);
        _free = new Stack<uint>((int)n);
        for (var mfn = n - 1; mfn >= 0; mfn--)
        {
            _free.Push((uint)mfn);
        }
    }

    public MachineMemory Memory => _memory;

    /// <summary>Every frame's PV page type and type count (Xen's type_info), beside the reference counts.</summary>
    internal Pv.PageTypeTable Types { get; }

    public long TotalFrames => _memory.Frames;

    public long FreeFrames
    {
        get
        {
            lock (_freeLock)
            {
                return _free.Count;
            }
        }
    }

    /// <summary>Allocates a zeroed frame owned by <paramref name="owner"/>, or returns false when none is free.</summary>
    public bool TryAllocate(ushort owner, out ulong mfn)
    {
        uint frame;
        lock (_freeLock)
        {
            if (!_free.TryPop(out frame))
            {
                mfn = 0;
                return false;
            }
        }

        _memory.Frame(frame).Clear();
        Types.Reset(frame);
        _owner[frame] = owner;
        _m2p[frame] = InvalidGfn;
        Volatile.Write(ref _count[frame], 1);
        mfn = frame;
        return true;
    }

    /// <summary>Allocates <c>mfns.Length</c> frames at once, or none.</summary>
    public bool TryAllocateMany(ushort owner, Span<ulong> mfns)
    {
        for (var i = 0; i < mfns.Length; i++)
        {
            if (!TryAllocate(owner, out mfns[i]))
            {
                for (var j = 0; j < i; j++)
                {
                    Release(mfns[j]);
                }

                return false;
            }
        }

        return true;
    }

    /// <summary>Drops the allocation reference; the frame is free once every accessor has let go of it.</summary>
    public void Release(ulong mfn)
    {
        CheckRange(mfn);
        Put(mfn);
    }

    // One epoch per owner, made on first use: advanced whenever a frame of that owner is freed,
    // so host pointers handed to its interpreters (IDirectMemoryBus) are asked for again.
    private readonly PageEpoch?[] _releaseEpochs = new PageEpoch?[NoOwner + 1];

    /// <summary>The epoch that advances whenever a frame owned by <paramref name="owner"/> is freed.</summary>
    public PageEpoch ReleaseEpoch(ushort owner)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(owner, NoOwner);
        ref var slot = ref _releaseEpochs[owner];
        return Volatile.Read(ref slot) ?? Interlocked.CompareExchange(ref slot, new PageEpoch(), null) ?? slot!;
    }

    public ushort OwnerOf(ulong mfn) => mfn < (ulong)_owner.Length ? Volatile.Read(ref _owner[mfn]) : NoOwner;

    public bool IsValid(ulong mfn) => mfn < (ulong)_owner.Length;

    /// <summary>Takes a reference on a frame if it is allocated to <paramref name="owner"/>.</summary>
    public bool TryGet(ulong mfn, ushort owner)
    {
        if (mfn >= (ulong)_count.Length)
        {
            return false;
        }

        ref var count = ref _count[mfn];
        while (true)
        {
            var c = Volatile.Read(ref count);
            if (c <= 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref count, c + 1, c) == c)
            {
                break;
            }
        }

        // The owner only changes while the count is 0, which our reference now rules out.
        if (Volatile.Read(ref _owner[mfn]) != owner)
        {
            Put(mfn);
            return false;
        }

        return true;
    }

    /// <summary>Drops a reference taken by <see cref="TryGet"/> (or the allocation's own).</summary>
    public void Put(ulong mfn)
    {
        var left = Interlocked.Decrement(ref _count[mfn]);
        if (left == 0)
        {
            var owner = _owner[mfn];
            if (owner <= NoOwner && Volatile.Read(ref _releaseEpochs[owner]) is { } epoch)
            {
                epoch.Advance(); // before the frame can be handed to anyone else
            }

            _owner[mfn] = NoOwner;
            _m2p[mfn] = InvalidGfn;
            lock (_freeLock)
            {
                _free.Push((uint)mfn);
            }
        }
        else if (left < 0)
        {
            throw new InvalidOperationException($"machine frame {mfn:x} released more often than it was taken");
        }
    }

    /// <summary>The machine-to-physical entry (Xen's <c>machine_to_phys_mapping</c>).</summary>
    public ulong MachineToPhys(ulong mfn) => mfn < (ulong)_m2p.Length ? Volatile.Read(ref _m2p[mfn]) : InvalidGfn;

    internal void SetMachineToPhys(ulong mfn, ulong gfn)
    {
        CheckRange(mfn);
        Volatile.Write(ref _m2p[mfn], gfn);
    }

    internal int ReferenceCount(ulong mfn) => Volatile.Read(ref _count[mfn]);

    private void CheckRange(ulong mfn)
    {
        if (mfn >= (ulong)_count.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(mfn), mfn, $"machine frame beyond the last frame {_count.Length - 1}");
        }
    }
}
