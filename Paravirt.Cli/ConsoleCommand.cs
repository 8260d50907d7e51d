using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt console DOMAIN</c>: the domain's console on the terminal, as xl console — the host's
/// recent output first, then what follows to stdout, and stdin to the guest, until Ctrl-] (0x1d)
/// detaches, stdin ends, or the domain is gone. On a terminal, stdin is put in raw mode (<c>stty
/// raw -echo</c>) for the session, so keys reach the guest as typed (Ctrl-C included).
/// </summary>
internal static class ConsoleCommand
{
    /// <summary>Ctrl-]: the byte that detaches, as in xl console and telnet.</summary>
    public const byte Escape = 0x1d;

    public static Command Create(Func<Stream> stdin, Func<bool> interactive)
    {
        var domain = new Argument<string>("DOMAIN") { Description = "The domain's name or id" };
        var socket = HostClient.SocketOption();
        var command = new Command(
            "console",
            "Attach to a domain's console on the host: its recent output, then live output on stdout, stdin to the guest; Ctrl-] detaches. "
            + $"Exit codes: 0 detached, or the domain is gone; {VerbCommands.CommonExitCodes}.");
        command.Arguments.Add(domain);
        command.Options.Add(socket);
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(socket), parse.GetValue(domain)!, stdin(), interactive(), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error, ct));
        return command;
    }

    public static async Task<int> RunAsync(string? socket, string domain, Stream input, bool interactive, TextWriter output, TextWriter error, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var path = HostClient.Resolve(socket);
        using var session = await HostClient.ConnectAsync(path, ct).ConfigureAwait(false);
        if (session is null)
        {
            await error.WriteLineAsync(HostClient.NoHost(path)).ConfigureAwait(false);
            return ExitCodes.NoHost;
        }

        using (var reply = await session.RequestAsync(new ControlRequest("console") { Domain = domain }, ct).ConfigureAwait(false))
        {
            if (!reply.Ok)
            {
                await error.WriteLineAsync($"paravirt console: {reply.Error}").ConfigureAwait(false);
                return reply.Code;
            }

            await error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"paravirt: console of domain {reply.Root.GetProperty("id").GetInt32()} ({reply.Root.GetProperty("name").GetString()}); Ctrl-] detaches")).ConfigureAwait(false);
        }

        using var raw = interactive ? TerminalRawMode.Enter() : null;
        using var detach = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var fromGuest = CopyOutputAsync(session, output, detach.Token);
        var toGuest = CopyInputAsync(input, session, detach.Token);
        var first = await Task.WhenAny(fromGuest, toGuest).ConfigureAwait(false);
        if (first == toGuest)
        {
            // Detached (Ctrl-] or the end of stdin): the host keeps the domain and its output.
            session.EndInput();
            await detach.CancelAsync().ConfigureAwait(false);
        }

        var gone = await fromGuest.ConfigureAwait(false) && first == fromGuest; // after a detach the host's end is no news
        raw?.Dispose();
        var newline = interactive ? "\n" : ""; // the guest's last line may not have ended
        await error.WriteLineAsync(gone ? $"{newline}paravirt: the domain is gone" : $"{newline}paravirt: detached").ConfigureAwait(false);
        if (first != toGuest)
        {
            // The domain is gone: the copy of stdin may stay blocked in a read; it ends with the process.
            await detach.CancelAsync().ConfigureAwait(false);
        }

        return ExitCodes.Ok;
    }

    /// <summary>The host's bytes to <paramref name="output"/>; true when the host ended them (the domain is gone), false when detached.</summary>
    private static async Task<bool> CopyOutputAsync(HostSession session, TextWriter output, CancellationToken ct)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var buffer = new byte[4096];
        var chars = new char[Encoding.UTF8.GetMaxCharCount(buffer.Length)];
        try
        {
            int n;
            while ((n = await session.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                var count = decoder.GetChars(buffer, 0, n, chars, 0, flush: false);
                await output.WriteAsync(chars.AsMemory(0, count), ct).ConfigureAwait(false);
                await output.FlushAsync(ct).ConfigureAwait(false);
            }

            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            return !ct.IsCancellationRequested;
        }
    }

    /// <summary>Stdin to the host until Ctrl-] or its end.</summary>
    private static async Task CopyInputAsync(Stream input, HostSession session, CancellationToken ct)
    {
        var buffer = new byte[1024];
        try
        {
            int n;
            while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                var escape = Array.IndexOf(buffer, Escape, 0, n);
                if (escape >= 0)
                {
                    await session.WriteAsync(buffer.AsMemory(0, escape), ct).ConfigureAwait(false);
                    return;
                }

                await session.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
        }
    }
}

/// <summary>A terminal in raw mode for a console session (<c>stty raw -echo</c>), restored when disposed.</summary>
internal sealed class TerminalRawMode : IDisposable
{
    private readonly string _saved;
    private int _disposed;

    private TerminalRawMode(string saved) => _saved = saved;

    /// <summary>Raw mode, or null when stty cannot be run (then the terminal stays as it is: lines, echo, Ctrl-C).</summary>
    public static TerminalRawMode? Enter()
    {
        var saved = Stty("-g");
        return saved is { Length: > 0 } && Stty("raw", "-echo") is not null ? new TerminalRawMode(saved.Trim()) : null;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Stty(_saved);
        }
    }

    /// <summary>Runs stty on the inherited terminal; its output, or null when it failed.</summary>
    private static string? Stty(params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo("stty") { RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi);
            if (p is null)
            {
                return null;
            }

            var text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? text : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}
