using System.CommandLine;

namespace Paravirt.Cli;

/// <summary>The command tree of <c>paravirt</c> (Program.cs parses with it; tests too).</summary>
internal static class CliRoot
{
    public static RootCommand Build()
    {
        var root = new RootCommand("paravirt: a Xen-style paravirtualizing hypervisor in a .NET process");
        var info = new Command("info", "Print the hypervisor's version and its hypercall table (implemented or -ENOSYS)");
        info.SetAction(parse => InfoCommand.Run(parse.InvocationConfiguration.Output));
        root.Subcommands.Add(info);
        root.Subcommands.Add(XenstoredCommand.Create());
        root.Subcommands.Add(ScanCommand.Create());
        root.SetAction(parse => InfoCommand.Run(parse.InvocationConfiguration.Output));
        return root;
    }
}
