using System.Globalization;

namespace Paravirt.Core.Domains;

/// <summary>
/// A sampling profile of guest code on the interpreter: every <see cref="SampleInterval"/>
/// instructions a vCPU runs, the engine stops at that very instruction and credits the interval
/// to the rip it stopped at, so each address collects instructions in proportion to the
/// instructions executed there (a uniform sample, whether the code between makes hypercalls or not). Set
/// <see cref="HypervisorOptions.Profile"/> to record (<c>paravirt run --profile FILE</c>); a
/// <see cref="GuestSymbols"/> table (System.map or /proc/kallsyms) turns addresses into functions.
/// Thread-safe; one entry per distinct rip.
/// </summary>
public sealed class GuestProfile
{
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, long> _byRip = [];

    /// <summary>Instructions between two samples of one vCPU.</summary>
    public const long SampleInterval = 10_000;

    /// <summary>Instructions recorded in all.</summary>
    public long Instructions { get; private set; }

    /// <summary>Credits <paramref name="instructions"/> to <paramref name="rip"/>.</summary>
    public void Record(ulong rip, long instructions)
    {
        lock (_lock)
        {
            _byRip[rip] = _byRip.GetValueOrDefault(rip) + instructions;
            Instructions += instructions;
        }
    }

    /// <summary>Forgets everything recorded so far: the report then covers only what runs after (a phase of a run).</summary>
    public void Reset()
    {
        lock (_lock)
        {
            _byRip.Clear();
            Instructions = 0;
        }
    }

    /// <summary>Instructions per function (or per address without symbols), most first.</summary>
    public IReadOnlyList<(string Where, long Instructions)> ByFunction(GuestSymbols? symbols)
    {
        Dictionary<string, long> totals = [];
        lock (_lock)
        {
            foreach (var (rip, count) in _byRip)
            {
                var where = symbols?.Resolve(rip) ?? string.Create(CultureInfo.InvariantCulture, $"0x{rip:x}");
                totals[where] = totals.GetValueOrDefault(where) + count;
            }
        }

        return [.. totals.Select(kv => (kv.Key, kv.Value)).OrderByDescending(e => e.Value).ThenBy(e => e.Key, StringComparer.Ordinal)];
    }

    /// <summary>A report: one line per function with its share, most first, at most <paramref name="top"/> lines.</summary>
    public void WriteReport(TextWriter writer, GuestSymbols? symbols, int top = 200)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var total = Math.Max(1, Instructions);
        writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# {Instructions:N0} guest instructions, sampled every {SampleInterval:N0}{(symbols is null ? "; no symbols (--symbols System.map or kallsyms)" : "")}"));
        writer.WriteLine("# instructions    share  function");
        foreach (var (where, count) in ByFunction(symbols).Take(top))
        {
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{count,14:N0} {100.0 * count / total,7:F2}%  {where}"));
        }
    }
}

/// <summary>
/// Kernel symbols from a System.map or /proc/kallsyms ("ADDRESS TYPE NAME [module]" lines): an
/// address resolves to the nearest symbol at or below it. Lines that are not of that shape are skipped.
/// </summary>
public sealed class GuestSymbols
{
    private readonly ulong[] _addresses;
    private readonly string[] _names;

    private GuestSymbols(ulong[] addresses, string[] names)
    {
        _addresses = addresses;
        _names = names;
    }

    /// <summary>How many text symbols were read.</summary>
    public int Count => _addresses.Length;

    /// <summary>Reads the text symbols (types t, T, w, W) of a System.map or kallsyms listing.</summary>
    public static GuestSymbols Parse(TextReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var symbols = new List<(ulong Address, string Name)>();
        while (reader.ReadLine() is { } line)
        {
            var parts = line.Split([' ', '\t'], 4, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 3 && parts[1].Length == 1 && "tTwW".Contains(parts[1][0], StringComparison.Ordinal)
                && ulong.TryParse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var address) && address != 0)
            {
                symbols.Add((address, parts[2]));
            }
        }

        symbols.Sort((a, b) => a.Address.CompareTo(b.Address));
        return new GuestSymbols([.. symbols.Select(s => s.Address)], [.. symbols.Select(s => s.Name)]);
    }

    /// <summary>The function holding <paramref name="address"/>, or null below the first symbol.</summary>
    public string? Resolve(ulong address)
    {
        var i = Array.BinarySearch(_addresses, address);
        if (i < 0)
        {
            i = ~i - 1;
        }

        return i < 0 ? null : _names[i];
    }
}
