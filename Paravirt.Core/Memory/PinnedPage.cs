using System.Runtime.CompilerServices;

namespace Paravirt.Core.Memory;

/// <summary>
/// A machine frame held for as long as the hypervisor keeps a standing view of it: the
/// domain's shared_info page, a vCPU's registered vcpu_info, a FIFO control block. Holding the
/// reference is what Xen does with get_page on registration; it keeps the frame from being freed
/// or reused under the view until <see cref="Dispose"/>.
/// </summary>
public sealed unsafe class PinnedPage : IDisposable
{
    private readonly FrameTable _frames;
    private byte* _page;

    private PinnedPage(FrameTable frames, ulong mfn)
    {
        _frames = frames;
        Mfn = mfn;
        _page = frames.Memory.FramePointer(mfn);
    }

    public ulong Mfn { get; }

    /// <summary>
    /// Pins a frame owned by <paramref name="owner"/>, or returns null if it is not. The view also
    /// holds a writable type on the frame (Xen's get_page_and_type(PGT_writable_page) for vcpu_info,
    /// shared pages and rings), so a frame the hypervisor writes to cannot be a PV page table, and a
    /// page table cannot become such a view (null).
    /// </summary>
    public static PinnedPage? TryPin(FrameTable frames, ulong mfn, ushort owner)
    {
        if (!frames.TryGet(mfn, owner))
        {
            return null;
        }

        if (frames.Types.TryGet(mfn, Pv.PageType.Writable, out _) != Pv.PageTypeTable.GetResult.Done)
        {
            frames.Put(mfn);
            return null;
        }

        return new PinnedPage(frames, mfn);
    }

    /// <summary>
    /// A reference to a <typeparamref name="T"/> at <paramref name="offset"/> in the page. The
    /// other side may change it at any moment: copy it out before you check it.
    /// </summary>
    public ref T At<T>(int offset)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_page is null, this);
        if ((uint)offset > (uint)(MachineMemory.PageSize - sizeof(T)))
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"a {typeof(T).Name} of {sizeof(T)} bytes does not fit in the page there");
        }

        // SAFETY: the frame is referenced for this object's lifetime and offset + sizeof(T) <= 4096.
        return ref Unsafe.AsRef<T>(_page + offset);
    }

    /// <summary>The whole page as bytes.</summary>
    public Span<byte> Bytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(_page is null, this);
            return new Span<byte>(_page, MachineMemory.PageSize);
        }
    }

    /// <summary>
    /// The page as <see cref="Memory{T}"/>, for code written against it (byte rings). Valid until
    /// this object is disposed; using it afterwards throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    public Memory<byte> AsMemory() => new PinnedPageMemory(this).Memory;

    internal byte* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_page is null, this);
            return _page;
        }
    }

    public void Dispose()
    {
        if (_page is not null)
        {
            _page = null;
            _frames.Types.Put(Mfn);
            _frames.Put(Mfn);
        }
    }
}
