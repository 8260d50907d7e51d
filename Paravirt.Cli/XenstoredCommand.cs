using System.CommandLine;
using System.Runtime.InteropServices;
using Paravirt.Core.XenStore;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt xenstored --socket PATH</c>: the store on its own, over a Unix socket the real
/// xenstore-* tools reach with <c>XENSTORED_PATH=PATH</c>, until Ctrl-C or SIGTERM, or until the
/// action's token is cancelled; it then closes its connections and removes the socket file.
/// </summary>
internal static class XenstoredCommand
{
    public static Command Create()
    {
        var socket = new Option<string>("--socket") { Description = "Path of the Unix socket to listen on", Required = true };
        var command = new Command("xenstored", "Run a XenStore daemon on a Unix socket (XENSTORED_PATH) until Ctrl-C or SIGTERM");
        command.Options.Add(socket);
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(socket)!, parse.InvocationConfiguration.Output, ct));
        return command;
    }

    public static async Task<int> RunAsync(string socketPath, TextWriter output, CancellationToken cancellationToken)
    {
        // SIGTERM would otherwise end the process before the socket file is removed.
        using var signals = new Host.TerminationSignals(cancellationToken);
        XenStoreSocketServer server;
        try
        {
            server = XenStoreSocketServer.Start(Path.GetFullPath(socketPath));
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"paravirt xenstored: cannot listen on {socketPath}: {e.Message}").ConfigureAwait(false);
            return 1;
        }

        await using (server.ConfigureAwait(false))
        {
            await output.WriteLineAsync($"xenstored listening on {server.SocketPath}").ConfigureAwait(false);
            await output.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            try
            {
                await Task.Delay(Timeout.Infinite, signals.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Ctrl-C / SIGTERM: stop cleanly (the socket file is removed).
            }
        }

        return 0;
    }
}
