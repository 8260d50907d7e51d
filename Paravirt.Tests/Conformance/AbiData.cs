using System.Text.Json;

namespace Paravirt.Tests.Conformance;

/// <summary>One struct or union of <c>abi/xen-4.17-x86_64.json</c>, as the C compiler laid it out.</summary>
public sealed record AbiStruct(string Name, string Header, string Kind, int Size, int Align, IReadOnlyList<AbiField> Fields);

/// <summary>A field of an <see cref="AbiStruct"/>; dotted names reach into nested structs and unions.</summary>
public sealed record AbiField(string Name, int Offset, int Size);

/// <summary>The Xen ABI as data: the committed JSON that <c>abi/generate.sh</c> writes from the real headers.</summary>
public sealed class AbiData
{
    public const string FileName = "xen-4.17-x86_64.json";

    private static readonly Lazy<AbiData> Lazy = new(() => Load(Path.Combine(RepoRoot, "abi", FileName)));

    public static AbiData Committed => Lazy.Value;

    public required string Xen { get; init; }
    public required string Arch { get; init; }
    public required IReadOnlyDictionary<string, AbiStruct> Structs { get; init; }
    public required IReadOnlyDictionary<string, (string Header, decimal Value)> Constants { get; init; }
    public required IReadOnlyDictionary<string, (string Header, string Value)> Strings { get; init; }

    /// <summary>The checkout's root: the nearest folder above the test binaries that holds <c>Paravirt.sln</c>.</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Paravirt.sln")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException(
                $"No Paravirt.sln above {AppContext.BaseDirectory}; run the tests from a checkout of the repository.");
        }
    }

    public static AbiData Load(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        var structs = new Dictionary<string, AbiStruct>(StringComparer.Ordinal);
        foreach (var s in root.GetProperty("structs").EnumerateObject())
        {
            var fields = s.Value.GetProperty("fields").EnumerateArray()
                .Select(f => new AbiField(f.GetProperty("name").GetString()!, f.GetProperty("offset").GetInt32(), f.GetProperty("size").GetInt32()))
                .ToList();
            structs.Add(s.Name, new AbiStruct(
                s.Name,
                s.Value.GetProperty("header").GetString()!,
                s.Value.GetProperty("kind").GetString()!,
                s.Value.GetProperty("size").GetInt32(),
                s.Value.GetProperty("align").GetInt32(),
                fields));
        }

        var constants = new Dictionary<string, (string, decimal)>(StringComparer.Ordinal);
        foreach (var c in root.GetProperty("constants").EnumerateObject())
        {
            constants.Add(c.Name, (c.Value.GetProperty("header").GetString()!, c.Value.GetProperty("value").GetDecimal()));
        }

        var strings = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
        foreach (var c in root.GetProperty("strings").EnumerateObject())
        {
            strings.Add(c.Name, (c.Value.GetProperty("header").GetString()!, c.Value.GetProperty("value").GetString()!));
        }

        return new AbiData
        {
            Xen = root.GetProperty("xen").GetString()!,
            Arch = root.GetProperty("arch").GetString()!,
            Structs = structs,
            Constants = constants,
            Strings = strings,
        };
    }
}
