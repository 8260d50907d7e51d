using System.Runtime.InteropServices;

namespace Paravirt.Core.Memory;

/// <summary>
/// All machine memory of one hypervisor: a single page-aligned host mapping cut into 4 KiB machine
/// frames (MFNs). One mapping, so a later KVM engine can register it as guest memory in one slot.
/// This is the only type that hands out raw pointers; everything else goes through
/// <see cref="GuestMemory"/> or <see cref="FrameTable"/>.
/// </summary>
public sealed unsafe class MachineMemory : IDisposable
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;
    public const ulong PageMask = PageSize - 1;

    private byte* _base;

    public MachineMemory(long frames)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(frames, 1L << 28, nameof(frames) + " (at most 1 TiB of machine memory)");
        Frames = frames;
        _base = (byte*)NativeMemory.AlignedAlloc((nuint)(frames * PageSize), PageSize);
    }

    /// <summary>Number of machine frames.</summary>
    public long Frames { get; }

    public long Bytes => Frames * PageSize;

    /// <summary>The host address of a frame. The caller has checked <paramref name="mfn"/> is in range.</summary>
    internal byte* FramePointer(ulong mfn)
    {
        ObjectDisposedException.ThrowIf(_base is null, this);
        // SAFETY: mfn < Frames is every caller's precondition (checked by FrameTable / GuestMemory);
        // the Debug.Assert documents and catches a broken caller in debug builds.
        System.Diagnostics.Debug.Assert(mfn < (ulong)Frames);
        return _base + (mfn << PageShift);
    }

    /// <summary>A span over one frame; <paramref name="mfn"/> must be in range.</summary>
    internal Span<byte> Frame(ulong mfn)
    {
        if (mfn >= (ulong)Frames)
        {
            throw new ArgumentOutOfRangeException(nameof(mfn), mfn, $"machine frame beyond the last frame {Frames - 1}");
        }

        return new Span<byte>(FramePointer(mfn), PageSize);
    }

    public void Dispose()
    {
        if (_base is not null)
        {
            NativeMemory.AlignedFree(_base);
            _base = null;
        }
    }
}
