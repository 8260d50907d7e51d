using System.Text;

namespace Paravirt.Tests.Conformance;

/// <summary>Every struct of the Xen ABI JSON has a C# twin with the same size, alignment and field offsets.</summary>
public sealed class AbiLayoutTests
{
    public static TheoryData<string> StructNames => new(AbiData.Committed.Structs.Keys.Order(StringComparer.Ordinal));

    [Theory]
    [MemberData(nameof(StructNames))]
    public void Struct_Matches_Xen_Layout(string name)
    {
        var xen = AbiData.Committed.Structs[name];
        if (AbiExclusions.Structs.ContainsKey(name))
        {
            AbiReflection.Structs.Should().NotContainKey(name, "an excluded struct must not also be mirrored; drop the exclusion");
            return;
        }

        AbiReflection.Structs.Should().ContainKey(name,
            $"{xen.Kind} {name} of {xen.Header} needs a C# twin in Paravirt.Core.Abi or an entry in AbiExclusions.Structs with a reason");
        var type = AbiReflection.Structs[name];

        var problems = new StringBuilder();
        if (!AbiReflection.IsBlittable(type))
        {
            problems.AppendLine($"{name}: holds references; ABI structs must be blittable");
        }

        var size = AbiReflection.SizeOf(type);
        if (size != xen.Size)
        {
            problems.AppendLine($"{name}: size {size}, expected {xen.Size} (Xen {xen.Header})");
        }

        var align = AbiReflection.AlignOf(type);
        if (align != xen.Align)
        {
            problems.AppendLine($"{name}: alignment {align}, expected {xen.Align}");
        }

        foreach (var field in xen.Fields)
        {
            var (offset, fieldSize, error) = AbiReflection.Locate(type, field.Name);
            if (error is not null)
            {
                problems.AppendLine(error);
                continue;
            }

            if (offset != field.Offset)
            {
                problems.AppendLine($"{name}.{field.Name}: offset {offset}, expected {field.Offset}");
            }

            if (fieldSize != field.Size)
            {
                problems.AppendLine($"{name}.{field.Name}: size {fieldSize}, expected {field.Size}");
            }
        }

        var xenTopLevel = xen.Fields.Where(f => !f.Name.Contains('.')).Select(f => f.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var extra in AbiReflection.TopLevelFieldNames(type).Where(n => !xenTopLevel.Contains(n)))
        {
            problems.AppendLine($"{name}.{extra}: not a field of Xen's {xen.Kind} {name}");
        }

        problems.ToString().Should().BeEmpty();
    }

    [Fact]
    public void Every_CSharp_Abi_Struct_Is_Checked_Against_Xen()
    {
        var unchecked_ = AbiReflection.Structs.Keys.Where(n => !AbiData.Committed.Structs.ContainsKey(n)).Order(StringComparer.Ordinal).ToList();
        unchecked_.Should().BeEmpty("every top-level struct in Paravirt.Core.Abi must be probed in abi/probe/ so CI checks its layout");
    }

    [Fact]
    public void Every_Exclusion_Names_A_Probed_Item_And_Says_Why()
    {
        foreach (var (name, why) in AbiExclusions.Structs)
        {
            AbiData.Committed.Structs.Should().ContainKey(name, "a struct exclusion must name a probed struct");
            why.Should().NotBeNullOrWhiteSpace();
        }

        foreach (var (name, why) in AbiExclusions.Constants)
        {
            (AbiData.Committed.Constants.ContainsKey(name) || AbiData.Committed.Strings.ContainsKey(name))
                .Should().BeTrue($"constant exclusion {name} must name a probed constant");
            why.Should().NotBeNullOrWhiteSpace();
        }
    }
}
