using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>
/// The bus of one emulated instruction under writable page tables (Xen's ptwr_emulate_ops):
/// reads, and writes to any other frame, go to the vCPU's own bus; a store to the L1 table being
/// emulated goes to the memory model's <see cref="PageTableWrite"/> (ptwr_emulated_write, or
/// ptwr_emulated_cmpxchg for a compare-exchange, which the interpreter uses for XCHG and every
/// locked read-modify-write). A store it refuses (a bad entry, a size other than 1, 2, 4 or 8
/// bytes, a 16-byte compare-exchange) fails as a bus error and sets <see cref="Refused"/>. One
/// instance per vCPU, aimed at a table with <see cref="Target"/> before each emulation.
/// </summary>
internal sealed class PageTableWriteBus(IGuestMemoryBus inner, Domain domain, PageTableWrite write) : IGuestMemoryBus
{
    private ulong _mfn;

    /// <summary>A store to the table was refused during the current emulation (Xen: X86EMUL_UNHANDLEABLE).</summary>
    public bool Refused { get; private set; }

    public void Target(ulong mfn)
    {
        _mfn = mfn;
        Refused = false;
    }

    private bool IsTable(ulong pa) => pa >> 12 == _mfn;

    public bool TryRead(ulong pa, int size, out ulong value) => inner.TryRead(pa, size, out value);

    public bool TryRead(ulong pa, Span<byte> destination) => inner.TryRead(pa, destination);

    public bool TryWrite(ulong pa, int size, ulong value) =>
        IsTable(pa) ? Update(pa, size, value, null, out _) : inner.TryWrite(pa, size, value);

    public bool TryWrite(ulong pa, ReadOnlySpan<byte> source)
    {
        if (!IsTable(pa))
        {
            return inner.TryWrite(pa, source);
        }

        // A store wider than an entry (string and SSE stores, FXSAVE) is not emulated: "bad write size".
        if (source.Length is not (1 or 2 or 4 or 8))
        {
            Refused = true;
            return false;
        }

        Span<byte> word = stackalloc byte[8];
        word.Clear();
        source.CopyTo(word);
        return Update(pa, source.Length, BitConverter.ToUInt64(word), null, out _);
    }

    public bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original)
    {
        if (!IsTable(pa))
        {
            return inner.TryCompareExchange(pa, size, value, comparand, out original);
        }

        return Update(pa, size, value, comparand, out original);
    }

    public bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original)
    {
        if (!IsTable(pa))
        {
            return inner.TryCompareExchange16(pa, value, comparand, out original);
        }

        original = default;
        Refused = true; // "bad cmpxchg size"
        return false;
    }

    private bool Update(ulong pa, int size, ulong value, ulong? comparand, out ulong found)
    {
        if (write(domain, _mfn, (uint)(pa & 0xFFF), size, value, comparand, out found) == 0)
        {
            return true;
        }

        Refused = true;
        return false;
    }
}
