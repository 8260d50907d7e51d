using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Cli.Host;

namespace Paravirt.Cli;

/// <summary>
/// <c>paravirt console DOMAIN</c>: the domain's console on the terminal, as xl console — the host's
/// recent output first, then what follows to stdout, and stdin to the guest, until Ctrl-] (0x1d)
/// detaches, stdin ends, or the domain is gone. On a terminal, stdin is put in raw mode for the
/// session, so keys reach the guest as typed (Ctrl-C included).
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
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(socket), parse.GetValue(domain)!, stdin, interactive(), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error, ct));
        return command;
    }

    /// <param name="input">Stdin as a stream, asked for only when <paramref name="interactive"/> is false or raw mode cannot be had.</param>
    /// <param name="interactive">Stdin is the process's terminal: put it in raw mode and read fd 0 itself.</param>
    public static async Task<int> RunAsync(string? socket, string domain, Func<Stream> input, bool interactive, TextWriter output, TextWriter error, CancellationToken ct)
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
        var toGuest = CopyInputAsync(raw?.Input ?? input(), session, detach.Token);
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

/// <summary>
/// The terminal on stdin in raw mode for a console session (termios through libc's
/// <c>cfmakeraw</c>, as xl console does), restored when disposed, with <see cref="Input"/> reading
/// fd 0 directly: .NET's console stream would edit and echo lines itself.
/// </summary>
internal sealed class TerminalRawMode : IDisposable
{
    private const int TCSANOW = 0;
    private const uint OPOST = 0x1, ONLCR = 0x4; // Linux's asm-generic/termbits.h
    private const int TermiosBytes = 256; // more than any libc's struct termios (60 bytes on glibc x86-64)
    private readonly byte[] _saved;
    private int _disposed;

    private TerminalRawMode(byte[] saved)
    {
        _saved = saved;
        Input = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(0, ownsHandle: false), FileAccess.Read, bufferSize: 0);
    }

    /// <summary>Stdin's bytes as typed.</summary>
    public Stream Input { get; }

    /// <summary>Raw mode, or null when stdin is not a terminal or libc refuses (then the caller reads its stream as it is).</summary>
    public static TerminalRawMode? Enter()
    {
        if (OperatingSystem.IsWindows())
        {
            return null;
        }

        try
        {
            var saved = new byte[TermiosBytes];
            if (tcgetattr(0, ref saved[0]) != 0)
            {
                return null;
            }

            var raw = (byte[])saved.Clone();
            cfmakeraw(ref raw[0]);

            // Output keeps '\n' as a new line (OPOST|ONLCR in c_oflag, the second word of Linux's
            // termios): a managed guest writes bare '\n', Linux's own tty already "\r\n".
            var oflag = BitConverter.ToUInt32(raw, 4) | OPOST | ONLCR;
            BitConverter.TryWriteBytes(raw.AsSpan(4), oflag);
            return tcsetattr(0, TCSANOW, ref raw[0]) == 0 ? new TerminalRawMode(saved) : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _ = tcsetattr(0, TCSANOW, ref _saved[0]);
            Input.Dispose();
        }
    }

    // DllImport, not LibraryImport: its generated code needs unsafe blocks, and a ref byte is blittable.
    [DllImport("libc")]
    private static extern int tcgetattr(int fd, ref byte termios);

    [DllImport("libc")]
    private static extern int tcsetattr(int fd, int optionalActions, ref byte termios);

    [DllImport("libc")]
    private static extern void cfmakeraw(ref byte termios);
}
