using System.CommandLine;

namespace Paravirt.Cli;

/// <summary>The command tree of <c>paravirt</c> (Program.cs parses with it; tests too).</summary>
internal static class CliRoot
{
    /// <summary>
    /// The commands; <paramref name="stdin"/> is what <c>run</c> and <c>console</c> copy to the guest
    /// (the process's stdin when null, then put in raw mode by <c>console</c> when it is a terminal).
    /// </summary>
    public static RootCommand Build(Stream? stdin = null)
    {
        var root = new RootCommand("paravirt: a Xen-style paravirtualizing hypervisor in a .NET process");
        Func<Stream> input = () => stdin ?? Console.OpenStandardInput();
        Func<bool> interactive = () => stdin is null && !Console.IsInputRedirected;
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(RunCommand.Create(input));
        root.Subcommands.Add(ListCommand.Create());
        root.Subcommands.Add(HostCommand.Create());
        foreach (var verb in VerbCommands.Create(input, interactive))
        {
            root.Subcommands.Add(verb);
        }

        root.Subcommands.Add(ConsoleCommand.Create(input, interactive));
        root.Subcommands.Add(TopCommand.Create());
        root.Subcommands.Add(XenstoredCommand.Create());
        root.Subcommands.Add(ScanCommand.Create());
        root.SetAction(parse => InfoCommand.Run(parse.InvocationConfiguration.Output));
        return root;
    }
}
