namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// Linear addresses <c>[Start, End)</c> that the machine serves itself instead of the guest's page
/// tables, as Xen maps its read-only machine-to-phys table into every 64-bit PV guest. Reads of
/// <c>[Start, Start + ReadableBytes)</c> go to the bus at <c>PhysicalBase + (la - Start)</c>;
/// writes there, fetches, and any access to the rest of the window are page faults.
/// </summary>
/// <param name="Start">First linear address (page-aligned).</param>
/// <param name="End">One past the last linear address of the window.</param>
/// <param name="ReadableBytes">How much of the window is readable (a multiple of 4 KiB).</param>
/// <param name="PhysicalBase">Where the bus serves the readable part.</param>
public readonly record struct LinearWindow(ulong Start, ulong End, ulong ReadableBytes, ulong PhysicalBase)
{
    public bool Contains(ulong la) => la >= Start && la < End;
}
