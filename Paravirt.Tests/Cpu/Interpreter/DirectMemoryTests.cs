using System.Buffers.Binary;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>
/// Loads and stores through the TLB's host pointers (a direct bus) are the same loads and stores,
/// and never outlive the page being the guest's: a frame freed under a stale TLB entry and handed
/// to another owner is not reached through the pointer cached for it.
/// </summary>
public sealed class DirectMemoryTests : IDisposable
{
    private const ushort Guest = 1;
    private const ushort Other = 2;
    private const ulong P = 1, RW = 2, US = 4;
    private const ulong CodeVa = 0x40_0000, DataVa = 0x60_0000;

    private readonly MachineMemory _memory = new(64);
    private readonly FrameTable _frames;
    private readonly ulong _data;
    private readonly CpuState _cpu = new() { Cpl = 3 };
    private readonly X86Interpreter _interpreter;

    public DirectMemoryTests()
    {
        _frames = new FrameTable(_memory);
        ulong Frame(ushort owner) => _frames.TryAllocate(owner, out var mfn) ? mfn : throw new InvalidOperationException("out of frames");
        ulong l4 = Frame(Guest), l3 = Frame(Guest), l2 = Frame(Guest), l1 = Frame(Guest), code = Frame(Guest);
        _data = Frame(Guest);
        Write(l4, 0, (l3 << 12) | P | RW | US);
        Write(l3, 0, (l2 << 12) | P | RW | US);
        Write(l2, 2, (l1 << 12) | P | RW | US); // 0x40_0000 .. 0x60_0000
        Write(l2, 3, (l1 << 12) | P | RW | US); // 0x60_0000 .. 0x80_0000, the same L1
        Write(l1, 0, (code << 12) | P | US);
        Write(l1, 0x1FF, (_data << 12) | P | RW | US);
        var bytes = InterpreterMachine.Assemble(a =>
        {
            a.mov(rax, __qword_ptr[rbx]);
            a.add(rax, 1);
            a.mov(__qword_ptr[rbx + 8], rax);
        }, CodeVa, halt: false);
        bytes.CopyTo(_memory.Frame(code));
        _cpu.Cr0 |= ControlBits.Cr0PG;
        _cpu.Cr3 = l4 << 12;
        _interpreter = new X86Interpreter(_cpu, new DomainMachineBus(_frames, Guest), new TestPlatform());
    }

    public void Dispose() => _memory.Dispose();

    private void Write(ulong mfn, int index, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(_memory.Frame(mfn)[(index * 8)..], value);

    private ulong Read(ulong mfn, int index) => BinaryPrimitives.ReadUInt64LittleEndian(_memory.Frame(mfn)[(index * 8)..]);

    private CpuExit RunOnce()
    {
        _cpu.Rip = CodeVa;
        _cpu.Gpr[Gpr.Rbx] = DataVa + 0x1F_F000;
        return _interpreter.Run(3);
    }

    [Fact]
    public void Loads_And_Stores_Through_Host_Pointers_Reach_The_Guests_Frame()
    {
        Write(_data, 0, 41);
        RunOnce().Should().Be(new CpuExit(ExitReason.SliceDone, 3));
        Read(_data, 1).Should().Be(42);

        // Again, now from the TLB: the memory changed behind the interpreter's back is what it reads.
        Write(_data, 0, 99);
        RunOnce().Should().Be(new CpuExit(ExitReason.SliceDone, 3));
        Read(_data, 1).Should().Be(100);
    }

    [Fact]
    public void A_Frame_Freed_Under_A_Stale_Tlb_Entry_And_Given_To_Another_Owner_Is_Not_Reached()
    {
        RunOnce().Reason.Should().Be(ExitReason.SliceDone, "the entry and its host pointer are cached");

        // The guest gives the frame up without a TLB flush (the hypervisor's reference goes last),
        // and the frame, freed, is handed to someone else who stores a secret in it.
        _frames.Release(_data);
        _frames.OwnerOf(_data).Should().Be(FrameTable.NoOwner);
        _frames.TryAllocate(Other, out var reused).Should().BeTrue();
        reused.Should().Be(_data, "the free list hands out the frame just freed (the case to test)");
        Write(reused, 0, 0x5EC2E7);

        var exit = RunOnce();
        exit.Reason.Should().Be(ExitReason.BusError, "the stale translation leads to a frame the guest no longer owns");
        _cpu.Gpr[Gpr.Rax].Should().NotBe(0x5EC2E7UL);
        Read(reused, 1).Should().Be(0, "nothing was written into the other owner's frame");
    }
}
