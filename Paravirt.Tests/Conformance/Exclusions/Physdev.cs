namespace Paravirt.Tests.Conformance;

public static partial class AbiExclusions
{
    private static readonly AbiExclusion[] Physdev = [];
}
