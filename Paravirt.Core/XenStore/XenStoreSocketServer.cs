using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using Paravirt.Core.Abi.Io;

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
        var outbox = new Outbox(stream);
        var id = Store.Connect(0, outbox.Add);
        using var writerStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var flusher = outbox.FlushOnKickAsync(writerStop.Token);

        // Each request's payload is copied here and processed before the next is read.
        var payload = new byte[XsWire.XENSTORE_PAYLOAD_MAX];
        try
        {
            while (true)
            {
                var read = await reader.ReadAsync(ct).ConfigureAwait(false);
                var buffer = read.Buffer;
                XsReadStatus status;
                outbox.Submitting = true;
                while ((status = XsWireCodec.TryRead(ref buffer, payload, out var header, out var length)) == XsReadStatus.Message)
                {
                    Store.Submit(id, header, payload.AsSpan(0, length));
                }

                outbox.Submitting = false;
                reader.AdvanceTo(buffer.Start, buffer.End);

                // Every reply to what was just read goes out in one send, from this thread: no hop
                // to a writer task between a request and its reply.
                await outbox.FlushAsync(ct).ConfigureAwait(false);
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
            outbox.Complete();
            try
            {
                // What is still queued goes out, unless the client has stopped reading: then it is
                // dropped with the connection after a bounded wait.
                await flusher.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
                await outbox.FlushAsync(writerStop.Token).WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                await writerStop.CancelAsync().ConfigureAwait(false);
            }

            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A connection's outgoing bytes. The store calls <see cref="Add"/> under its lock, for replies
    /// (from this connection's own reader, which then flushes) and for watch events (from whichever
    /// connection's request fired them, which kicks the flusher task instead). Sends are serialized
    /// by one async mutex; between sends, messages collect in a buffer and leave in one write.
    /// </summary>
    private sealed class Outbox(NetworkStream stream)
    {
        private readonly Lock gate = new();
        private readonly SemaphoreSlim sending = new(1, 1);
        private readonly Channel<bool> kick = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
        {
            FullMode = BoundedChannelFullMode.DropWrite,
            SingleReader = true,
        });

        private ArrayBufferWriter<byte> pending = new(4096);
        private ArrayBufferWriter<byte> spare = new(4096);

        /// <summary>Set by the connection's reader while it submits a batch; it flushes right after.</summary>
        public bool Submitting
        {
            get => Volatile.Read(ref submitting);
            set => Volatile.Write(ref submitting, value);
        }

        private bool submitting;

        public void Add(XsMessage message)
        {
            bool ownBatch;
            lock (gate)
            {
                XsWireCodec.Write(pending, message);

                // Read under the lock: if the reader has finished its batch, its flush may already
                // have taken the buffer, so this message needs the flusher.
                ownBatch = Submitting;
            }

            if (!ownBatch)
            {
                kick.Writer.TryWrite(true);
            }
        }

        public void Complete() => kick.Writer.TryComplete();

        public async Task FlushOnKickAsync(CancellationToken ct)
        {
            try
            {
                while (await kick.Reader.WaitToReadAsync(ct).ConfigureAwait(false))
                {
                    kick.Reader.TryRead(out _);
                    await FlushAsync(ct).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                // Stopping, or the client went away.
            }
        }

        /// <summary>Sends everything added so far.</summary>
        public async Task FlushAsync(CancellationToken ct)
        {
            await sending.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                while (true)
                {
                    ArrayBufferWriter<byte> batch;
                    lock (gate)
                    {
                        if (pending.WrittenCount == 0)
                        {
                            return;
                        }

                        batch = pending;
                        pending = spare;
                        spare = batch;
                    }

                    // Only the holder of `sending` touches `spare` (now `batch`) outside the lock.
                    await stream.WriteAsync(batch.WrittenMemory, ct).ConfigureAwait(false);
                    batch.ResetWrittenCount();
                }
            }
            finally
            {
                sending.Release();
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
