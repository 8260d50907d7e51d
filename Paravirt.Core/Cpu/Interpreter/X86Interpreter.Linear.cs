namespace Paravirt.Core.Cpu.Interpreter;

// The machine's own accesses to guest linear memory between runs (a PV bounce frame on the guest
// stack, an iret frame, the bytes of a forced-emulation prefix): translated through the MMU at
// the current CPL with the guest's permissions, and noted in the code cache like the guest's
// own stores.
public sealed partial class X86Interpreter
{
    /// <summary>
    /// Reads <paramref name="destination"/>.Length bytes at linear <paramref name="la"/> as the
    /// guest would at its current privilege level. False (nothing is promised about
    /// <paramref name="destination"/>) when a page is not readable: <paramref name="faultAddress"/>
    /// is the first linear address that failed.
    /// </summary>
    public bool TryReadLinear(ulong la, Span<byte> destination, out ulong faultAddress)
    {
        while (!destination.IsEmpty)
        {
            var chunk = (int)Math.Min((ulong)destination.Length, 4096 - (la & 0xFFF));
            if (_mmu.Translate(la, Access.Read, out var pa, out _) != TranslateStatus.Ok || !_bus.TryRead(pa, destination[..chunk]))
            {
                faultAddress = la;
                return false;
            }

            destination = destination[chunk..];
            la += (ulong)chunk;
        }

        faultAddress = 0;
        return true;
    }

    /// <summary>
    /// Writes <paramref name="source"/> (at most two pages) at linear <paramref name="la"/> as the
    /// guest would at its current privilege level. Every page is translated before any byte is
    /// written, so a fault leaves memory untouched; <paramref name="faultAddress"/> is the linear
    /// address that failed.
    /// </summary>
    public bool TryWriteLinear(ulong la, ReadOnlySpan<byte> source, out ulong faultAddress)
    {
        if (source.Length > 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(source), source.Length, "at most 4096 bytes per machine write");
        }

        faultAddress = 0;
        if (source.IsEmpty)
        {
            return true;
        }

        var first = (int)Math.Min((ulong)source.Length, 4096 - (la & 0xFFF));
        if (_mmu.Translate(la, Access.Write, out var pa, out _) != TranslateStatus.Ok)
        {
            faultAddress = la;
            return false;
        }

        ulong pa2 = 0;
        if (first < source.Length && _mmu.Translate(la + (ulong)first, Access.Write, out pa2, out _) != TranslateStatus.Ok)
        {
            faultAddress = la + (ulong)first;
            return false;
        }

        if (!_bus.TryWrite(pa, source[..first]) || (first < source.Length && !_bus.TryWrite(pa2, source[first..])))
        {
            faultAddress = la;
            return false;
        }

        NoteWrite(pa);
        if (first < source.Length)
        {
            NoteWrite(pa2);
        }

        _endBlock = false; // no block is running: nothing to end
        return true;
    }

    /// <summary>
    /// Runs the one instruction at rip as if the read-only page holding linear <paramref name="la"/>
    /// were writable, with every memory access of that instruction going to <paramref name="bus"/>
    /// (which sees the physical addresses the page tables give) instead of the interpreter's own
    /// bus: how a machine emulates a store the guest's page tables forbid (Xen's writable page
    /// tables). The page stays read-only in the TLB and gets no dirty bit. A store that
    /// <paramref name="bus"/> refuses ends the instruction as a bus error with nothing of it
    /// committed but what an instruction with several stores wrote before it.
    /// </summary>
    public CpuExit StepWritingThrough(ulong la, IGuestMemoryBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        var own = _bus;
        _bus = bus;
        _mmu.WritableOverride = (la >> 12) + 1;
        _mmu.DirectEnabled = false; // every access goes to the substitute bus
        try
        {
            return Run(1);
        }
        finally
        {
            _mmu.DirectEnabled = true;
            _mmu.WritableOverride = 0;
            _bus = own;
        }
    }

    /// <summary>Drops every decoded block (the machine wrote guest code it cannot name, or starts afresh).</summary>
    public void InvalidateAllCode() => _code.Clear();

    /// <summary>
    /// The guest ran a serializing instruction (<c>iretq</c>, the machine's handling of <c>int3</c>):
    /// code another vCPU or the host wrote without announcing it is fetched afresh. Unlike
    /// <see cref="InvalidateAllCode"/> the decoded blocks whose bytes did not change are kept (each
    /// is compared with memory once before it next runs).
    /// </summary>
    public void SerializeCodeFetch() => _code.Serialize();
}
