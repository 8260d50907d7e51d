using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Paravirt.Core.Boot;
using Paravirt.Core.Boot.Elf;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt scan KERNEL [--json]</c>: why paravirtualization exists, shown on a real kernel. Prints
/// the ELF summary, the Xen notes, how many sensitive and privileged instructions the kernel's code
/// holds per class, and the hypercalls it makes instead. A Linux bzImage is read as the domain
/// builder reads it: its decompressed vmlinux is scanned.
/// </summary>
internal static class ScanCommand
{
    public const int ExitOk = 0;
    public const int ExitUsage = 1;
    public const int ExitUnreadable = 2;
    public const int ExitNotElf = 3;

    public static Command Create()
    {
        var kernel = new Argument<string>("KERNEL") { Description = "Path of an ELF64 x86-64 kernel image (e.g. /usr/lib/grub-xen/grub-x86_64-xen.bin) or a Linux bzImage (its vmlinux is scanned)" };
        var json = new Option<bool>("--json") { Description = "Write the report as one JSON object instead of text" };
        var command = new Command(
            "scan",
            "Read a kernel's ELF headers and Xen notes, count the sensitive x86 instructions in its code (linear sweep) "
            + "and the hypercalls it makes instead. Exit codes: 0 done; 1 bad command line; 2 the file cannot be read; "
            + "3 not a valid ELF64 little-endian x86-64 image or bzImage holding one (the message on stderr says what is wrong).");
        command.Arguments.Add(kernel);
        command.Options.Add(json);
        command.SetAction(parse => Run(parse.GetValue(kernel)!, parse.GetValue(json), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error));
        return command;
    }

    public static int Run(string path, bool json, TextWriter output, TextWriter error)
    {
        ElfFile elf;
        BzImage? bz;
        XenElfNotes notes;
        ScanReport scan;
        try
        {
            elf = KernelImage.Open(path, out bz);
            notes = XenElfNotes.Read(elf);
            scan = InstructionScanner.Scan(elf, notes.HypercallPage);
        }
        catch (Exception e) when (e is ElfFormatException or PvKernelException)
        {
            error.WriteLine($"paravirt scan: {path}: {e.Message}");
            return ExitNotElf;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            error.WriteLine($"paravirt scan: cannot read {path}: {e.Message}");
            return ExitUnreadable;
        }

        if (json)
        {
            WriteJson(path, elf, bz, notes, scan, output);
        }
        else
        {
            WriteText(path, elf, bz, notes, scan, output);
        }

        return ExitOk;
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    private static void WriteText(string path, ElfFile elf, BzImage? bz, XenElfNotes notes, ScanReport scan, TextWriter o)
    {
        var h = elf.Header;
        if (bz is not null)
        {
            o.WriteLine($"{path}: Linux bzImage, boot protocol {bz.ProtocolText}, {bz.CompressionName} payload of {bz.PayloadLength} bytes at {Hex((ulong)bz.PayloadOffset)}; its vmlinux:");
        }

        o.WriteLine($"{(bz is null ? path : "vmlinux")}: ELF64 x86-64 {h.TypeName}, {elf.Length} bytes, entry {Hex(h.Entry)}");
        o.WriteLine();
        o.WriteLine($"segments ({elf.Segments.Count}):");
        o.WriteLine("   #  type          offset      vaddr               filesz      memsz       flags");
        foreach (var s in elf.Segments)
        {
            o.WriteLine($"  {s.Index,2}  {s.TypeName,-12}  {Hex(s.Offset),-10}  {Hex(s.VirtualAddress),-18}  {Hex(s.FileSize),-10}  {Hex(s.MemorySize),-10}  {s.FlagsText}");
        }

        if (elf.Sections.Count > 0)
        {
            o.WriteLine($"sections ({elf.Sections.Count}): {string.Join(", ", elf.Sections.Where(s => s.Index != 0).Select(s => s.Name.Length == 0 ? $"#{s.Index}" : s.Name))}");
        }

        o.WriteLine();
        o.WriteLine($"Xen notes ({notes.Notes.Count}):");
        if (notes.Notes.Count == 0)
        {
            o.WriteLine("  none: this is not a Xen PV kernel (no \"Xen\" notes in its PT_NOTE segments)");
        }

        foreach (var n in notes.Notes)
        {
            o.WriteLine($"  {n.Name,-18} ({n.Type,2})  {n.ValueText}");
        }

        if (notes.Features.Count > 0)
        {
            o.WriteLine($"  features: {string.Join(", ", notes.Features.Select(f => (f.Required ? "required " : "") + f.Name + (f.Bit is { } b ? $" (bit {b})" : " (unknown to Xen 4.17)")))}");
        }

        if (notes.LegacyGuestString is { } legacy)
        {
            o.WriteLine($"  __xen_guest section: \"{legacy}\"");
        }

        o.WriteLine();
        o.WriteLine($"code: {scan.Source}, decoded by linear sweep (data inside code decodes as spurious instructions)");
        foreach (var r in scan.Regions)
        {
            var pieces = r.Region.Pieces == 1 ? "" : $" in {r.Region.Pieces} pieces";
            o.WriteLine($"  {r.Region.Name}: vaddr {Hex(r.Region.VirtualAddress)}, {r.Region.Size} bytes{pieces}, {r.Instructions} instructions decoded, {r.InvalidInstructions} invalid");
        }

        o.WriteLine($"  total: {scan.Instructions} instructions decoded, {scan.InvalidInstructions} invalid");
        o.WriteLine();
        o.WriteLine("sensitive instructions a trap-and-emulate hypervisor would have to catch:");
        var header = new StringBuilder("  class                  kind                 ");
        foreach (var r in scan.Regions)
        {
            header.Append(CultureInfo.InvariantCulture, $"{ShortName(r.Region),14}");
        }

        header.Append("     total  forms");
        o.WriteLine(header.ToString());
        foreach (var c in InstructionClasses.All)
        {
            var line = new StringBuilder();
            line.Append(CultureInfo.InvariantCulture, $"  {InstructionClasses.Label(c),-22} {InstructionClasses.KindLabel(InstructionClasses.Kind(c)),-20} ");
            foreach (var r in scan.Regions)
            {
                line.Append(CultureInfo.InvariantCulture, $"{r.Count(c),14}");
            }

            line.Append(CultureInfo.InvariantCulture, $"{scan.Count(c),10}  {string.Join(" ", scan.Forms(c).Select(f => $"{f.Key}:{f.Value}"))}");
            o.WriteLine(line.ToString().TrimEnd());
        }

        foreach (var k in Enum.GetValues<SensitivityKind>())
        {
            o.WriteLine($"  {InstructionClasses.KindLabel(k),-20} total {scan.Count(k)}");
        }

        o.WriteLine();
        var page = scan.HypercallPage is { } p ? $"hypercall page at {Hex(p)} (XEN_ELFNOTE_HYPERCALL_PAGE)" : "no XEN_ELFNOTE_HYPERCALL_PAGE note, so no page calls to match";
        o.WriteLine($"hypercalls made instead ({page}):");
        if (scan.Hypercalls.Count == 0)
        {
            o.WriteLine("  none found");
        }
        else
        {
            o.WriteLine("   nr  hypercall                       page  syscall  vmcall");
            foreach (var s in scan.Hypercalls)
            {
                o.WriteLine($"  {s.Number,3}  {s.Name,-28} {s.PageCalls,6} {s.Syscalls,8} {s.Vmcalls,7}");
            }
        }

        o.WriteLine($"  syscall with rax unknown to the sweep: {scan.SyscallsWithUnknownNumber}; vmcall/vmmcall: {scan.VmcallsWithUnknownNumber}");
    }

    private static string ShortName(ScanRegion r) => r.Name.StartsWith("segment ", StringComparison.Ordinal) ? "seg" + r.Name["segment ".Length..] : r.Name.Split(' ')[^1];

    private static void WriteJson(string path, ElfFile elf, BzImage? bz, XenElfNotes notes, ScanReport scan, TextWriter o)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            var h = elf.Header;
            w.WriteStartObject();
            w.WriteString("file", path);
            if (bz is null)
            {
                w.WriteNull("bzImage");
            }
            else
            {
                w.WriteStartObject("bzImage");
                w.WriteString("protocol", bz.ProtocolText);
                w.WriteString("compression", bz.CompressionName);
                w.WriteNumber("payloadOffset", bz.PayloadOffset);
                w.WriteNumber("payloadLength", bz.PayloadLength);
                w.WriteEndObject();
            }

            w.WriteNumber("size", elf.Length);
            w.WriteString("type", h.TypeName);
            w.WriteNumber("entry", h.Entry);
            w.WriteStartArray("segments");
            foreach (var s in elf.Segments)
            {
                w.WriteStartObject();
                w.WriteNumber("index", s.Index);
                w.WriteString("type", s.TypeName);
                w.WriteString("flags", s.FlagsText);
                w.WriteNumber("offset", s.Offset);
                w.WriteNumber("vaddr", s.VirtualAddress);
                w.WriteNumber("paddr", s.PhysicalAddress);
                w.WriteNumber("filesz", s.FileSize);
                w.WriteNumber("memsz", s.MemorySize);
                w.WriteNumber("align", s.Align);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("sections");
            foreach (var s in elf.Sections)
            {
                w.WriteStartObject();
                w.WriteNumber("index", s.Index);
                w.WriteString("name", s.Name);
                w.WriteNumber("type", s.Type);
                w.WriteNumber("flags", s.Flags);
                w.WriteNumber("addr", s.Address);
                w.WriteNumber("offset", s.Offset);
                w.WriteNumber("size", s.Size);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("xenNotes");
            foreach (var n in notes.Notes)
            {
                w.WriteStartObject();
                w.WriteNumber("type", n.Type);
                w.WriteString("name", n.Name);
                w.WriteString("kind", n.Kind.ToString());
                if (n.Text is not null)
                {
                    w.WriteString("value", n.Text);
                }
                else if (n.Number is { } num)
                {
                    w.WriteNumber("value", num);
                }
                else
                {
                    w.WriteString("value", n.ValueText);
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("features");
            foreach (var f in notes.Features)
            {
                w.WriteStartObject();
                w.WriteString("name", f.Name);
                w.WriteBoolean("required", f.Required);
                if (f.Bit is { } bit)
                {
                    w.WriteNumber("bit", bit);
                }
                else
                {
                    w.WriteNull("bit");
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
            if (notes.LegacyGuestString is { } legacy)
            {
                w.WriteString("xenGuestSection", legacy);
            }

            w.WriteStartObject("code");
            w.WriteString("source", scan.Source);
            w.WriteNumber("instructions", scan.Instructions);
            w.WriteNumber("invalid", scan.InvalidInstructions);
            w.WriteStartArray("regions");
            foreach (var r in scan.Regions)
            {
                w.WriteStartObject();
                w.WriteString("name", r.Region.Name);
                w.WriteNumber("vaddr", r.Region.VirtualAddress);
                w.WriteNumber("offset", r.Region.FileOffset);
                w.WriteNumber("size", r.Region.Size);
                w.WriteNumber("pieces", r.Region.Pieces);
                w.WriteNumber("instructions", r.Instructions);
                w.WriteNumber("invalid", r.InvalidInstructions);
                w.WriteStartObject("classes");
                foreach (var c in InstructionClasses.All)
                {
                    w.WriteNumber(c.ToString(), r.Count(c));
                }

                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("classes");
            foreach (var c in InstructionClasses.All)
            {
                w.WriteStartObject();
                w.WriteString("class", c.ToString());
                w.WriteString("label", InstructionClasses.Label(c));
                w.WriteString("kind", InstructionClasses.Kind(c).ToString());
                w.WriteNumber("count", scan.Count(c));
                w.WriteStartObject("forms");
                foreach (var f in scan.Forms(c))
                {
                    w.WriteNumber(f.Key, f.Value);
                }

                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartObject("hypercalls");
            if (scan.HypercallPage is { } page)
            {
                w.WriteNumber("page", page);
            }
            else
            {
                w.WriteNull("page");
            }

            w.WriteNumber("syscallsWithUnknownNumber", scan.SyscallsWithUnknownNumber);
            w.WriteNumber("vmcallsWithUnknownNumber", scan.VmcallsWithUnknownNumber);
            w.WriteStartArray("sites");
            foreach (var s in scan.Hypercalls)
            {
                w.WriteStartObject();
                w.WriteNumber("nr", s.Number);
                w.WriteString("name", s.Name);
                w.WriteNumber("page", s.PageCalls);
                w.WriteNumber("syscall", s.Syscalls);
                w.WriteNumber("vmcall", s.Vmcalls);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        o.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
    }
}
