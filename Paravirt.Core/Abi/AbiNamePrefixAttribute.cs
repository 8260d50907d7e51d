namespace Paravirt.Core.Abi;

/// <summary>
/// Says that the members of an enum or static class are Xen constants whose C name is this
/// prefix followed by the member name: <c>[AbiNamePrefix("XEN_")] enum Errno { EPERM = 1 }</c>
/// mirrors Xen's <c>XEN_EPERM</c>. Members of ABI types without it carry Xen's name exactly.
/// </summary>
[AttributeUsage(AttributeTargets.Enum | AttributeTargets.Class, Inherited = false)]
public sealed class AbiNamePrefixAttribute(string prefix) : Attribute
{
    /// <summary>The C prefix put before each member name.</summary>
    public string Prefix { get; } = prefix;
}
