using System.CommandLine;
using Paravirt.Cli;

// No termination timeout: the commands that run until a signal (run, host, xenstored) handle
// SIGINT/SIGTERM themselves and may take longer than System.CommandLine's default 2 s to end
// cleanly (host shuts its domains down); the others end the default way.
return await CliRoot.Build().Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
