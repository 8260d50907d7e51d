using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Paravirt.Core.XenStore;

/// <summary>
/// XenStore on a Unix domain socket, the way C xenstored serves the toolstack: every connection is
/// privileged (dom0), requests are processed in order, replies echo the request's req_id and tx_id,
/// watch events arrive as XS_WATCH_EVENT with req_id 0. The xenstore-* tools reach it with
/// <c>XENSTORED_PATH=&lt;socket path&gt;</c>. A client that sends a header announcing more than
/// XENSTORE_PAYLOAD_MAX bytes is disconnected; one that stalls mid-message holds up only itself.
/// </summary>
public sealed class XenStoreSocketServer : IAsyncDisposable
{
    private readonly Socket listener;
    private readonly CancellationTokenSource stop = new();
    private readonly ConcurrentDictionary<Task, byte> connections = new();
    private readonly Task acceptLoop;
    private int disposed;

    private XenStoreSocketServer(string socketPath, XenStoreServer store)
    {
        SocketPath = socketPath;
        Store = store;
        listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(socketPath));
            listener.Listen(64);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new IOException($"cannot listen for XenStore clients on {socketPath}: {e.Message}", e);
        }

        acceptLoop = Task.Run(AcceptLoopAsync);
    }

    /// <summary>The socket's path, as given.</summary>
    public string SocketPath { get; }

    /// <summary>The store behind the socket.</summary>
    internal XenStoreServer Store { get; }

    /// <summary>Starts a fresh store listening on <paramref name="socketPath"/>, which must not exist yet.</summary>
    /// <exception cref="IOException">The path exists or cannot be bound.</exception>
    public static XenStoreSocketServer Start(string socketPath) => Start(socketPath, new XenStoreServer());

    /// <summary>Serves an existing store on <paramref name="socketPath"/>.</summary>
    internal static XenStoreSocketServer Start(string socketPath, XenStoreServer store)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        ArgumentNullException.ThrowIfNull(store);
        if (File.Exists(socketPath) || Directory.Exists(socketPath))
        {
            throw new IOException($"{socketPath} already exists; XenStore will not replace it (remove a stale socket first)");
        }

        return new XenStoreSocketServer(socketPath, store);
    }

    private async Task AcceptLoopAsync()
    {
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            var task = Task.Run(() => ServeAsync(client));
            connections.TryAdd(task, 0);
            _ = task.ContinueWith(t => connections.TryRemove(t, out _), TaskScheduler.Default);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        var ct = stop.Token;
        await using var stream = new NetworkStream(client, ownsSocket: true);
        var reader = PipeReader.Create(stream);
        var writer = PipeWriter.Create(stream);
        var outbox = Channel.CreateUnbounded<XsMessage>(new UnboundedChannelOptions { SingleReader = true });
        var id = Store.Connect(0, m => outbox.Writer.TryWrite(m));
        using var writerStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var sending = SendAsync(outbox.Reader, writer, writerStop.Token);
        try
        {
            while (true)
            {
                var read = await reader.ReadAsync(ct).ConfigureAwait(false);
                var buffer = read.Buffer;
                XsReadStatus status;
                while ((status = XsWireCodec.TryRead(ref buffer, out var request)) == XsReadStatus.Message)
                {
                    Store.Submit(id, request);
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
                if (status == XsReadStatus.TooLong || read.IsCompleted)
                {
                    break; // protocol violation (xenstored ignores such a client) or end of stream
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            // Stopping, or the client went away.
        }
        finally
        {
            Store.Disconnect(id);
            outbox.Writer.TryComplete();
            try
            {
                await sending.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                await writerStop.CancelAsync().ConfigureAwait(false);
            }

            await reader.CompleteAsync().ConfigureAwait(false);
            await writer.CompleteAsync().ConfigureAwait(false);
        }
    }

    private static async Task SendAsync(ChannelReader<XsMessage> outbox, PipeWriter writer, CancellationToken ct)
    {
        while (await outbox.WaitToReadAsync(ct).ConfigureAwait(false))
        {
            while (outbox.TryRead(out var message))
            {
                XsWireCodec.Write(writer, message);
            }

            var flushed = await writer.FlushAsync(ct).ConfigureAwait(false);
            if (flushed.IsCompleted || flushed.IsCanceled)
            {
                return;
            }
        }
    }

    /// <summary>Stops listening, closes every connection and removes the socket file.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        await stop.CancelAsync().ConfigureAwait(false);
        listener.Dispose();
        await acceptLoop.ConfigureAwait(false);
        await Task.WhenAll(connections.Keys).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
            // Someone else's problem now; the path is not ours to fight over.
        }

        stop.Dispose();
    }
}
