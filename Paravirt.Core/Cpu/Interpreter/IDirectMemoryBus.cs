namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// A bus whose pages live in host memory the interpreter may read and write directly: the
/// software TLB then keeps a host pointer beside each translation, and a load or store that hits
/// it does not call the bus. What the bus checks per access (that the page is backed and the
/// guest's own) it checks once, when it hands the pointer out; <see cref="Epoch"/> advances
/// whenever a page it handed out may have stopped being the guest's, and a pointer got under an
/// older value is asked for again before it is used.
/// </summary>
/// <remarks>
/// Atomic operations, page-crossing accesses and the machine's own substitute buses (writable
/// page-table emulation) still go through <see cref="IGuestMemoryBus"/>.
/// </remarks>
public interface IDirectMemoryBus : IGuestMemoryBus
{
    /// <summary>Advanced whenever a page this bus handed out may no longer belong to the guest.</summary>
    PageEpoch Epoch { get; }

    /// <summary>The host address of the 4 KiB page holding physical <paramref name="pa"/>, or null when it is not directly accessible.</summary>
    unsafe byte* PagePointer(ulong pa);
}

/// <summary>A counter that only goes up: see <see cref="IDirectMemoryBus.Epoch"/>.</summary>
public sealed class PageEpoch
{
    private long _value;

    public long Value => Volatile.Read(ref _value);

    public void Advance() => Interlocked.Increment(ref _value);
}
