using System.Reflection;

namespace Paravirt.Tests.Conformance;

/// <summary>A probed Xen ABI item (struct or constant) that deliberately has no C# twin, and why.</summary>
public sealed record AbiExclusion(string Name, string Why);

/// <summary>
/// Items of the Xen ABI JSON that deliberately have no C# twin, each with the reason. Each header's
/// list lives in <c>Exclusions/&lt;Header&gt;.cs</c> as a private static <see cref="AbiExclusion"/>[] field
/// of this partial class. Anything in the JSON that is neither mirrored in <c>Paravirt.Core.Abi</c>
/// nor listed fails CI.
/// </summary>
public static partial class AbiExclusions
{
    private static readonly Lazy<IReadOnlyDictionary<string, string>> AllLazy = new(Collect);

    public static IReadOnlyDictionary<string, string> All => AllLazy.Value;

    public static IReadOnlyDictionary<string, string> Structs =>
        All.Where(kv => AbiData.Committed.Structs.ContainsKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

    public static IReadOnlyDictionary<string, string> Constants =>
        All.Where(kv => !AbiData.Committed.Structs.ContainsKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

    private static Dictionary<string, string> Collect()
    {
        var all = new Dictionary<string, string>(StringComparer.Ordinal);
        var lists = typeof(AbiExclusions).GetFields(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)
            .Where(f => f.FieldType == typeof(AbiExclusion[]));
        foreach (var list in lists)
        {
            foreach (var e in (AbiExclusion[])list.GetValue(null)!)
            {
                if (!all.TryAdd(e.Name, e.Why))
                {
                    throw new InvalidOperationException($"{e.Name} is excluded twice (again in AbiExclusions.{list.Name})");
                }
            }
        }

        return all;
    }
}
