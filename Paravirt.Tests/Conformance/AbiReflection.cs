using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi;

namespace Paravirt.Tests.Conformance;

/// <summary>Finds the C# twins of Xen ABI items in <c>Paravirt.Core.Abi</c> and measures their layout.</summary>
public static class AbiReflection
{
    private const BindingFlags InstanceFields = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    public static Assembly CoreAssembly => typeof(AbiNamePrefixAttribute).Assembly;

    /// <summary>Top-level value types of the ABI namespaces, by simple name (Xen's tag name).</summary>
    public static IReadOnlyDictionary<string, Type> Structs { get; } = CoreAssembly.GetTypes()
        .Where(t => t.IsValueType && !t.IsEnum && !t.IsNested && IsAbiNamespace(t.Namespace))
        .ToDictionary(t => t.Name, StringComparer.Ordinal);

    /// <summary>Every integer and string constant of the ABI namespaces, by its Xen name.</summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<(string Where, object Value)>> Constants { get; } = CollectConstants();

    public static bool IsAbiNamespace(string? ns) =>
        ns is not null && (ns == "Paravirt.Core.Abi" || ns.StartsWith("Paravirt.Core.Abi.", StringComparison.Ordinal));

    public static int SizeOf(Type t) =>
        (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(t).Invoke(null, null)!;

    /// <summary>Alignment as C's <c>_Alignof</c>: where a field of type <paramref name="t"/> lands after one byte.</summary>
    public static int AlignOf(Type t) => SizeOf(typeof(AlignProbe<>).MakeGenericType(t)) - SizeOf(t);

    /// <summary>Offset and size of a (possibly dotted) field path, or an error that says which segment is missing.</summary>
    public static (int Offset, int Size, string? Error) Locate(Type type, string path)
    {
        var offset = 0;
        var current = type;
        foreach (var segment in path.Split('.'))
        {
            var field = current.GetField(segment, InstanceFields);
            if (field is null)
            {
                return (0, 0, $"{type.Name} has no field '{path}' (no '{segment}' in {current.Name})");
            }

            offset += (int)Marshal.OffsetOf(current, segment);
            current = field.FieldType;
        }

        return (offset, SizeOf(current), null);
    }

    public static IEnumerable<string> TopLevelFieldNames(Type type) =>
        type.GetFields(InstanceFields).Select(f => f.Name);

    public static bool IsBlittable(Type t) =>
        !(bool)typeof(RuntimeHelpers).GetMethod(nameof(RuntimeHelpers.IsReferenceOrContainsReferences))!
            .MakeGenericMethod(t).Invoke(null, null)!;

    private static Dictionary<string, IReadOnlyList<(string, object)>> CollectConstants()
    {
        var all = new Dictionary<string, List<(string, object)>>(StringComparer.Ordinal);
        foreach (var t in CoreAssembly.GetTypes().Where(t => IsAbiNamespace(t.Namespace)))
        {
            var isHolder = t.IsEnum || (t.IsAbstract && t.IsSealed); // enums and static classes
            if (!isHolder)
            {
                continue;
            }

            var prefix = t.GetCustomAttribute<AbiNamePrefixAttribute>()?.Prefix ?? "";
            foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral))
            {
                var raw = f.GetRawConstantValue()!;
                var name = prefix + f.Name;
                if (!all.TryGetValue(name, out var list))
                {
                    all[name] = list = [];
                }

                list.Add(($"{t.FullName}.{f.Name}", raw));
            }
        }

        return all.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<(string, object)>)kv.Value, StringComparer.Ordinal);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct AlignProbe<T>
        where T : unmanaged
    {
        public byte Lead;
        public T Value;
    }
}
