using Paravirt.Cli;

return await CliRoot.Build().Parse(args).InvokeAsync();
