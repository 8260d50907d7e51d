using System.CommandLine;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Paravirt.Cli.Host;

/// <summary>
/// The verbs' side of a <c>paravirt host</c>'s control socket: where it is by default, connecting,
/// one request and its reply line (<see cref="ControlRequest"/>, <see cref="ControlReply"/>).
/// </summary>
internal static class HostClient
{
    /// <summary>The host's socket in the runtime directory when no <c>--socket</c> is given.</summary>
    public const string SocketName = "host.sock";

    /// <summary>The <c>--socket PATH</c> option every verb and <c>host</c> take.</summary>
    public static Option<string?> SocketOption() => new("--socket")
    {
        Description = $"The host's control socket (default: {SocketName} in the runtime directory: $PARAVIRT_RUNTIME_DIR, $XDG_RUNTIME_DIR/paravirt or /tmp/paravirt-UID)",
    };

    /// <summary>The socket path: the option, else <c>RUNTIME_DIR/host.sock</c>.</summary>
    public static string Resolve(string? option) =>
        option is { Length: > 0 } ? Path.GetFullPath(option) : Path.Combine(RuntimeDirectory.Resolve(null), SocketName);

    /// <summary>The one line a verb prints when nothing listens at the socket.</summary>
    public static string NoHost(string path) => $"paravirt: no host at {path} (start one with: paravirt host)";

    /// <summary>A connection to the host at <paramref name="path"/>, or null when nobody listens there.</summary>
    public static async Task<HostSession?> ConnectAsync(string path, CancellationToken ct)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
            bounded.CancelAfter(TimeSpan.FromSeconds(5));
            await s.ConnectAsync(new UnixDomainSocketEndPoint(path), bounded.Token).ConfigureAwait(false);
            return new HostSession(s);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException or ArgumentException)
        {
            s.Dispose();
            ct.ThrowIfCancellationRequested();
            return null;
        }
    }

    /// <summary>Sends <paramref name="request"/> and reads the reply; null when no host listens at <paramref name="path"/>.</summary>
    public static async Task<HostReply?> RequestAsync(string path, ControlRequest request, CancellationToken ct)
    {
        using var session = await ConnectAsync(path, ct).ConfigureAwait(false);
        return session is null ? null : await session.RequestAsync(request, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// A whole request-reply verb: prints the one-line error (<c>paravirt VERB: …</c>, or the
    /// no-host line) and returns its exit code, or hands the reply to <paramref name="ok"/> and returns 0.
    /// </summary>
    public static async Task<int> RunVerbAsync(string verb, string? socket, ControlRequest request, TextWriter error, Func<JsonElement, Task> ok, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(error);
        ArgumentNullException.ThrowIfNull(ok);
        var path = Resolve(socket);
        using var reply = await RequestAsync(path, request, ct).ConfigureAwait(false);
        if (reply is null)
        {
            await error.WriteLineAsync(NoHost(path)).ConfigureAwait(false);
            return ExitCodes.NoHost;
        }

        if (!reply.Ok)
        {
            await error.WriteLineAsync($"paravirt {verb}: {reply.Error}").ConfigureAwait(false);
            return reply.Code;
        }

        await ok(reply.Root).ConfigureAwait(false);
        return ExitCodes.Ok;
    }
}

/// <summary>One connection to a host: a request line out, reply lines in, then (console) raw bytes.</summary>
internal sealed class HostSession(Socket socket) : IDisposable
{
    private readonly NetworkStream _stream = new(socket, ownsSocket: true);
    private byte[] _pending = [];

    /// <summary>Sends the request and reads its reply line.</summary>
    public async Task<HostReply> RequestAsync(ControlRequest request, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(request);
        try
        {
            await _stream.WriteAsync(Encoding.UTF8.GetBytes(request.ToJson() + "\n"), ct).ConfigureAwait(false);
            return HostReply.Parse(await ReadLineAsync(ct).ConfigureAwait(false));
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            return HostReply.Parse(null);
        }
    }

    /// <summary>One line from the host, or null when it closed first; bytes after the line stay for <see cref="ReadAsync"/>.</summary>
    private async Task<string?> ReadLineAsync(CancellationToken ct)
    {
        var line = new MemoryStream();
        var buffer = new byte[4096];
        while (true)
        {
            var n = await _stream.ReadAsync(buffer, ct).ConfigureAwait(false);
            if (n == 0)
            {
                return null;
            }

            var newline = Array.IndexOf(buffer, (byte)'\n', 0, n);
            if (newline >= 0)
            {
                line.Write(buffer, 0, newline);
                _pending = buffer[(newline + 1)..n];
                return Encoding.UTF8.GetString(line.GetBuffer(), 0, (int)line.Length);
            }

            line.Write(buffer, 0, n);
            if (line.Length > 16 << 20)
            {
                return null;
            }
        }
    }

    /// <summary>Raw bytes after the reply (console output): 0 at the end.</summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct)
    {
        if (_pending.Length > 0)
        {
            var n = Math.Min(_pending.Length, buffer.Length);
            _pending.AsSpan(0, n).CopyTo(buffer.Span);
            _pending = _pending[n..];
            return n;
        }

        return await _stream.ReadAsync(buffer, ct).ConfigureAwait(false);
    }

    /// <summary>Raw bytes to the host (console input).</summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct) => _stream.WriteAsync(bytes, ct);

    /// <summary>Tells the host nothing more comes from this side (a console detaches).</summary>
    public void EndInput()
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    public void Dispose() => _stream.Dispose();
}

/// <summary>A host's reply line: ok with its members, or an error with the verb's exit code.</summary>
internal sealed class HostReply : IDisposable
{
    private readonly JsonDocument _doc;

    private HostReply(JsonDocument doc, bool ok, int code, string error)
    {
        _doc = doc;
        Ok = ok;
        Code = code;
        Error = error;
    }

    public bool Ok { get; }

    /// <summary>The exit code the verb gives for an error.</summary>
    public int Code { get; }

    public string Error { get; }

    public JsonElement Root => _doc.RootElement;

    /// <summary>Reads a reply line; null (the host closed without one) and lines that are not replies are errors.</summary>
    public static HostReply Parse(string? line)
    {
        if (line is null)
        {
            return new HostReply(JsonDocument.Parse("{}"), false, ExitCodes.Refused, "the host closed the connection without an answer (is it stopping?)");
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException)
        {
            return new HostReply(JsonDocument.Parse("{}"), false, ExitCodes.Refused, $"the socket's server answered what is not a host's reply: {line}");
        }

        var e = doc.RootElement;
        if (e.ValueKind != JsonValueKind.Object)
        {
            return new HostReply(doc, false, ExitCodes.Refused, $"the socket's server answered what is not a host's reply: {line}");
        }

        if (e.TryGetProperty("ok", out var ok) && ok.ValueKind == JsonValueKind.True)
        {
            return new HostReply(doc, true, ExitCodes.Ok, "");
        }

        var code = e.TryGetProperty("code", out var c) && c.TryGetInt32(out var n) ? n : ExitCodes.Refused;
        var error = e.TryGetProperty("error", out var m) && m.ValueKind == JsonValueKind.String
            ? m.GetString()!
            : $"the socket's server answered what is not a host's reply: {line}";
        if (!e.TryGetProperty("ok", out _))
        {
            // A run's control socket answers only list: not a host.
            error = $"not a paravirt host (it answered: {error})";
        }

        return new HostReply(doc, false, code, error);
    }

    public void Dispose() => _doc.Dispose();
}
