using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// A PV vCPU's bus: the domain's own frames (<see cref="DomainMachineBus"/>) plus, at physical
/// <see cref="M2pBase"/> and above, the machine-to-phys table read from
/// <see cref="FrameTable.MachineToPhys"/> (8 bytes per machine frame, Xen's
/// <c>machine_to_phys_mapping</c>). The interpreter reaches that range only through the read-only
/// <see cref="LinearWindow"/> at <c>MACH2PHYS_VIRT_START</c>, so it is never written.
/// </summary>
internal sealed unsafe class PvMachineBus(FrameTable frames, ushort owner) : IDirectMemoryBus
{
    /// <summary>Above any machine address (MAXPHYADDR is 52): where the M2P is served.</summary>
    public const ulong M2pBase = 1UL << 56;

    private readonly DomainMachineBus _frames = new(frames, owner);

    /// <summary>The read-only M2P window of a 64-bit PV guest: one 8-byte entry per machine frame, the rest of Xen's slot faults.</summary>
    public LinearWindow M2pWindow
    {
        get
        {
            var bytes = ((ulong)frames.TotalFrames * 8 + 4095) & ~4095UL;
            return new LinearWindow(ArchX86.MACH2PHYS_VIRT_START, ArchX86.HYPERVISOR_VIRT_END, bytes, M2pBase);
        }
    }

    public PageEpoch Epoch => _frames.Epoch;

    /// <summary>The domain's own frames directly; the M2P is served by the bus alone.</summary>
    public byte* PagePointer(ulong pa) => pa < M2pBase ? _frames.PagePointer(pa) : null;

    public bool TryRead(ulong pa, int size, out ulong value)
    {
        if (pa < M2pBase)
        {
            return _frames.TryRead(pa, size, out value);
        }

        Span<byte> bytes = stackalloc byte[8];
        value = 0;
        if (!TryReadM2p(pa - M2pBase, bytes[..size]))
        {
            return false;
        }

        value = BitConverter.ToUInt64(bytes);
        return true;
    }

    public bool TryWrite(ulong pa, int size, ulong value) => pa < M2pBase && _frames.TryWrite(pa, size, value);

    public bool TryRead(ulong pa, Span<byte> destination) =>
        pa < M2pBase ? _frames.TryRead(pa, destination) : TryReadM2p(pa - M2pBase, destination);

    public bool TryWrite(ulong pa, ReadOnlySpan<byte> source) => pa < M2pBase && _frames.TryWrite(pa, source);

    public bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original)
    {
        original = 0;
        return pa < M2pBase && _frames.TryCompareExchange(pa, size, value, comparand, out original);
    }

    public bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original)
    {
        original = default;
        return pa < M2pBase && _frames.TryCompareExchange16(pa, value, comparand, out original);
    }

    /// <summary>Bytes of the M2P from byte <paramref name="offset"/>; entries past the last frame read as INVALID_M2P_ENTRY.</summary>
    private bool TryReadM2p(ulong offset, Span<byte> destination)
    {
        if (offset >= ((ulong)frames.TotalFrames * 8 + 4095 & ~4095UL) || destination.Length > 4096)
        {
            return false;
        }

        for (var i = 0; i < destination.Length; i++)
        {
            var at = offset + (ulong)i;
            destination[i] = (byte)(frames.MachineToPhys(at >> 3) >> (int)((at & 7) * 8));
        }

        return true;
    }
}
