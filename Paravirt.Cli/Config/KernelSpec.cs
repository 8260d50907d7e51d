using System.Reflection;
using Paravirt.Cli.Guests;
using Paravirt.Core.Cpu;

namespace Paravirt.Cli.Config;

/// <summary>
/// What <c>kernel = "..."</c> names. <c>managed:NAME</c> is one of the program's built-in managed
/// guests (<see cref="ManagedGuests"/>); <c>managed:PATH.dll:Namespace.Type</c> is a user's guest
/// kernel, a public class with a public parameterless constructor deriving from
/// <c>Paravirt.Guest.GuestKernel</c> (or <c>Paravirt.Core.Cpu.ManagedKernel</c>) in an assembly built
/// against the same Paravirt packages; anything else is the path of a PV kernel image (ELF with Xen
/// notes), built by the ELF domain builder (<c>Hypervisor.CreatePvDomain</c>) and started through
/// <c>PvKernelStart</c>.
/// </summary>
internal abstract record KernelSpec
{
    public const string ManagedPrefix = "managed:";

    /// <summary>A new kernel instance for one boot of the domain (a restart gets a fresh one).</summary>
    /// <exception cref="KernelLoadException">The assembly or type cannot be loaded or is not a guest kernel.</exception>
    public abstract ManagedKernel Create();

    /// <summary>Parses a <c>kernel</c> value; relative paths are taken from <paramref name="baseDirectory"/>.</summary>
    /// <exception cref="FormatException">An unknown built-in name, or a malformed managed: value.</exception>
    public static KernelSpec Parse(string value, string baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (!value.StartsWith(ManagedPrefix, StringComparison.Ordinal))
        {
            if (value.Length == 0)
            {
                throw new FormatException("the kernel is empty; expected \"managed:NAME\" or a kernel image path");
            }

            return new ImageKernel(Path.GetFullPath(value, baseDirectory));
        }

        var rest = value[ManagedPrefix.Length..];
        var colon = rest.LastIndexOf(':');
        if (colon < 0)
        {
            return ManagedGuests.Find(rest) is { } guest
                ? new BuiltinKernel(guest)
                : throw new FormatException($"'{rest}' is not a built-in managed guest; expected one of {string.Join(", ", ManagedGuests.All.Select(g => g.Name))}, or managed:PATH.dll:Namespace.Type");
        }

        var path = rest[..colon];
        var type = rest[(colon + 1)..];
        if (path.Length == 0 || type.Length == 0)
        {
            throw new FormatException($"'{value}' names no assembly or no type; expected managed:PATH.dll:Namespace.Type");
        }

        return new AssemblyKernel(Path.GetFullPath(path, baseDirectory), type);
    }
}

/// <summary>A built-in managed guest.</summary>
internal sealed record BuiltinKernel(ManagedGuest Guest) : KernelSpec
{
    public override ManagedKernel Create() => Guest.Create();

    public override string ToString() => ManagedPrefix + Guest.Name;
}

/// <summary>A user's managed guest kernel in an assembly.</summary>
internal sealed record AssemblyKernel(string AssemblyPath, string TypeName) : KernelSpec
{
    public override ManagedKernel Create()
    {
        Assembly assembly;
        try
        {
            assembly = Assembly.LoadFrom(AssemblyPath);
        }
        catch (Exception e) when (e is IOException or BadImageFormatException or UnauthorizedAccessException or ArgumentException)
        {
            throw new KernelLoadException($"cannot load the guest assembly {AssemblyPath}: {e.Message}", e);
        }

        var type = assembly.GetType(TypeName, throwOnError: false)
            ?? throw new KernelLoadException($"{AssemblyPath} has no type '{TypeName}'; expected the full name (Namespace.Type) of a public guest kernel class");
        if (!typeof(ManagedKernel).IsAssignableFrom(type) || type.IsAbstract)
        {
            throw new KernelLoadException($"'{TypeName}' is not a concrete guest kernel; expected a class deriving from Paravirt.Guest.GuestKernel");
        }

        if (type.GetConstructor(Type.EmptyTypes) is not { IsPublic: true } ctor)
        {
            throw new KernelLoadException($"'{TypeName}' has no public parameterless constructor; expected one");
        }

        try
        {
            return (ManagedKernel)ctor.Invoke(null);
        }
        catch (TargetInvocationException e)
        {
            throw new KernelLoadException($"'{TypeName}''s constructor threw: {e.InnerException?.Message}", e);
        }
    }

    public override string ToString() => $"{ManagedPrefix}{AssemblyPath}:{TypeName}";
}

/// <summary>A PV kernel image (ELF with Xen notes): not a managed kernel, so <c>run</c> builds it with the ELF domain builder instead.</summary>
internal sealed record ImageKernel(string ImagePath) : KernelSpec
{
    public override ManagedKernel Create() => throw new NotSupportedException($"{ImagePath} is a PV kernel image, not a managed guest; it is built with Hypervisor.CreatePvDomain");

    public override string ToString() => ImagePath;
}

/// <summary>A managed guest kernel named by a config could not be loaded or created.</summary>
internal sealed class KernelLoadException(string message, Exception? inner = null) : Exception(message, inner);
