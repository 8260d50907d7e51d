using System.CommandLine;

namespace Paravirt.Cli;

/// <summary>The command tree of <c>paravirt</c> (Program.cs parses with it; tests too).</summary>
internal static class CliRoot
{
    /// <summary>The commands; <paramref name="stdin"/> is what <c>run</c> copies to the console (the process's stdin when null).</summary>
    public static RootCommand Build(Stream? stdin = null)
    {
        var root = new RootCommand("paravirt: a Xen-style paravirtualizing hypervisor in a .NET process");
        var info = new Command("info", "Print the hypervisor's version and its hypercall table (implemented or -ENOSYS)");
        info.SetAction(parse => InfoCommand.Run(parse.InvocationConfiguration.Output));
        root.Subcommands.Add(info);
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(RunCommand.Create(() => stdin ?? Console.OpenStandardInput()));
        root.Subcommands.Add(ListCommand.Create());
        root.Subcommands.Add(XenstoredCommand.Create());
        root.Subcommands.Add(ScanCommand.Create());
        root.SetAction(parse => InfoCommand.Run(parse.InvocationConfiguration.Output));
        return root;
    }
}
