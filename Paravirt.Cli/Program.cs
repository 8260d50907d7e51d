using System.CommandLine;
using Paravirt.Cli;

var root = new RootCommand("paravirt: a Xen-style paravirtualizing hypervisor in a .NET process");
var info = new Command("info", "Print the hypervisor's version and its hypercall table (implemented or -ENOSYS)");
info.SetAction(_ => InfoCommand.Run(Console.Out));
root.Subcommands.Add(info);
root.SetAction(_ => InfoCommand.Run(Console.Out));
return root.Parse(args).Invoke();
