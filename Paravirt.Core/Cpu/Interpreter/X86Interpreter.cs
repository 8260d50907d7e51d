using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Iced.Intel;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>
/// A portable x86-64 interpreter for one vCPU: Iced decodes, this class executes on a
/// <see cref="CpuState"/>, and memory is reached only through an <see cref="IGuestMemoryBus"/>
/// (through the paging MMU when CR0.PG is set). Nothing else of the machine is visible, so it runs
/// on a flat byte array as well as on a domain's frames. See docs/interpreter.md.
/// </summary>
/// <remarks>
/// <see cref="Run"/> executes up to a given number of instructions and returns why it stopped, so
/// many vCPUs can share few threads and the host can pause any of them between instructions.
/// Given the same state, memory, CPUID and clock answers, a run is deterministic. One interpreter
/// is driven by one thread at a time; several interpreters may share a bus.
/// </remarks>
public sealed partial class X86Interpreter
{
    private const int MaxRepIterations = 4096;

    private readonly CpuState _cpu;
    // Not readonly: StepWritingThrough puts a machine's bus in front of it for one instruction.
    private IGuestMemoryBus _bus;
    private readonly IInterpreterPlatform _platform;
    private readonly Mmu _mmu;
    private readonly CodeCache _code = new();
    private readonly GuestException _exception = new();
    private readonly HashSet<Mnemonic> _logged = [];

    // Set by an instruction that must end the block: it wrote code, changed paging, or exits.
    private bool _endBlock;
    private ExitReason _pendingExit = ExitReason.SliceDone;

    public X86Interpreter(CpuState state, IGuestMemoryBus bus, IInterpreterPlatform platform)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(platform);
        _cpu = state;
        _bus = bus;
        _platform = platform;
        _mmu = new Mmu(bus, state);
    }

    /// <summary>
    /// A range of linear addresses the machine serves itself, bypassing the page tables (Xen's
    /// read-only machine-to-phys table for PV guests); null for none. The TLB is flushed.
    /// </summary>
    public LinearWindow? Window
    {
        get => _mmu.Window;
        set
        {
            _mmu.Window = value;
            _mmu.FlushAll();
        }
    }

    public CpuState State => _cpu;

    /// <summary>Blocks decoded so far (a measure of the decode cache's hit rate).</summary>
    public long BlocksDecoded => _code.Decodes;

    /// <summary>
    /// Whether the commonest instruction shapes run through the pre-digested fast path (the
    /// default); off, every instruction takes the general handlers. Changing it drops decoded code.
    /// </summary>
    internal bool FastPath
    {
        get => _code.FastPath;
        set
        {
            _code.FastPath = value;
            _code.Clear();
        }
    }

    /// <summary>Page walks so far (a measure of the TLB's hit rate).</summary>
    public long PageWalks => _mmu.Walks;

    /// <summary>Someone other than this vCPU wrote guest-physical memory that may hold code: drop what was decoded from it.</summary>
    public void InvalidateCode(ulong pa, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        var first = pa >> 12;
        var last = (pa + Math.Min(length, ~pa) - 1) >> 12;
        if (last - first >= 4096)
        {
            _code.Clear(); // a large range: dropping everything is cheaper than visiting each page
            return;
        }

        for (var pfn = first; pfn <= last; pfn++)
        {
            _code.InvalidatePage(pfn);
        }
    }

    /// <summary>Drops the whole TLB, global entries too (the machine changed page tables behind the guest's back).</summary>
    public void FlushTlb() => _mmu.FlushAll();

    /// <summary>
    /// Executes at most <paramref name="maxInstructions"/> instructions (a <c>rep</c> string
    /// instruction counts once per chunk of up to 4,096 iterations) and returns why it stopped.
    /// </summary>
    public CpuExit Run(long maxInstructions)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxInstructions);
        NoteModeChange();
        long done = 0;
        DecodedBlock? block = null;
        DecodedBlock? previous = null;
        var index = 0;
        try
        {
            while (done < maxInstructions)
            {
                block = null; // a fault while fetching belongs to the fetched rip
                block = previous is null ? Fetch(_cpu.Rip) : FetchChained(previous, _cpu.Rip);
                previous = null;
                var instructions = block.Instructions;
                var fast = block.Fast;
                var count = (int)Math.Min(fast.Length, maxInstructions - done);
                for (index = 0; index < count; index++)
                {
                    ref readonly var f = ref fast[index];
                    var next = f.Next;
                    _cpu.Rip = next;
                    if (f.Kind != FastKind.None)
                    {
                        ExecuteFast(in f);
                    }
                    else
                    {
                        MaterializeFlags();
                        Execute(in instructions[index]);
                    }

                    if (_endBlock)
                    {
                        done += index + 1;
                        _endBlock = false;
                        if (_pendingExit != ExitReason.SliceDone)
                        {
                            MaterializeFlags();
                            var reason = _pendingExit;
                            _pendingExit = ExitReason.SliceDone;
                            return new CpuExit(reason, done);
                        }

                        goto NextBlock;
                    }

                    if (_cpu.Rip != next)
                    {
                        index++;
                        break;
                    }
                }

                done += index;
                previous = block;
            NextBlock:;
            }

            MaterializeFlags();
            return new CpuExit(ExitReason.SliceDone, done);
        }
        catch (GuestException e)
        {
            MaterializeFlags();
            _endBlock = false;
            _pendingExit = ExitReason.SliceDone;
            if (block is not null)
            {
                done += index;
            }

            if (e.IsTrap)
            {
                done++;
            }
            else if (block is not null)
            {
                _cpu.Rip = block.Instructions[index].IP;
            }

            return e.IsBusError
                ? new CpuExit(ExitReason.BusError, done, Address: e.Address)
                : new CpuExit(ExitReason.Exception, done, e.Vector, e.ErrorCode, e.Address, e.IsSoftware);
        }
        catch (Exception e) when (e is IndexOutOfRangeException or InvalidOperationException or ArgumentException or ArithmeticException)
        {
            // A safety net for an operand form a handler did not expect: the guest gets #UD and the
            // gap is logged, the host goes on. (Hostile-code tests run random bytes to find these.)
            MaterializeFlags();
            _endBlock = false;
            _pendingExit = ExitReason.SliceDone;
            if (block is not null)
            {
                done += index;
                _cpu.Rip = block.Instructions[index].IP;
            }

            _platform.LogUnimplemented($"interpreter error at 0x{_cpu.Rip:x}: {e.GetType().Name}: {e.Message}");
            return new CpuExit(ExitReason.Exception, done, Vectors.UD);
        }
    }

    // What the links between blocks were made under: they stay valid while no translation was
    // flushed, no decoded code dropped and no paging register or privilege level changed.
    private long _modeChanges;
    private (ulong Cr0, ulong Cr3, ulong Cr4, ulong Efer, int Cpl) _mode;

    private long LinkGeneration => _mmu.Flushes + _code.Invalidations + _modeChanges;

    /// <summary>The machine may have changed paging registers or the privilege level between runs: links made before do not count.</summary>
    private void NoteModeChange()
    {
        var mode = (_cpu.Cr0, _cpu.Cr3, _cpu.Cr4, _cpu.Efer, _cpu.Cpl);
        if (mode != _mode)
        {
            _mode = mode;
            _modeChanges++;
        }
    }

    /// <summary>
    /// The block at <paramref name="rip"/> after <paramref name="previous"/> ran to its end: taken
    /// from previous's links (its last two successors) when nothing they depend on changed since
    /// they were made, else fetched and linked. A hot loop then goes from block to block without
    /// a TLB lookup or a code-cache probe.
    /// </summary>
    private DecodedBlock FetchChained(DecodedBlock previous, ulong rip)
    {
        var generation = LinkGeneration;
        if (previous.LinkGeneration == generation)
        {
            if (previous.LinkRip0 == rip && previous.Link0 is { } first)
            {
                return first;
            }

            if (previous.LinkRip1 == rip && previous.Link1 is { } second)
            {
                return second;
            }
        }
        else
        {
            previous.Link0 = previous.Link1 = null;
            previous.LinkGeneration = generation;
        }

        var block = Fetch(rip);
        if (previous.LinkGeneration == LinkGeneration)
        {
            // The older link makes way: a block has at most two successors that matter (taken, not taken).
            previous.Link1 = previous.Link0;
            previous.LinkRip1 = previous.LinkRip0;
            previous.Link0 = block;
            previous.LinkRip0 = rip;
        }

        return block;
    }

    private DecodedBlock Fetch(ulong rip)
    {
        var pa = Translate(rip, Access.Execute);
        var block = _code.Find(pa, rip);
        if (block is not null && (block.Pa2 == DecodedBlock.NoSecondPage || block.Pa2 == Translate((rip | 0xFFF) + 1, Access.Execute))
            && (block.Verified == _code.Serializations || StillTheSame(block)))
        {
            return block;
        }

        var length = (int)(4096 - (pa & 0xFFF));
        if (!_bus.TryRead(pa, _code.Buffer[..length]))
        {
            throw BusError(pa);
        }

        block = _code.Decode(pa, rip, length);
        if (block is not null)
        {
            return block;
        }

        var pa2 = Translate((rip | 0xFFF) + 1, Access.Execute);
        if (!_bus.TryRead(pa2, _code.Buffer.Slice(length, 15)))
        {
            throw BusError(pa2);
        }

        return _code.DecodeCrossing(pa, pa2, rip, length + 15);
    }

    /// <summary>After a serializing instruction: whether memory still holds the bytes <paramref name="block"/> was decoded from.</summary>
    private bool StillTheSame(DecodedBlock block)
    {
        var bytes = block.Bytes;
        var current = _code.Buffer[..bytes.Length];
        var first = (int)Math.Min((ulong)bytes.Length, 4096 - (block.Pa & 0xFFF));
        if (!_bus.TryRead(block.Pa, current[..first])
            || (first < bytes.Length && !_bus.TryRead(block.Pa2, current[first..]))
            || !current.SequenceEqual(bytes))
        {
            return false;
        }

        block.Verified = _code.Serializations;
        return true;
    }

    // ---- faults -------------------------------------------------------------------------------

    /// <summary>An exception raised inside an instruction; one instance per interpreter, so raising it does not allocate.</summary>
    private sealed class GuestException : Exception
    {
        public int Vector;
        public uint? ErrorCode;
        public ulong Address;
        public bool IsBusError;
        public bool IsTrap;
        public bool IsSoftware;
    }

    private GuestException Raise(int vector, uint? errorCode = null, ulong address = 0, bool trap = false)
    {
        _exception.Vector = vector;
        _exception.ErrorCode = errorCode;
        _exception.Address = address;
        _exception.IsBusError = false;
        _exception.IsTrap = trap;
        _exception.IsSoftware = false;
        return _exception;
    }

    private GuestException BusError(ulong pa)
    {
        var e = Raise(0, null, pa);
        e.IsBusError = true;
        return e;
    }

    private GuestException GeneralProtection() => Raise(Vectors.GP, 0);

    private GuestException InvalidOpcode() => Raise(Vectors.UD);

    private GuestException Unimplemented(in Instruction ins)
    {
        if (_logged.Add(ins.Mnemonic))
        {
            _platform.LogUnimplemented(ins.Mnemonic.ToString().ToLowerInvariant());
        }

        return InvalidOpcode();
    }

    // ---- registers ----------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Reg(Register r)
    {
        var v = (int)r;
        if (v >= (int)Register.RAX)
        {
            return _cpu.Gpr[v - (int)Register.RAX];
        }

        if (v >= (int)Register.EAX)
        {
            return (uint)_cpu.Gpr[v - (int)Register.EAX];
        }

        if (v >= (int)Register.AX)
        {
            return (ushort)_cpu.Gpr[v - (int)Register.AX];
        }

        var i = v - (int)Register.AL;
        return i < 4 ? (byte)_cpu.Gpr[i] : i < 8 ? (byte)(_cpu.Gpr[i - 4] >> 8) : (byte)_cpu.Gpr[i - 4];
    }

    /// <summary>Writes a general register with x86-64's rules: 32-bit writes zero the upper half, 8 and 16-bit writes merge.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetReg(Register r, ulong value)
    {
        var v = (int)r;
        if (v >= (int)Register.RAX)
        {
            _cpu.Gpr[v - (int)Register.RAX] = value;
        }
        else if (v >= (int)Register.EAX)
        {
            _cpu.Gpr[v - (int)Register.EAX] = (uint)value;
        }
        else if (v >= (int)Register.AX)
        {
            ref var g = ref _cpu.Gpr[v - (int)Register.AX];
            g = (g & ~0xFFFFUL) | (ushort)value;
        }
        else
        {
            var i = v - (int)Register.AL;
            if (i < 4)
            {
                ref var g = ref _cpu.Gpr[i];
                g = (g & ~0xFFUL) | (byte)value;
            }
            else if (i < 8)
            {
                ref var g = ref _cpu.Gpr[i - 4];
                g = (g & ~0xFF00UL) | ((value & 0xFF) << 8);
            }
            else
            {
                ref var g = ref _cpu.Gpr[i - 4];
                g = (g & ~0xFFUL) | (byte)value;
            }
        }
    }

    /// <summary>Writes a register of <paramref name="size"/> bytes numbered as x86 encodes it (no AH..BH).</summary>
    private void SetGpr(int index, int size, ulong value)
    {
        ref var g = ref _cpu.Gpr[index];
        g = size switch
        {
            8 => value,
            4 => (uint)value,
            2 => (g & ~0xFFFFUL) | (ushort)value,
            _ => (g & ~0xFFUL) | (byte)value,
        };
    }

    private static int RegSize(Register r)
    {
        var v = (int)r;
        return v >= (int)Register.RAX ? 8 : v >= (int)Register.EAX ? 4 : v >= (int)Register.AX ? 2 : 1;
    }

    private static bool IsGpr(Register r) => r >= Register.AL && r <= Register.R15;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Mask(int size) => size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong SignBit(int size) => 1UL << ((size * 8) - 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong SignExtend(ulong value, int size) => size switch
    {
        1 => (ulong)(sbyte)value,
        2 => (ulong)(short)value,
        4 => (ulong)(int)value,
        _ => value,
    };

    /// <summary>The size in bytes of operand <paramref name="op"/> (a register or memory operand).</summary>
    private static int OperandSize(in Instruction ins, int op) =>
        ins.GetOpKind(op) == OpKind.Register ? RegSize(ins.GetOpRegister(op)) : ins.MemorySize.GetSize();

    // ---- memory -------------------------------------------------------------------------------

    /// <summary>The linear address of the memory operand, segment base included (FS and GS only, as in 64-bit mode).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Ea(in Instruction ins) => EffectiveAddress(in ins) + SegmentBase(ins.MemorySegment);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong SegmentBase(Register segment) => segment == Register.FS ? _cpu.FsBase : segment == Register.GS ? _cpu.GsBase : 0;

    /// <summary>The memory operand's offset without segment base (what <c>lea</c> computes).</summary>
    private ulong EffectiveAddress(in Instruction ins)
    {
        var b = ins.MemoryBase;
        if (b == Register.RIP)
        {
            return ins.MemoryDisplacement64;
        }

        if (b == Register.EIP)
        {
            return (uint)ins.MemoryDisplacement64;
        }

        var ea = ins.MemoryDisplacement64;
        var addr32 = false;
        if (b != Register.None)
        {
            ea += Reg(b);
            addr32 = b < Register.RAX;
        }

        var ix = ins.MemoryIndex;
        if (ix != Register.None)
        {
            ea += Reg(ix) * (ulong)ins.MemoryIndexScale;
            addr32 |= ix < Register.RAX;
        }

        return addr32 ? (uint)ea : ea;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Translate(ulong la, Access access)
    {
        var status = _mmu.Translate(la, access, out var pa, out var errorCode);
        if (status != TranslateStatus.Ok)
        {
            throw TranslationFault(status, la, pa, errorCode);
        }

        return pa;
    }

    private GuestException TranslationFault(TranslateStatus status, ulong la, ulong pa, uint errorCode) => status switch
    {
        TranslateStatus.PageFault => Raise(Vectors.PF, errorCode, la),
        TranslateStatus.BusError => BusError(pa),
        _ => GeneralProtection(),
    };

    /// <summary>A translated operand: its physical address, split in two when it crosses a page.</summary>
    private struct Loc
    {
        public ulong Pa;
        public ulong Pa2;
        public int First; // bytes on the first page
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Loc TranslateLoc(ulong la, int size, Access access)
    {
        var first = (int)(4096 - (la & 0xFFF));
        if (first >= size)
        {
            return new Loc { Pa = Translate(la, access), First = size };
        }

        // Both pages are translated before any byte moves, so a fault on the second leaves nothing half-written.
        var pa = Translate(la, access);
        return new Loc { Pa = pa, Pa2 = Translate(la + (ulong)first, access), First = first };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe ulong Load(ulong la, int size)
    {
        if ((la & 0xFFF) <= 4096UL - (ulong)size)
        {
            var p = _mmu.TryDirect(la, Access.Read, out _);
            if (p != null)
            {
                return GuestWords.Read(p, size);
            }

            var pa = Translate(la, Access.Read);
            if (!_bus.TryRead(pa, size, out var value))
            {
                throw BusError(pa);
            }

            return value;
        }

        return ReadLoc(TranslateLoc(la, size, Access.Read), size);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void Store(ulong la, int size, ulong value)
    {
        if ((la & 0xFFF) <= 4096UL - (ulong)size)
        {
            var p = _mmu.TryDirect(la, Access.Write, out var direct);
            if (p != null)
            {
                GuestWords.Write(p, size, value);
                NoteWrite(direct);
                return;
            }

            WritePhys(Translate(la, Access.Write), size, value);
            return;
        }

        WriteLoc(TranslateLoc(la, size, Access.Write), size, value);
    }

    private ulong ReadLoc(in Loc loc, int size)
    {
        if (loc.First == size)
        {
            if (!_bus.TryRead(loc.Pa, size, out var value))
            {
                throw BusError(loc.Pa);
            }

            return value;
        }

        Span<byte> bytes = stackalloc byte[8];
        ReadBytes(loc, bytes[..size]);
        return BitConverter.ToUInt64(bytes);
    }

    private void WriteLoc(in Loc loc, int size, ulong value)
    {
        if (loc.First == size)
        {
            WritePhys(loc.Pa, size, value);
            return;
        }

        Span<byte> bytes = stackalloc byte[8];
        BitConverter.TryWriteBytes(bytes, value);
        WriteBytes(loc, bytes[..size]);
    }

    private void ReadBytes(in Loc loc, Span<byte> destination)
    {
        var first = Math.Min(loc.First, destination.Length);
        if (!_bus.TryRead(loc.Pa, destination[..first]))
        {
            throw BusError(loc.Pa);
        }

        if (first < destination.Length && !_bus.TryRead(loc.Pa2, destination[first..]))
        {
            throw BusError(loc.Pa2);
        }
    }

    private void WriteBytes(in Loc loc, ReadOnlySpan<byte> source)
    {
        var first = Math.Min(loc.First, source.Length);
        if (!_bus.TryWrite(loc.Pa, source[..first]))
        {
            throw BusError(loc.Pa);
        }

        NoteWrite(loc.Pa);
        if (first < source.Length)
        {
            if (!_bus.TryWrite(loc.Pa2, source[first..]))
            {
                throw BusError(loc.Pa2);
            }

            NoteWrite(loc.Pa2);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void WritePhys(ulong pa, int size, ulong value)
    {
        if (!_bus.TryWrite(pa, size, value))
        {
            throw BusError(pa);
        }

        NoteWrite(pa);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteWrite(ulong pa)
    {
        if (_code.IsCodePage(pa >> 12))
        {
            // Self-modifying code: the page's blocks go, and so does the rest of this block.
            _code.InvalidatePage(pa >> 12);
            _endBlock = true;
        }
    }

    /// <summary>An atomic compare-exchange on a translated operand; returns the value found. Split (page-crossing) operands are not atomic.</summary>
    private ulong CompareExchange(in Loc loc, int size, ulong value, ulong comparand)
    {
        if (loc.First == size)
        {
            if (!_bus.TryCompareExchange(loc.Pa, size, value, comparand, out var found))
            {
                throw BusError(loc.Pa);
            }

            if (found == comparand)
            {
                NoteWrite(loc.Pa);
            }

            return found;
        }

        var current = ReadLoc(loc, size);
        if (current == comparand)
        {
            WriteLoc(loc, size, value);
        }

        return current;
    }

    // ---- stack --------------------------------------------------------------------------------

    private void Push(ulong value, int size)
    {
        var rsp = _cpu.Gpr[Gpr.Rsp] - (ulong)size;
        Store(rsp, size, value);
        _cpu.Gpr[Gpr.Rsp] = rsp;
    }

    private ulong Pop(int size)
    {
        var rsp = _cpu.Gpr[Gpr.Rsp];
        var value = Load(rsp, size);
        _cpu.Gpr[Gpr.Rsp] = rsp + (ulong)size;
        return value;
    }

    [DoesNotReturn]
    private static void Unreachable() => throw new InvalidOperationException("unreachable");
}
