using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>
/// <see cref="X86Interpreter.StepWritingThrough"/>: the machine runs one instruction as if a
/// read-only page were writable, its accesses going to a bus the machine gives (how a PV machine
/// emulates a store to a page table), while the page stays read-only for everything else.
/// </summary>
public sealed class StepWritingThroughTests
{
    private const ulong P = 1, RW = 2, US = 4, A = 0x20, D = 0x40;
    private const ulong Page = 0x7F00_0000_0000, Other = Page + 0x1000;
    private const ulong Frame = 0x5_0000, OtherFrame = 0x6_0000;

    /// <summary>Passes everything to the machine's memory and records stores; refuses them when told.</summary>
    private sealed class RecordingBus(IGuestMemoryBus inner) : IGuestMemoryBus
    {
        public List<(ulong Pa, int Size, ulong Value)> Stores { get; } = [];

        public bool Refuse { get; init; }

        public bool TryRead(ulong pa, int size, out ulong value) => inner.TryRead(pa, size, out value);

        public bool TryRead(ulong pa, Span<byte> destination) => inner.TryRead(pa, destination);

        public bool TryWrite(ulong pa, int size, ulong value)
        {
            Stores.Add((pa, size, value));
            return !Refuse && inner.TryWrite(pa, size, value);
        }

        public bool TryWrite(ulong pa, ReadOnlySpan<byte> source)
        {
            Stores.Add((pa, source.Length, 0));
            return !Refuse && inner.TryWrite(pa, source);
        }

        public bool TryCompareExchange(ulong pa, int size, ulong value, ulong comparand, out ulong original)
        {
            Stores.Add((pa, size, value));
            original = 0;
            return !Refuse && inner.TryCompareExchange(pa, size, value, comparand, out original);
        }

        public bool TryCompareExchange16(ulong pa, UInt128 value, UInt128 comparand, out UInt128 original)
        {
            original = 0;
            return false;
        }
    }

    /// <summary>Page and Other mapped read-only over Frame and OtherFrame; paging with CR0.WP; the code stores 0x55 to Page+8, then 0x66 to Page+16.</summary>
    private static (InterpreterMachine M, ulong Leaf) ReadOnlyPage(Action<Iced.Intel.Assembler>? code = null)
    {
        var m = new InterpreterMachine();
        ulong next = 0xC_0000;
        ulong Table()
        {
            var t = next;
            next += 0x1000;
            m.Memory.Bytes.Slice((int)t, 4096).Clear();
            return t;
        }

        var root = Table();
        var l3 = Table();
        var l2 = Table();
        var l1 = Table();
        var low = Table();
        m.WriteU64(root + (((Page >> 39) & 511) * 8), l3 | P | RW | US);
        m.WriteU64(l3 + (((Page >> 30) & 511) * 8), l2 | P | RW | US);
        m.WriteU64(l2 + (((Page >> 21) & 511) * 8), l1 | P | RW | US);
        m.WriteU64(l1 + (((Page >> 12) & 511) * 8), Frame | P | US);
        m.WriteU64(l1 + (((Other >> 12) & 511) * 8), OtherFrame | P | US);

        // The low 2 MiB identity-mapped for the code and stack.
        var lowL3 = Table();
        var lowL2 = Table();
        m.WriteU64(root, lowL3 | P | RW | US);
        m.WriteU64(lowL3, lowL2 | P | RW | US);
        m.WriteU64(lowL2, low | P | RW | US);
        for (ulong i = 0; i < 256; i++)
        {
            m.WriteU64(low + (i * 8), (i << 12) | P | RW | US);
        }

        m.Cpu.Cr3 = root;
        m.Cpu.Cr0 |= ControlBits.Cr0PG | ControlBits.Cr0WP;
        m.Load(code ?? (a =>
        {
            a.mov(rbx, Page);
            a.mov(__qword_ptr[rbx + 8], 0x55);
            a.mov(__qword_ptr[rbx + 16], 0x66);
        }));
        m.Restart();
        return (m, l1 + (((Page >> 12) & 511) * 8));
    }

    [Fact]
    public void One_Store_Goes_Through_The_Given_Bus_And_The_Page_Stays_Read_Only()
    {
        var (m, leaf) = ReadOnlyPage();
        var fault = m.Run();
        (fault.Vector, fault.ErrorCode, fault.Address).Should().Be((Vectors.PF, PageFaultErrorCode.Present | PageFaultErrorCode.Write, Page + 8));
        var bus = new RecordingBus(m.Memory);

        var exit = m.Interpreter.StepWritingThrough(Page + 8, bus);

        (exit.Reason, exit.Instructions).Should().Be((ExitReason.SliceDone, 1L));
        bus.Stores.Should().Equal((Frame + 8, 8, 0x55UL));
        m.ReadU64(Frame + 8).Should().Be(0x55);
        (m.ReadU64(leaf) & (A | D)).Should().Be(A, "the walk is a read's: the guest's mapping gets no dirty bit");

        var next = m.Run();
        (next.Vector, next.ErrorCode, next.Address).Should().Be(
            (Vectors.PF, PageFaultErrorCode.Present | PageFaultErrorCode.Write, Page + 16),
            "the next store to the page faults again: the TLB kept it read-only");
        m.ReadU64(Frame + 16).Should().Be(0);
    }

    [Fact]
    public void A_Refused_Store_Is_A_Bus_Error_At_The_Instruction()
    {
        var (m, _) = ReadOnlyPage();
        m.Run();
        var rip = m.Cpu.Rip;
        var bus = new RecordingBus(m.Memory) { Refuse = true };

        var exit = m.Interpreter.StepWritingThrough(Page + 8, bus);

        exit.Reason.Should().Be(ExitReason.BusError);
        bus.Stores.Should().ContainSingle();
        m.Cpu.Rip.Should().Be(rip, "rip stays at the store");
        m.ReadU64(Frame + 8).Should().Be(0);
    }

    [Fact]
    public void Only_The_Named_Page_Becomes_Writable()
    {
        var (m, _) = ReadOnlyPage(a =>
        {
            a.mov(rbx, Other);
            a.mov(__qword_ptr[rbx], 0x77);
        });
        m.Run();
        var bus = new RecordingBus(m.Memory);

        var exit = m.Interpreter.StepWritingThrough(Page, bus);

        (exit.Vector, exit.ErrorCode, exit.Address).Should().Be((Vectors.PF, PageFaultErrorCode.Present | PageFaultErrorCode.Write, Other));
        bus.Stores.Should().BeEmpty();
        m.ReadU64(OtherFrame).Should().Be(0);
    }
}
