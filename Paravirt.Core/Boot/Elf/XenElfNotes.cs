using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Paravirt.Core.Abi;

namespace Paravirt.Core.Boot.Elf;

/// <summary>How a Xen note's descriptor is read (xen/elfnote.h says it per type).</summary>
public enum XenNoteKind
{
    /// <summary>ASCII ended by a NUL: in the descriptor, its padding or (as libelf reads it) after it.</summary>
    String,

    /// <summary>A little-endian unsigned number of 1, 2, 4 or 8 bytes (elfnote.h: 4 or 8; Xen's loader also takes 1 and 2).</summary>
    Number,

    /// <summary>XEN_ELFNOTE_L1_MFN_VALID: 8-byte (maddr_t) mask/value pairs.</summary>
    MaskValuePairs,

    /// <summary>XEN_ELFNOTE_SUPPORTED_FEATURES: 32-bit XENFEAT_ bitmap words.</summary>
    FeatureBitmap,

    /// <summary>A type elfnote.h does not define for guest kernels: kept as raw bytes.</summary>
    Unknown,
}

/// <summary>One decoded "Xen" note: its type, elfnote.h name, and the value read the documented way.</summary>
public sealed record XenNote(uint Type, string Name, XenNoteKind Kind, string? Text, ulong? Number, ReadOnlyMemory<byte> Descriptor)
{
    /// <summary>The value as one line: a quoted string, a hex number, pairs, or hex bytes.</summary>
    public string ValueText => Kind switch
    {
        XenNoteKind.String => "\"" + XenElfNotes.Printable(Text!) + "\"",
        XenNoteKind.Number => $"0x{Number:x}",
        XenNoteKind.MaskValuePairs => string.Join(", ", XenElfNotes.ReadPairs(Descriptor.Span).Select(p => $"mask 0x{p.Mask:x} value 0x{p.Value:x}")),
        XenNoteKind.FeatureBitmap => string.Join(" ", XenElfNotes.ReadWords(Descriptor.Span).Select(w => $"0x{w:x8}")),
        _ => Descriptor.Length == 0 ? "(empty)" : Convert.ToHexString(Descriptor.Span).ToLowerInvariant(),
    };
}

/// <summary>One entry of XEN_ELFNOTE_FEATURES.</summary>
/// <param name="Name">The XENFEAT_ name without its prefix ("writable_page_tables").</param>
/// <param name="Required">The entry had a '!' prefix: the kernel cannot run without the feature.</param>
/// <param name="Bit">The XENFEAT_ bit from features.h, or null for a name Xen 4.17 does not define.</param>
public sealed record XenFeature(string Name, bool Required, int? Bit);

/// <summary>
/// The Xen notes of a PV kernel (notes named "Xen" in its PT_NOTE segments, xen/elfnote.h), each
/// decoded by its documented type, plus the legacy <c>__xen_guest</c> section string if present.
/// A note that repeats a type overrides the earlier one (as in Xen's loader); <see cref="Notes"/>
/// keeps them all, in file order.
/// </summary>
public sealed class XenElfNotes
{
    /// <summary>The owner name of Xen's notes.</summary>
    public const string OwnerName = "Xen";

    /// <summary>The section name of the pre-note (Xen 3.0) guest description string.</summary>
    public const string LegacySectionName = "__xen_guest";

    /// <summary>The longest string note libelf reads (ELF_MAX_STRING_LENGTH, libelf-private.h).</summary>
    public const int MaxStringLength = 4096;

    private readonly Dictionary<uint, XenNote> _last = [];

    private XenElfNotes(IReadOnlyList<XenNote> notes, string? legacy)
    {
        Notes = notes;
        foreach (var n in notes)
        {
            _last[n.Type] = n;
        }

        LegacyGuestString = legacy;
        Features = Str(ElfNote.XEN_ELFNOTE_FEATURES) is { } f ? ParseFeatures(f) : [];
        var fb = Get(ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES);
        SupportedFeatureWords = fb is null ? [] : ReadWords(fb.Descriptor.Span);
        var pairs = Get(ElfNote.XEN_ELFNOTE_L1_MFN_VALID);
        L1MfnValid = pairs is null ? [] : ReadPairs(pairs.Descriptor.Span);
        Info = [.. notes.Where(n => n.Type == ElfNote.XEN_ELFNOTE_INFO).Select(n => n.Text!)];
    }

    /// <summary>Every "Xen" note, in file order.</summary>
    public IReadOnlyList<XenNote> Notes { get; }

    /// <summary>The <c>__xen_guest</c> section's string ("GUEST_OS=linux,XEN_VER=xen-3.0,..."), or null.</summary>
    public string? LegacyGuestString { get; }

    /// <summary>The <c>__xen_guest</c> string split into KEY=VALUE pairs (a bare KEY has an empty value).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> LegacyGuestItems =>
        LegacyGuestString is null ? [] :
        [.. LegacyGuestString.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(i => i.IndexOf('=', StringComparison.Ordinal) is var eq and >= 0
                ? new KeyValuePair<string, string>(i[..eq], i[(eq + 1)..])
                : new KeyValuePair<string, string>(i, ""))];

    public bool IsEmpty => Notes.Count == 0 && LegacyGuestString is null;

    public string? GuestOs => Str(ElfNote.XEN_ELFNOTE_GUEST_OS);

    public string? GuestVersion => Str(ElfNote.XEN_ELFNOTE_GUEST_VERSION);

    public string? XenVersion => Str(ElfNote.XEN_ELFNOTE_XEN_VERSION);

    public string? Loader => Str(ElfNote.XEN_ELFNOTE_LOADER);

    public string? PaeMode => Str(ElfNote.XEN_ELFNOTE_PAE_MODE);

    public string? BsdSymtab => Str(ElfNote.XEN_ELFNOTE_BSD_SYMTAB);

    /// <summary>The raw XEN_ELFNOTE_FEATURES string; <see cref="Features"/> is it parsed.</summary>
    public string? FeaturesString => Str(ElfNote.XEN_ELFNOTE_FEATURES);

    public IReadOnlyList<XenFeature> Features { get; }

    /// <summary>XEN_ELFNOTE_INFO NAME=VALUE strings, all of them.</summary>
    public IReadOnlyList<string> Info { get; }

    public ulong? Entry => Num(ElfNote.XEN_ELFNOTE_ENTRY);

    public ulong? HypercallPage => Num(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE);

    public ulong? VirtBase => Num(ElfNote.XEN_ELFNOTE_VIRT_BASE);

    public ulong? PaddrOffset => Num(ElfNote.XEN_ELFNOTE_PADDR_OFFSET);

    public ulong? HvStartLow => Num(ElfNote.XEN_ELFNOTE_HV_START_LOW);

    public ulong? InitP2m => Num(ElfNote.XEN_ELFNOTE_INIT_P2M);

    public ulong? SuspendCancel => Num(ElfNote.XEN_ELFNOTE_SUSPEND_CANCEL);

    public ulong? ModStartPfn => Num(ElfNote.XEN_ELFNOTE_MOD_START_PFN);

    public ulong? Phys32Entry => Num(ElfNote.XEN_ELFNOTE_PHYS32_ENTRY);

    public IReadOnlyList<(ulong Mask, ulong Value)> L1MfnValid { get; }

    /// <summary>XEN_ELFNOTE_SUPPORTED_FEATURES as 32-bit words (word i holds XENFEAT_ bits 32i..32i+31).</summary>
    public IReadOnlyList<uint> SupportedFeatureWords { get; }

    /// <summary>Reads the Xen notes of <paramref name="elf"/>; a malformed Xen note is an <see cref="ElfFormatException"/>.</summary>
    public static XenElfNotes Read(ElfFile elf)
    {
        ArgumentNullException.ThrowIfNull(elf);
        var notes = new List<XenNote>();
        foreach (var n in elf.Notes)
        {
            if (n.Name == OwnerName)
            {
                notes.Add(Decode(elf, n));
            }
        }

        string? legacy = null;
        if (elf.FindSection(LegacySectionName) is { } s && s.OccupiesFile)
        {
            var bytes = elf.GetBytes(s);
            var end = bytes.IndexOf((byte)0);
            legacy = Encoding.Latin1.GetString(end < 0 ? bytes : bytes[..end]);
        }

        return new XenElfNotes(notes, legacy);
    }

    /// <summary>elfnote.h's name of a note type without the XEN_ELFNOTE_ prefix ("GUEST_OS"), or "#n".</summary>
    public static string TypeName(uint type) => type switch
    {
        ElfNote.XEN_ELFNOTE_INFO => "INFO",
        ElfNote.XEN_ELFNOTE_ENTRY => "ENTRY",
        ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE => "HYPERCALL_PAGE",
        ElfNote.XEN_ELFNOTE_VIRT_BASE => "VIRT_BASE",
        ElfNote.XEN_ELFNOTE_PADDR_OFFSET => "PADDR_OFFSET",
        ElfNote.XEN_ELFNOTE_XEN_VERSION => "XEN_VERSION",
        ElfNote.XEN_ELFNOTE_GUEST_OS => "GUEST_OS",
        ElfNote.XEN_ELFNOTE_GUEST_VERSION => "GUEST_VERSION",
        ElfNote.XEN_ELFNOTE_LOADER => "LOADER",
        ElfNote.XEN_ELFNOTE_PAE_MODE => "PAE_MODE",
        ElfNote.XEN_ELFNOTE_FEATURES => "FEATURES",
        ElfNote.XEN_ELFNOTE_BSD_SYMTAB => "BSD_SYMTAB",
        ElfNote.XEN_ELFNOTE_HV_START_LOW => "HV_START_LOW",
        ElfNote.XEN_ELFNOTE_L1_MFN_VALID => "L1_MFN_VALID",
        ElfNote.XEN_ELFNOTE_SUSPEND_CANCEL => "SUSPEND_CANCEL",
        ElfNote.XEN_ELFNOTE_INIT_P2M => "INIT_P2M",
        ElfNote.XEN_ELFNOTE_MOD_START_PFN => "MOD_START_PFN",
        ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES => "SUPPORTED_FEATURES",
        ElfNote.XEN_ELFNOTE_PHYS32_ENTRY => "PHYS32_ENTRY",
        _ => "#" + type.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>The descriptor kind elfnote.h documents for a note type.</summary>
    public static XenNoteKind KindOf(uint type) => type switch
    {
        ElfNote.XEN_ELFNOTE_INFO or ElfNote.XEN_ELFNOTE_XEN_VERSION or ElfNote.XEN_ELFNOTE_GUEST_OS
            or ElfNote.XEN_ELFNOTE_GUEST_VERSION or ElfNote.XEN_ELFNOTE_LOADER or ElfNote.XEN_ELFNOTE_PAE_MODE
            or ElfNote.XEN_ELFNOTE_FEATURES or ElfNote.XEN_ELFNOTE_BSD_SYMTAB => XenNoteKind.String,
        ElfNote.XEN_ELFNOTE_ENTRY or ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE or ElfNote.XEN_ELFNOTE_VIRT_BASE
            or ElfNote.XEN_ELFNOTE_PADDR_OFFSET or ElfNote.XEN_ELFNOTE_HV_START_LOW or ElfNote.XEN_ELFNOTE_SUSPEND_CANCEL
            or ElfNote.XEN_ELFNOTE_INIT_P2M or ElfNote.XEN_ELFNOTE_MOD_START_PFN
            or ElfNote.XEN_ELFNOTE_PHYS32_ENTRY => XenNoteKind.Number,
        ElfNote.XEN_ELFNOTE_L1_MFN_VALID => XenNoteKind.MaskValuePairs,
        ElfNote.XEN_ELFNOTE_SUPPORTED_FEATURES => XenNoteKind.FeatureBitmap,
        _ => XenNoteKind.Unknown,
    };

    /// <summary>Parses a FEATURES string: '|'-separated names, each optionally prefixed by '!' (required).</summary>
    public static IReadOnlyList<XenFeature> ParseFeatures(string features)
    {
        ArgumentNullException.ThrowIfNull(features);
        var list = new List<XenFeature>();
        foreach (var item in features.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var required = item.StartsWith('!');
            var name = required ? item[1..] : item;
            if (name.Length == 0)
            {
                continue;
            }

            list.Add(new XenFeature(name, required, FeatureBit(name)));
        }

        return list;
    }

    /// <summary>The XENFEAT_ bit of a feature name without its prefix, from <see cref="Abi.Features"/>, or null.</summary>
    public static int? FeatureBit(string name) => name switch
    {
        "writable_page_tables" => Abi.Features.XENFEAT_writable_page_tables,
        "writable_descriptor_tables" => Abi.Features.XENFEAT_writable_descriptor_tables,
        "auto_translated_physmap" => Abi.Features.XENFEAT_auto_translated_physmap,
        "supervisor_mode_kernel" => Abi.Features.XENFEAT_supervisor_mode_kernel,
        "pae_pgdir_above_4gb" => Abi.Features.XENFEAT_pae_pgdir_above_4gb,
        "mmu_pt_update_preserve_ad" => Abi.Features.XENFEAT_mmu_pt_update_preserve_ad,
        "highmem_assist" => Abi.Features.XENFEAT_highmem_assist,
        "gnttab_map_avail_bits" => Abi.Features.XENFEAT_gnttab_map_avail_bits,
        "hvm_callback_vector" => Abi.Features.XENFEAT_hvm_callback_vector,
        "hvm_safe_pvclock" => Abi.Features.XENFEAT_hvm_safe_pvclock,
        "hvm_pirqs" => Abi.Features.XENFEAT_hvm_pirqs,
        "dom0" => Abi.Features.XENFEAT_dom0,
        "memory_op_vnode_supported" => Abi.Features.XENFEAT_memory_op_vnode_supported,
        "ARM_SMCCC_supported" => Abi.Features.XENFEAT_ARM_SMCCC_supported,
        "linux_rsdp_unrestricted" => Abi.Features.XENFEAT_linux_rsdp_unrestricted,
        "not_direct_mapped" => Abi.Features.XENFEAT_not_direct_mapped,
        "direct_mapped" => Abi.Features.XENFEAT_direct_mapped,
        _ => null,
    };

    internal static (ulong Mask, ulong Value)[] ReadPairs(ReadOnlySpan<byte> d)
    {
        var pairs = new (ulong, ulong)[d.Length / 16];
        for (var i = 0; i < pairs.Length; i++)
        {
            pairs[i] = (BinaryPrimitives.ReadUInt64LittleEndian(d[(16 * i)..]), BinaryPrimitives.ReadUInt64LittleEndian(d[((16 * i) + 8)..]));
        }

        return pairs;
    }

    internal static uint[] ReadWords(ReadOnlySpan<byte> d)
    {
        var words = new uint[d.Length / 4];
        for (var i = 0; i < words.Length; i++)
        {
            words[i] = BinaryPrimitives.ReadUInt32LittleEndian(d[(4 * i)..]);
        }

        return words;
    }

    /// <summary>The string with control and non-ASCII characters escaped as \xNN, for printing.</summary>
    internal static string Printable(string s)
    {
        var b = new StringBuilder(s.Length);
        foreach (var c in s)
        {
            if (c is >= ' ' and <= '~' and not '"' and not '\\')
            {
                b.Append(c);
            }
            else
            {
                b.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:x2}");
            }
        }

        return b.ToString();
    }

    private static XenNote Decode(ElfFile elf, ElfNoteRecord n)
    {
        var kind = KindOf(n.Type);
        var name = TypeName(n.Type);
        var d = n.Descriptor.Span;
        var where = $"Xen note {name} ({n.Type}) at file offset 0x{n.FileOffset:x}";
        switch (kind)
        {
            case XenNoteKind.String:
                return new XenNote(n.Type, name, kind, ReadString(elf, n, where), null, n.Descriptor);
            case XenNoteKind.Number:
                ulong value = d.Length switch
                {
                    1 => d[0],
                    2 => BinaryPrimitives.ReadUInt16LittleEndian(d),
                    4 => BinaryPrimitives.ReadUInt32LittleEndian(d),
                    8 => BinaryPrimitives.ReadUInt64LittleEndian(d),
                    _ => throw new ElfFormatException($"{where}: its descriptor is {d.Length} bytes; expected 4 or 8 bytes, as elfnote.h's numeric notes are (Xen also reads 1 and 2)"),
                };
                return new XenNote(n.Type, name, kind, null, value, n.Descriptor);
            case XenNoteKind.MaskValuePairs:
                if (d.Length % 16 != 0)
                {
                    throw new ElfFormatException($"{where}: its descriptor is {d.Length} bytes; expected a multiple of 16 (pairs of 8-byte mask and value)");
                }

                return new XenNote(n.Type, name, kind, null, null, n.Descriptor);
            case XenNoteKind.FeatureBitmap:
                if (d.Length == 0 || d.Length % 4 != 0)
                {
                    throw new ElfFormatException($"{where}: its descriptor is {d.Length} bytes; expected a non-zero multiple of 4 (32-bit XENFEAT_ bitmap words)");
                }

                return new XenNote(n.Type, name, kind, null, null, n.Descriptor);
            default:
                return new XenNote(n.Type, name, kind, null, null, n.Descriptor);
        }
    }

    /// <summary>
    /// A string note as libelf reads it (elf_strval on elf_note_desc, libelf-tools.c): from the
    /// descriptor's first byte up to the first NUL in the file, wherever it is, at most
    /// <see cref="MaxStringLength"/> characters. descsz does not bound it: Linux writes FEATURES with
    /// <c>.ascii</c> ("!writable_page_tables", no NUL) and the descriptor's zero padding to 4 bytes
    /// ends the string; a string without even padding runs on into what follows, as in libelf.
    /// libelf refuses (marks the image broken) a string that meets the end of the file or runs
    /// past the limit first, and so do we.
    /// </summary>
    private static string ReadString(ElfFile elf, ElfNoteRecord n, string where)
    {
        // The note reader checked the descriptor against the file, so the offset is inside it or at its end.
        var rest = elf.GetBytes(n.DescriptorOffset, (ulong)elf.Length - n.DescriptorOffset);
        var window = rest[..Math.Min(rest.Length, MaxStringLength + 1)];
        var end = window.IndexOf((byte)0);
        if (end >= 0)
        {
            return Encoding.Latin1.GetString(window[..end]);
        }

        throw new ElfFormatException(window.Length > MaxStringLength
            ? $"{where}: its string (descsz {n.Descriptor.Length}) has no NUL within {MaxStringLength} bytes of the descriptor's start; expected a NUL-terminated string of at most {MaxStringLength} characters (Xen's libelf limit, ELF_MAX_STRING_LENGTH)"
            : $"{where}: its string (descsz {n.Descriptor.Length}) has no NUL before the end of the file; expected a NUL in the descriptor or in its padding to 4 bytes (as Xen's libelf reads string notes)");
    }

    private XenNote? Get(int type) => _last.GetValueOrDefault((uint)type);

    private string? Str(int type) => Get(type)?.Text;

    private ulong? Num(int type) => Get(type)?.Number;
}
