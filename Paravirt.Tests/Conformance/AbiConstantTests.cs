namespace Paravirt.Tests.Conformance;

/// <summary>Every constant of the Xen ABI JSON has a C# twin with the same value.</summary>
public sealed class AbiConstantTests
{
    public static TheoryData<string> ConstantNames => new(AbiData.Committed.Constants.Keys.Order(StringComparer.Ordinal));

    public static TheoryData<string> StringNames => new(AbiData.Committed.Strings.Keys.Order(StringComparer.Ordinal));

    [Theory]
    [MemberData(nameof(ConstantNames))]
    public void Constant_Matches_Xen(string name)
    {
        var (header, expected) = AbiData.Committed.Constants[name];
        if (AbiExclusions.Constants.ContainsKey(name))
        {
            AbiReflection.Constants.Should().NotContainKey(name, "an excluded constant must not also be mirrored");
            return;
        }

        AbiReflection.Constants.Should().ContainKey(name,
            $"{name} of {header} needs a C# twin in Paravirt.Core.Abi or an entry in AbiExclusions.Constants with a reason");
        foreach (var (where, value) in AbiReflection.Constants[name])
        {
            value.Should().NotBeOfType<string>($"{where} mirrors an integer constant");
            Convert.ToDecimal(value, System.Globalization.CultureInfo.InvariantCulture)
                .Should().Be(expected, $"{where} mirrors {name} of {header}");
        }
    }

    [Theory]
    [MemberData(nameof(StringNames))]
    public void String_Matches_Xen(string name)
    {
        var (header, expected) = AbiData.Committed.Strings[name];
        if (AbiExclusions.Constants.ContainsKey(name))
        {
            return;
        }

        AbiReflection.Constants.Should().ContainKey(name, $"{name} of {header} needs a C# twin in Paravirt.Core.Abi");
        foreach (var (where, value) in AbiReflection.Constants[name])
        {
            value.Should().Be(expected, $"{where} mirrors {name} of {header}");
        }
    }
}
