using Iced.Intel;
using Paravirt.Core.Hypercalls;

namespace Paravirt.Core.Boot.Elf;

/// <summary>
/// Decodes a kernel's executable bytes with Iced (64-bit, linear sweep) and counts the sensitive
/// instructions a trap-and-emulate hypervisor would have to catch, and the hypercalls the kernel
/// makes instead.
/// </summary>
/// <remarks>
/// A linear sweep decodes from the start of each region to its end, one instruction after
/// another. Data or padding inside the code (jump tables, strings, alignment bytes, embedded
/// modules) decodes too, as garbage instructions, and can make the sweep lose the true instruction
/// boundaries for a few instructions; its counts are an upper-bound-ish estimate, not a proof.
/// Hypercall numbers are read the way the code sets them: a near call or jump into the hypercall
/// page (slot = (target - page) / 32), or a <c>syscall</c>/<c>vmcall</c> right after a
/// <c>mov eax/rax, imm</c> (or <c>xor eax, eax</c>) with nothing between that writes rax or
/// branches.
/// </remarks>
public static class InstructionScanner
{
    /// <summary>Slots in a hypercall page: 4096 bytes of 32-byte stubs.</summary>
    public const int HypercallPageSlots = 128;

    /// <summary>Bytes per hypercall stub in the hypercall page (xen.h: hypercall_page + nr * 32).</summary>
    public const int HypercallStubSize = 32;

    /// <summary>Scans <paramref name="elf"/>, matching page calls against its XEN_ELFNOTE_HYPERCALL_PAGE if it has one.</summary>
    public static ScanReport Scan(ElfFile elf) => Scan(elf, XenElfNotes.Read(elf).HypercallPage);

    /// <summary>
    /// Scans the executable PT_LOAD segments of <paramref name="elf"/> (or, when there are none,
    /// its SHF_EXECINSTR sections), matching page calls against <paramref name="hypercallPage"/>.
    /// A segment that embeds whole ELF objects (GRUB keeps its modules so) is split in two: the
    /// objects' SHF_EXECINSTR sections, and the bytes around the objects.
    /// </summary>
    public static ScanReport Scan(ElfFile elf, ulong? hypercallPage)
    {
        ArgumentNullException.ThrowIfNull(elf);
        var groups = new List<(ScanRegion Region, List<Piece> Pieces)>();
        foreach (var s in elf.Segments)
        {
            if (s.IsLoad && s.IsExecutable && s.FileSize != 0)
            {
                AddSegment(elf, s, groups);
            }
        }

        var source = "PT_LOAD segments with PF_X";
        if (groups.Count == 0)
        {
            foreach (var s in elf.Sections)
            {
                if (s.IsExecutable && s.OccupiesFile && s.Size != 0)
                {
                    groups.Add((new ScanRegion($"section {s.Index} {s.Name}", s.Address, s.Offset, s.Size), [new Piece(s.Offset, s.Address, s.Size)]));
                }
            }

            source = groups.Count == 0 ? "nothing executable" : "sections with SHF_EXECINSTR";
        }

        var tally = new HypercallTally(hypercallPage);
        var scans = groups.Select(g => ScanGroup(elf, g.Region, g.Pieces, tally)).ToArray();
        return new ScanReport(source, scans, hypercallPage, tally.Sites(), tally.UnknownSyscalls, tally.UnknownVmcalls);
    }

    /// <summary>The most candidate embedded ELF headers tried per segment (bounds the work on hostile files).</summary>
    public const int MaxEmbeddedCandidates = 4096;

    private readonly record struct Piece(ulong FileOffset, ulong VirtualAddress, ulong Size);

    private static void AddSegment(ElfFile elf, ElfSegment s, List<(ScanRegion, List<Piece>)> groups)
    {
        var code = new List<Piece>();
        var rest = new List<Piece>();
        var bytes = elf.GetArraySegment(s.Offset, s.FileSize);
        ReadOnlySpan<byte> magic = [0x7f, (byte)'E', (byte)'L', (byte)'F', Elf64.ELFCLASS64, Elf64.ELFDATA2LSB, Elf64.EV_CURRENT];
        var covered = 0;
        var pos = 0;
        for (var tries = 0; tries < MaxEmbeddedCandidates && pos < bytes.Count; tries++)
        {
            var k = bytes.AsSpan(pos).IndexOf(magic);
            if (k < 0)
            {
                break;
            }

            k += pos;
            pos = k + 1;
            if (s.Offset + (ulong)k == 0)
            {
                continue; // the file's own header, loaded with its first segment
            }

            ElfFile obj;
            try
            {
                obj = ElfFile.ParseShared(bytes.Slice(k));
            }
            catch (ElfFormatException)
            {
                continue; // bytes that only look like an ELF header
            }

            var sections = obj.Sections.Where(x => x.IsExecutable && x.OccupiesFile && x.Size != 0).ToArray();
            if (sections.Length == 0)
            {
                continue;
            }

            AddGap(s, covered, k, rest);
            foreach (var x in sections)
            {
                code.Add(new Piece(s.Offset + (ulong)k + x.Offset, s.VirtualAddress + (ulong)k + x.Offset, x.Size));
            }

            covered = k + (int)Math.Min(Extent(obj), (ulong)(bytes.Count - k));
            pos = covered;
        }

        if (code.Count == 0)
        {
            groups.Add((new ScanRegion($"segment {s.Index}", s.VirtualAddress, s.Offset, s.FileSize), [new Piece(s.Offset, s.VirtualAddress, s.FileSize)]));
            return;
        }

        AddGap(s, covered, bytes.Count, rest);
        groups.Add((Region($"segment {s.Index} objects", code), code));
        if (rest.Count > 0)
        {
            groups.Add((Region($"segment {s.Index} rest", rest), rest));
        }
    }

    private static ScanRegion Region(string name, List<Piece> pieces) =>
        new(name, pieces[0].VirtualAddress, pieces[0].FileOffset, (ulong)pieces.Sum(p => (long)p.Size), pieces.Count);

    private static void AddGap(ElfSegment s, int from, int to, List<Piece> rest)
    {
        if (to > from)
        {
            rest.Add(new Piece(s.Offset + (ulong)from, s.VirtualAddress + (ulong)from, (ulong)(to - from)));
        }
    }

    /// <summary>Bytes from an ELF object's start to the end of the last thing its headers describe.</summary>
    private static ulong Extent(ElfFile obj)
    {
        var h = obj.Header;
        var end = Math.Max(Elf64.EhdrSize, h.SectionHeaderOffset + ((ulong)h.SectionCount * Elf64.ShdrSize));
        if (h.ProgramHeaderCount != 0)
        {
            end = Math.Max(end, h.ProgramHeaderOffset + ((ulong)h.ProgramHeaderCount * Elf64.PhdrSize));
        }

        foreach (var x in obj.Sections)
        {
            if (x.OccupiesFile)
            {
                end = Math.Max(end, x.Offset + x.Size);
            }
        }

        foreach (var x in obj.Segments)
        {
            if (x.IsLoad || x.IsNote)
            {
                end = Math.Max(end, x.Offset + x.FileSize);
            }
        }

        return end;
    }

    private static RegionScan ScanGroup(ElfFile elf, ScanRegion region, List<Piece> pieces, HypercallTally tally)
    {
        var infoFactory = new InstructionInfoFactory();
        var counts = new long[InstructionClasses.All.Count];
        var forms = new Dictionary<string, long>[counts.Length];
        for (var i = 0; i < forms.Length; i++)
        {
            forms[i] = new Dictionary<string, long>(StringComparer.Ordinal);
        }

        long total = 0, invalid = 0;
        foreach (var piece in pieces)
        {
            var bytes = elf.GetArraySegment(piece.FileOffset, piece.Size);
            var reader = new ByteArrayCodeReader(bytes.Array!, bytes.Offset, bytes.Count);
            var decoder = Decoder.Create(64, reader, piece.VirtualAddress, DecoderOptions.None);
            ulong? rax = null;
            while (reader.CanReadByte)
            {
                decoder.Decode(out var instr);
                total++;
                if (instr.IsInvalid)
                {
                    invalid++;
                    rax = null;
                    continue;
                }

                if (InstructionClasses.Classify(instr) is { } c)
                {
                    counts[(int)c]++;
                    var form = Form(instr, c);
                    forms[(int)c][form] = forms[(int)c].GetValueOrDefault(form) + 1;
                }

                switch (instr.Mnemonic)
                {
                    case Mnemonic.Syscall:
                        tally.Syscall(rax);
                        rax = null;
                        continue;
                    case Mnemonic.Vmcall or Mnemonic.Vmmcall:
                        tally.Vmcall(rax);
                        rax = null;
                        continue;
                    case Mnemonic.Call or Mnemonic.Jmp when instr.Op0Kind == OpKind.NearBranch64:
                        tally.Branch(instr.NearBranch64);
                        break;
                }

                if (ConstantRax(instr) is { } value)
                {
                    rax = value;
                }
                else if (instr.FlowControl != FlowControl.Next)
                {
                    rax = null;
                }
                else if (rax is not null && WritesRax(infoFactory, instr))
                {
                    rax = null;
                }
            }
        }

        return new RegionScan(region, total, invalid, counts, forms);
    }

    /// <summary>The value an instruction puts in rax when it is a constant load, else null.</summary>
    private static ulong? ConstantRax(in Instruction i)
    {
        if (i.Op0Kind != OpKind.Register)
        {
            return null;
        }

        return i.Code switch
        {
            Code.Mov_r32_imm32 or Code.Mov_rm32_imm32 when i.Op0Register == Register.EAX => (ulong?)i.Immediate32,
            Code.Mov_rm64_imm32 when i.Op0Register == Register.RAX => (ulong)i.Immediate32to64,
            Code.Mov_r64_imm64 when i.Op0Register == Register.RAX => i.Immediate64,
            Code.Xor_r32_rm32 or Code.Xor_rm32_r32 or Code.Xor_r64_rm64 or Code.Xor_rm64_r64
                when i.Op1Kind == OpKind.Register && i.Op0Register.GetFullRegister() == Register.RAX && i.Op1Register == i.Op0Register => 0UL,
            _ => null,
        };
    }

    private static bool WritesRax(InstructionInfoFactory factory, in Instruction i)
    {
        var info = factory.GetInfo(i);
        foreach (var used in info.GetUsedRegisters())
        {
            if (used.Register.GetFullRegister() == Register.RAX
                && used.Access is OpAccess.Write or OpAccess.CondWrite or OpAccess.ReadWrite or OpAccess.ReadCondWrite)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The instruction's form for the per-class breakdown.</summary>
    private static string Form(in Instruction i, InstructionClass c)
    {
        var m = i.Mnemonic.ToString().ToLowerInvariant();
        switch (c)
        {
            case InstructionClass.ControlRegister or InstructionClass.DebugRegister or InstructionClass.SegmentRegister when i.Mnemonic == Mnemonic.Mov:
                var kind = c switch
                {
                    InstructionClass.ControlRegister => "cr",
                    InstructionClass.DebugRegister => "dr",
                    _ => "sreg",
                };
                var to = i.Op0Kind == OpKind.Register && (c == InstructionClass.ControlRegister ? i.Op0Register.IsCR()
                    : c == InstructionClass.DebugRegister ? i.Op0Register.IsDR() : i.Op0Register.IsSegmentRegister());
                return to ? $"mov to {kind}" : $"mov from {kind}";
            case InstructionClass.SegmentRegister:
                return $"{m} {i.Op0Register.ToString().ToLowerInvariant()}";
            case InstructionClass.FarTransfer when i.Mnemonic != Mnemonic.Retf:
                return $"{m} far";
            default:
                return m;
        }
    }

    /// <summary>Counts hypercall sites across all regions of one scan.</summary>
    private sealed class HypercallTally(ulong? page)
    {
        private readonly Dictionary<int, (long Page, long Syscall, long Vmcall)> _sites = [];

        public long UnknownSyscalls { get; private set; }

        public long UnknownVmcalls { get; private set; }

        public void Branch(ulong target)
        {
            if (page is { } p && target >= p && target - p < HypercallPageSlots * HypercallStubSize)
            {
                var nr = (int)((target - p) / HypercallStubSize);
                var s = _sites.GetValueOrDefault(nr);
                _sites[nr] = (s.Page + 1, s.Syscall, s.Vmcall);
            }
        }

        public void Syscall(ulong? rax)
        {
            if (rax is { } v && v < HypercallPageSlots)
            {
                var s = _sites.GetValueOrDefault((int)v);
                _sites[(int)v] = (s.Page, s.Syscall + 1, s.Vmcall);
            }
            else
            {
                UnknownSyscalls++;
            }
        }

        public void Vmcall(ulong? rax)
        {
            if (rax is { } v && v < HypercallPageSlots)
            {
                var s = _sites.GetValueOrDefault((int)v);
                _sites[(int)v] = (s.Page, s.Syscall, s.Vmcall + 1);
            }
            else
            {
                UnknownVmcalls++;
            }
        }

        public IReadOnlyList<HypercallSites> Sites() =>
            [.. _sites.OrderBy(p => p.Key).Select(p => new HypercallSites(p.Key, HypercallTable.XenName(p.Key) ?? $"#{p.Key}", p.Value.Page, p.Value.Syscall, p.Value.Vmcall))];
    }
}
