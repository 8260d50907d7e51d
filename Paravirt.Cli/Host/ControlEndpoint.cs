using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Paravirt.Cli.Host;

/// <summary>
/// A control socket. A <c>paravirt run</c> host serves one, a Unix stream socket
/// <c>RUNTIME_DIR/PID-N.sock</c>, so <c>paravirt list</c> can reach it; a <c>paravirt host</c>
/// serves one at a fixed path (<see cref="StartAt"/>, by default <c>RUNTIME_DIR/host.sock</c>) and
/// takes xl's verbs there too. Each connection carries one request, a line. <c>list</c> is answered
/// with one JSON object per domain, a line each (<see cref="DomainTable.ToJson"/>), then the server
/// closes. A line holding a JSON object is a <see cref="ControlRequest"/>, handed to the host's
/// handler with the connection (a host only). Anything else gets one line <c>{"error":"..."}</c>.
/// The socket file is removed when the server is disposed.
/// </summary>
internal sealed class ControlServer : IAsyncDisposable
{
    private const int MaxRequestBytes = 16 << 10;
    private static int s_next;
    private readonly Socket _listener;
    private readonly Func<IReadOnlyList<DomainRow>> _rows;
    private readonly Func<ControlRequest, ControlConnection, CancellationToken, Task>? _requests;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Task> _serving = [];

    private ControlServer(string path, Socket listener, Func<IReadOnlyList<DomainRow>> rows, Func<ControlRequest, ControlConnection, CancellationToken, Task>? requests)
    {
        SocketPath = path;
        _listener = listener;
        _rows = rows;
        _requests = requests;
        _accepting = Task.Run(AcceptLoopAsync);
    }

    public string SocketPath { get; }

    /// <summary>Listens in <paramref name="runtimeDirectory"/> (created if missing), answering with <paramref name="rows"/>.</summary>
    public static ControlServer Start(string runtimeDirectory, Func<IReadOnlyList<DomainRow>> rows)
    {
        RuntimeDirectory.Create(runtimeDirectory);
        var path = Path.Combine(runtimeDirectory, string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId}-{Interlocked.Increment(ref s_next)}.sock"));
        File.Delete(path); // a leftover of an earlier process with our pid
        return new ControlServer(path, Listen(path), rows, null);
    }

    /// <summary>
    /// Listens at <paramref name="path"/> (its folder created if missing), answering <c>list</c>
    /// with <paramref name="rows"/> and JSON requests with <paramref name="requests"/>, which replies
    /// on the connection itself. A socket file nobody answers on (a killed host's) is replaced.
    /// </summary>
    /// <exception cref="SocketInUseException">A live server answers at <paramref name="path"/>.</exception>
    public static ControlServer StartAt(string path, Func<IReadOnlyList<DomainRow>> rows, Func<ControlRequest, ControlConnection, CancellationToken, Task> requests)
    {
        if (Path.GetDirectoryName(path) is { Length: > 0 } folder && !Directory.Exists(folder))
        {
            RuntimeDirectory.Create(folder);
        }

        if (File.Exists(path))
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new SocketInUseException(path);
            }
            catch (SocketException)
            {
                File.Delete(path); // nobody listens: a stale file
            }
        }

        var listener = Listen(path);
        if (!OperatingSystem.IsWindows())
        {
            // Whoever can connect can destroy domains: the owner alone, whatever the folder's mode.
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        return new ControlServer(path, listener, rows, requests);
    }

    private static Socket Listen(string path)
    {
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        return listener;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            var serving = ServeAsync(client);
            lock (_serving)
            {
                _serving.Add(serving);
                _serving.RemoveAll(t => t.IsCompleted);
            }
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using (client)
        {
            try
            {
                string request;
                byte[] rest;
                using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
                {
                    timeout.CancelAfter(TimeSpan.FromSeconds(5));
                    (request, rest) = await ReadLineAsync(client, timeout.Token).ConfigureAwait(false);
                }

                if (request.StartsWith('{') && _requests is not null)
                {
                    ControlRequest parsed;
                    try
                    {
                        parsed = ControlRequest.Parse(request);
                    }
                    catch (FormatException e)
                    {
                        await SendAsync(client, ControlReply.Error(ExitCodes.Usage, e.Message) + "\n").ConfigureAwait(false);
                        return;
                    }

                    await using var connection = new ControlConnection(client, rest);
                    try
                    {
                        await _requests(parsed, connection, _stop.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not (OperationCanceledException or SocketException or ObjectDisposedException or IOException or OutOfMemoryException))
                    {
                        // A host bug must not take the host down: the client hears of it instead.
                        await connection.ReplyAsync(ControlReply.Error(ExitCodes.Refused, $"the host failed: {e.GetType().Name}: {e.Message}"), _stop.Token).ConfigureAwait(false);
                    }

                    return;
                }

                var reply = new StringBuilder();
                if (request == "list")
                {
                    foreach (var row in _rows())
                    {
                        reply.Append(DomainTable.ToJson(row)).Append('\n');
                    }
                }
                else
                {
                    reply.Append(_requests is null
                        ? "{\"error\":\"unknown request; expected list\"}\n"
                        : "{\"error\":\"unknown request; expected list or a JSON request\"}\n");
                }

                await SendAsync(client, reply.ToString()).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
            {
                // A client that went away or never spoke: nothing to answer.
            }
        }

        async Task SendAsync(Socket s, string text)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await s.SendAsync(Encoding.UTF8.GetBytes(text), SocketFlags.None, timeout.Token).ConfigureAwait(false);
            s.Shutdown(SocketShutdown.Both);
        }
    }

    /// <summary>The first line (trimmed, without its newline) and whatever the client sent after it.</summary>
    private static async Task<(string Line, byte[] After)> ReadLineAsync(Socket s, CancellationToken ct)
    {
        var buffer = new byte[MaxRequestBytes];
        var n = 0;
        int end;
        while ((end = Array.IndexOf(buffer, (byte)'\n', 0, n)) < 0 && n < buffer.Length)
        {
            var got = await s.ReceiveAsync(buffer.AsMemory(n), SocketFlags.None, ct).ConfigureAwait(false);
            if (got == 0)
            {
                break;
            }

            n += got;
        }

        var lineEnd = end < 0 ? n : end;
        var rest = end < 0 ? [] : buffer[(end + 1)..n];
        return (Encoding.UTF8.GetString(buffer, 0, lineEnd).Trim(), rest);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        await _accepting.ConfigureAwait(false);
        Task[] serving;
        lock (_serving)
        {
            serving = [.. _serving];
        }

        await Task.WhenAll(serving).ConfigureAwait(false);
        _stop.Dispose();
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A live server already answers at the path a host was to listen on.</summary>
internal sealed class SocketInUseException(string path) : Exception($"another paravirt host is serving {path}")
{
    public string SocketPath { get; } = path;
}

/// <summary>
/// One client of a host, after its request line: the host writes its reply lines here and, for
/// <c>console</c>, streams raw bytes both ways after the first line.
/// </summary>
internal sealed class ControlConnection(Socket socket, byte[] initial) : IAsyncDisposable
{
    private readonly NetworkStream _stream = new(socket, ownsSocket: false);
    private byte[] _initial = initial;

    /// <summary>Sends one line (a newline is added).</summary>
    public async Task ReplyAsync(string line, CancellationToken ct)
    {
        await _stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"), ct).ConfigureAwait(false);
    }

    /// <summary>Sends raw bytes.</summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct) => _stream.WriteAsync(bytes, ct);

    /// <summary>Reads raw bytes from the client: 0 once it has closed its side (or gone).</summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct)
    {
        if (_initial.Length > 0)
        {
            var n = Math.Min(_initial.Length, buffer.Length);
            _initial.AsSpan(0, n).CopyTo(buffer.Span);
            _initial = _initial[n..];
            return n;
        }

        return await _stream.ReadAsync(buffer, ct).ConfigureAwait(false);
    }

    /// <summary>Tells the client nothing more comes (it sees the end of the stream).</summary>
    public void EndOutput()
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}

/// <summary>What <c>paravirt list</c> found: the rows of every live host, and the sockets nobody answered on.</summary>
internal sealed record ControlQuery(IReadOnlyList<DomainRow> Rows, IReadOnlyList<string> StaleSockets);

/// <summary>The client side: asks every socket in the runtime directory for its rows.</summary>
internal static class ControlClient
{
    public static async Task<ControlQuery> QueryAllAsync(string runtimeDirectory, TimeSpan timeout, CancellationToken ct)
    {
        var rows = new List<DomainRow>();
        var stale = new List<string>();
        if (!Directory.Exists(runtimeDirectory))
        {
            return new ControlQuery(rows, stale);
        }

        foreach (var path in Directory.EnumerateFiles(runtimeDirectory, "*.sock").Order(StringComparer.Ordinal))
        {
            var answer = await QueryAsync(path, timeout, ct).ConfigureAwait(false);
            if (answer is null)
            {
                stale.Add(path);
                continue;
            }

            rows.AddRange(answer);
        }

        return new ControlQuery([.. rows.OrderBy(r => r.Host).ThenBy(r => r.Id)], stale);
    }

    /// <summary>The rows one host answers, or null when nobody listens there (a stale socket) or the answer is not rows.</summary>
    public static async Task<IReadOnlyList<DomainRow>?> QueryAsync(string socketPath, TimeSpan timeout, CancellationToken ct)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bounded.CancelAfter(timeout);
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), bounded.Token).ConfigureAwait(false);
            await s.SendAsync("list\n"u8.ToArray(), SocketFlags.None, bounded.Token).ConfigureAwait(false);
            var received = new MemoryStream();
            var buffer = new byte[4096];
            int n;
            while ((n = await s.ReceiveAsync(buffer, SocketFlags.None, bounded.Token).ConfigureAwait(false)) > 0)
            {
                received.Write(buffer, 0, n);
                if (received.Length > 16 << 20)
                {
                    return null;
                }
            }

            var rows = new List<DomainRow>();
            foreach (var line in Encoding.UTF8.GetString(received.GetBuffer(), 0, (int)received.Length).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                rows.Add(DomainTable.FromJson(line));
            }

            return rows;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or FormatException)
        {
            ct.ThrowIfCancellationRequested();
            return null;
        }
    }
}
