using Paravirt.Core.Domains;

namespace Paravirt.Cli;

/// <summary><c>paravirt info</c>: the hypervisor's version and hypercall table, like <c>xl info</c>'s header.</summary>
internal static class InfoCommand
{
    public static int Run(TextWriter output)
    {
        using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 16 });
        output.WriteLine($"paravirt {hv.Version} (Xen {Hypervisor.MajorVersion}.{Hypervisor.MinorVersion} ABI, x86_64 PV guests)");
        output.WriteLine($"capabilities     : {Hypervisor.Capabilities}");
        output.WriteLine();
        output.WriteLine(" nr  hypercall                      status");
        var implemented = 0;
        foreach (var e in hv.Hypercalls.Entries)
        {
            output.WriteLine($"{e.Number,3}  {e.Name,-30} {(e.Implemented ? "implemented" : "-ENOSYS")}");
            implemented += e.Implemented ? 1 : 0;
        }

        output.WriteLine();
        output.WriteLine($"{implemented} of {hv.Hypercalls.Entries.Count} named hypercalls implemented; every other number answers -ENOSYS");
        return 0;
    }
}
