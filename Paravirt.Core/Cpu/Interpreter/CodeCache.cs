using Iced.Intel;

namespace Paravirt.Core.Cpu.Interpreter;

/// <summary>A run of decoded instructions that starts at one linear address and ends at a branch, a page end or 64 instructions.</summary>
internal sealed class DecodedBlock
{
    public const ulong NoSecondPage = ulong.MaxValue;

    public required ulong Pa;
    public required ulong Rip;

    /// <summary>For an instruction that crosses a page: the physical page its tail came from, else <see cref="NoSecondPage"/>.</summary>
    public ulong Pa2 = NoSecondPage;

    public required Instruction[] Instructions;
    public required int Count;

    /// <summary>The bytes the block was decoded from (both pages' for a crossing instruction), to tell after a serializing instruction whether they changed.</summary>
    public required byte[] Bytes;

    /// <summary>The cache's <see cref="CodeCache.Serializations"/> when the bytes were last known to be these.</summary>
    public long Verified;

    /// <summary>The fast-path form of each instruction (<see cref="FastKind.None"/> where there is none).</summary>
    public FastOp[] Fast = [];

    // The blocks that followed this one last (see X86Interpreter.FetchChained), valid while the
    // interpreter's link generation is the one recorded.
    public DecodedBlock? Link0;
    public DecodedBlock? Link1;
    public ulong LinkRip0;
    public ulong LinkRip1;
    public long LinkGeneration = -1;
}

/// <summary>
/// Decoded blocks in a direct-mapped table keyed by the physical address of their first byte
/// (and checked against the linear rip, because Iced resolves rip-relative operands and branch
/// targets at decode time), plus a bitmap of the physical pages blocks were decoded from. A write
/// to such a page drops every block decoded from it and clears its bit; the next fetch decodes
/// afresh. Each interpreter has its own cache: a write by another vCPU or by the host to code this
/// vCPU has decoded must be announced with <see cref="X86Interpreter.InvalidateCode"/>.
/// </summary>
internal sealed class CodeCache
{
    // Four-way set associative: a block competes for its set's four entries only with blocks whose
    // addresses hash alike, so a hot working set of kernel and user code (Linux's network path runs
    // tens of thousands of blocks) is not evicted by chance collisions as in a direct-mapped table;
    // a full set replaces its entries in turn.
    private const int Ways = 4;
    private const int Sets = 16384;
    private const int Slots = Sets * Ways;
    private const int MaxInstructions = 64;

    private readonly DecodedBlock?[] _slots = new DecodedBlock?[Slots];
    private readonly byte[] _victim = new byte[Sets];
    private readonly byte[] _bytes = new byte[4096 + 16];
    private readonly BufferReader _reader;
    private readonly Decoder _decoder;
    private readonly Instruction[] _scratch = new Instruction[MaxInstructions];
    // Pages below 64 GiB have a bit; pages above (a sparse machine address space) a set entry, so a
    // high physical address cannot make the bitmap huge.
    private const ulong BitmapPageLimit = 1UL << 24;
    private readonly HashSet<ulong> _farCodePages = [];
    private ulong[] _codePages = new ulong[64];

    public CodeCache()
    {
        _reader = new BufferReader(_bytes);
        _decoder = Decoder.Create(64, _reader, 0, DecoderOptions.None);
    }

    /// <summary>Blocks decoded since creation.</summary>
    public long Decodes { get; private set; }

    /// <summary>
    /// Whether blocks get their fast-path forms (the default). Off, every instruction runs through
    /// the general handlers: how tests check the two paths agree.
    /// </summary>
    public bool FastPath { get; set; } = true;

    /// <summary>
    /// Serializing instructions seen (see <see cref="Serialize"/>): a block decoded or verified
    /// under an earlier count is compared with memory before it runs again.
    /// </summary>
    public long Serializations { get; private set; }

    /// <summary>How many times decoded code was dropped (a page's blocks, or all): links between blocks made before are stale.</summary>
    public long Invalidations { get; private set; }

    private static int Set(ulong pa) => (int)((pa ^ (pa >> 12) ^ (pa >> 26)) & (Sets - 1));

    public DecodedBlock? Find(ulong pa, ulong rip)
    {
        var first = Set(pa) * Ways;
        for (var i = first; i < first + Ways; i++)
        {
            var b = _slots[i];
            if (b is not null && b.Pa == pa && b.Rip == rip)
            {
                return b;
            }
        }

        return null;
    }

    public bool IsCodePage(ulong pfn) => pfn < (ulong)_codePages.Length * 64
        ? (_codePages[pfn >> 6] & (1UL << (int)(pfn & 63))) != 0
        : _farCodePages.Count != 0 && _farCodePages.Contains(pfn);

    /// <summary>Drops every block decoded from page <paramref name="pfn"/>; true if there was one.</summary>
    public bool InvalidatePage(ulong pfn)
    {
        if (!IsCodePage(pfn))
        {
            return false;
        }

        Invalidations++;
        if (pfn < (ulong)_codePages.Length * 64)
        {
            _codePages[pfn >> 6] &= ~(1UL << (int)(pfn & 63));
        }
        else
        {
            _farCodePages.Remove(pfn);
        }

        for (var i = 0; i < _slots.Length; i++)
        {
            var b = _slots[i];
            if (b is not null && ((b.Pa >> 12) == pfn || (b.Pa2 != DecodedBlock.NoSecondPage && (b.Pa2 >> 12) == pfn)))
            {
                _slots[i] = null;
            }
        }

        return true;
    }

    /// <summary>
    /// A serializing instruction: code must be fetched afresh, whoever wrote it (another vCPU, the
    /// host) without this cache being told. Every block is compared with memory before it next
    /// runs and decoded again if its bytes changed; unchanged blocks are kept.
    /// </summary>
    public void Serialize()
    {
        Serializations++;
        Invalidations++; // links skip the fetch that verifies: they go too
    }

    public void Clear()
    {
        Invalidations++;
        Array.Clear(_slots);
        Array.Clear(_victim);
        Array.Clear(_codePages);
        _farCodePages.Clear();
    }

    /// <summary>
    /// Decodes the block at <paramref name="rip"/> (physical <paramref name="pa"/>) from <see cref="Buffer"/>,
    /// which holds <paramref name="length"/> bytes from pa to the end of its page. Returns null when the first instruction runs off the page:
    /// the caller then supplies the next page's bytes to <see cref="DecodeCrossing"/>.
    /// </summary>
    public DecodedBlock? Decode(ulong pa, ulong rip, int length)
    {
        _reader.Reset(length);
        _decoder.IP = rip;
        var count = 0;
        while (count < MaxInstructions)
        {
            var start = _reader.Position;
            _decoder.Decode(out _scratch[count]);
            ref var ins = ref _scratch[count];
            if (ins.IsInvalid && _decoder.LastError == DecoderError.NoMoreBytes)
            {
                if (count == 0)
                {
                    return null;
                }

                break;
            }

            count++;
            if (ins.IsInvalid || ins.FlowControl != FlowControl.Next || _reader.Position >= length)
            {
                break;
            }
        }

        return Insert(new DecodedBlock { Pa = pa, Rip = rip, Instructions = _scratch[..count], Count = count, Bytes = _bytes[.._reader.Position] });
    }

    /// <summary>The buffer <see cref="Decode"/> reads: the caller fills it with the page's bytes first.</summary>
    public Span<byte> Buffer => _bytes;

    /// <summary>Decodes one instruction whose bytes continue on another page (<paramref name="pa2"/>): the buffer holds the first page's tail then 15 bytes of the next.</summary>
    public DecodedBlock DecodeCrossing(ulong pa, ulong pa2, ulong rip, int length)
    {
        _reader.Reset(length);
        _decoder.IP = rip;
        _decoder.Decode(out var ins);
        var block = new DecodedBlock { Pa = pa, Rip = rip, Pa2 = pa2, Instructions = [ins], Count = 1, Bytes = _bytes[.._reader.Position] };
        MarkCode(pa2 >> 12);
        return Insert(block);
    }

    private DecodedBlock Insert(DecodedBlock block)
    {
        Decodes++;
        block.Verified = Serializations;
        block.Fast = new FastOp[block.Count];
        for (var i = 0; i < block.Count; i++)
        {
            block.Fast[i] = FastPath ? FastOp.Classify(in block.Instructions[i]) : FastOp.General(in block.Instructions[i]);
        }

        MarkCode(block.Pa >> 12);
        var set = Set(block.Pa);
        var first = set * Ways;
        var way = -1;
        for (var i = 0; i < Ways; i++)
        {
            var b = _slots[first + i];
            if (b is null || (b.Pa == block.Pa && b.Rip == block.Rip))
            {
                way = i; // a free entry, or the stale copy of this very block
                break;
            }
        }

        if (way < 0)
        {
            way = _victim[set];
            _victim[set] = (byte)((way + 1) % Ways);
        }

        _slots[first + way] = block;
        return block;
    }

    private void MarkCode(ulong pfn)
    {
        if (pfn >= BitmapPageLimit)
        {
            _farCodePages.Add(pfn);
            return;
        }

        if (pfn >= (ulong)_codePages.Length * 64)
        {
            var words = _codePages.Length;
            while ((ulong)words * 64 <= pfn)
            {
                words *= 2;
            }

            Array.Resize(ref _codePages, words);
        }

        _codePages[pfn >> 6] |= 1UL << (int)(pfn & 63);
    }

    private sealed class BufferReader(byte[] bytes) : CodeReader
    {
        private int _length;

        public int Position { get; private set; }

        public void Reset(int length)
        {
            _length = length;
            Position = 0;
        }

        public override int ReadByte() => Position < _length ? bytes[Position++] : -1;
    }
}
