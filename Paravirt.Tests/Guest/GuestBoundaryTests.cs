using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using Paravirt.Guest;

namespace Paravirt.Tests.Guest;

/// <summary>The guest stub reaches the hypervisor only through the ABI and the gate: it may use Paravirt.Core's Abi, Abi.Io and Cpu namespaces, nothing else.</summary>
public sealed class GuestBoundaryTests
{
    private static readonly string[] Allowed = ["Paravirt.Core.Abi", "Paravirt.Core.Abi.Io", "Paravirt.Core.Cpu"];

    [Fact]
    public void Every_Type_The_Guest_Stub_Uses_From_Paravirt_Core_Is_In_Abi_Or_Cpu()
    {
        var path = typeof(XenGuest).Assembly.Location;
        using var pe = new PEReader(File.OpenRead(path));
        var md = pe.GetMetadataReader();
        var used = new List<string>();
        foreach (var handle in md.TypeReferences)
        {
            var (scope, ns, name) = Outermost(md, handle);
            if (scope.Kind == HandleKind.AssemblyReference && md.GetString(md.GetAssemblyReference((AssemblyReferenceHandle)scope).Name) == "Paravirt.Core")
            {
                used.Add($"{ns}.{name}");
                Allowed.Should().Contain(ns, $"Paravirt.Guest uses {ns}.{name}, outside the guest boundary");
            }
        }

        used.Should().Contain("Paravirt.Core.Cpu.IGuestCpu", "the check must see the references it polices");
        used.Should().Contain("Paravirt.Core.Abi.start_info");
    }

    private static (EntityHandle Scope, string Namespace, string Name) Outermost(MetadataReader md, TypeReferenceHandle handle)
    {
        var t = md.GetTypeReference(handle);
        while (t.ResolutionScope.Kind == HandleKind.TypeReference)
        {
            t = md.GetTypeReference((TypeReferenceHandle)t.ResolutionScope);
        }

        return (t.ResolutionScope, md.GetString(t.Namespace), md.GetString(t.Name));
    }
}
