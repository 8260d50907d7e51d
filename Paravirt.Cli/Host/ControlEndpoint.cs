using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Paravirt.Cli.Host;

/// <summary>
/// The control socket a <c>paravirt run</c> host serves so <c>paravirt list</c> can reach it: a Unix
/// stream socket <c>RUNTIME_DIR/PID-N.sock</c>, one per host, removed when the host ends. Protocol:
/// the client sends one line, <c>list</c>; the server answers one JSON object per domain, a line each
/// (<see cref="DomainTable.ToJson"/>), and closes. Anything else gets one line
/// <c>{"error":"..."}</c>.
/// </summary>
internal sealed class ControlServer : IAsyncDisposable
{
    private const int MaxRequestBytes = 256;
    private static int s_next;
    private readonly Socket _listener;
    private readonly Func<IReadOnlyList<DomainRow>> _rows;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Task> _serving = [];

    private ControlServer(string path, Socket listener, Func<IReadOnlyList<DomainRow>> rows)
    {
        SocketPath = path;
        _listener = listener;
        _rows = rows;
        _accepting = Task.Run(AcceptLoopAsync);
    }

    public string SocketPath { get; }

    /// <summary>Listens in <paramref name="runtimeDirectory"/> (created if missing), answering with <paramref name="rows"/>.</summary>
    public static ControlServer Start(string runtimeDirectory, Func<IReadOnlyList<DomainRow>> rows)
    {
        RuntimeDirectory.Create(runtimeDirectory);
        var path = Path.Combine(runtimeDirectory, string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId}-{Interlocked.Increment(ref s_next)}.sock"));
        File.Delete(path); // a leftover of an earlier process with our pid
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

        return new ControlServer(path, listener, rows);
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
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                var request = await ReadLineAsync(client, timeout.Token).ConfigureAwait(false);
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
                    reply.Append("{\"error\":\"unknown request; expected list\"}\n");
                }

                await client.SendAsync(Encoding.UTF8.GetBytes(reply.ToString()), SocketFlags.None, timeout.Token).ConfigureAwait(false);
                client.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // A client that went away or never spoke: nothing to answer.
            }
        }
    }

    private static async Task<string> ReadLineAsync(Socket s, CancellationToken ct)
    {
        var buffer = new byte[MaxRequestBytes];
        var n = 0;
        while (n < buffer.Length)
        {
            var got = await s.ReceiveAsync(buffer.AsMemory(n), SocketFlags.None, ct).ConfigureAwait(false);
            if (got == 0)
            {
                break;
            }

            n += got;
            if (Array.IndexOf(buffer, (byte)'\n', 0, n) >= 0)
            {
                break;
            }
        }

        var text = Encoding.UTF8.GetString(buffer, 0, n);
        var end = text.IndexOf('\n', StringComparison.Ordinal);
        return (end < 0 ? text : text[..end]).Trim();
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
