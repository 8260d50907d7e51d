using System.Threading.Channels;
using Paravirt.Core.Domains;

namespace Paravirt.Cli.Host;

/// <summary>
/// A hosted domain's console, as xenconsoled keeps it: one reader of the domain's output
/// (<see cref="PumpAsync"/>, for each boot in turn, so a restarted domain keeps its console) that
/// appends every byte to the log file <c>DIR/guest-NAME.log</c> (if any), to a ring of the most
/// recent output, and to each attached client's queue. A client that attaches gets the ring first,
/// then what follows. A client's queue is bounded: a client that reads too slowly loses output
/// (counted in <see cref="ConsoleClient.DroppedBytes"/>), never the log, the ring, the other clients
/// or the guest, which never waits for any of them. Input from any client goes to the current boot's
/// console, one write at a time.
/// </summary>
internal sealed class ConsoleHub : IDisposable
{
    /// <summary>Recent output kept for clients that attach later.</summary>
    public const int RingBytes = 128 << 10;

    /// <summary>Output a client may have queued and not yet taken before more is dropped for it.</summary>
    public const int ClientBudgetBytes = 1 << 20;

    private readonly Lock _lock = new();
    private readonly byte[] _ring = new byte[RingBytes];
    private readonly List<ConsoleClient> _clients = [];
    private readonly SemaphoreSlim _input = new(1, 1);
    private readonly FileStream? _log;
    private int _ringStart;
    private int _ringLength;
    private bool _closed;
    private volatile Domain? _domain;

    /// <param name="logDirectory">Where <c>guest-NAME.log</c> is appended to, or null for no log.</param>
    /// <exception cref="IOException">The log file cannot be opened.</exception>
    public ConsoleHub(string name, string? logDirectory)
    {
        Name = name;
        if (logDirectory is not null)
        {
            LogPath = Path.Combine(logDirectory, $"guest-{name}.log");
            _log = new FileStream(LogPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        }
    }

    public string Name { get; }

    public string? LogPath { get; }

    /// <summary>Clients attached now.</summary>
    public int ClientCount
    {
        get
        {
            lock (_lock)
            {
                return _clients.Count;
            }
        }
    }

    /// <summary>Reads <paramref name="domain"/>'s console output until the domain is destroyed; input goes to it meanwhile.</summary>
    public async Task PumpAsync(Domain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        _domain = domain;
        var reader = domain.Console.Output;
        while (true)
        {
            var result = await reader.ReadAsync().ConfigureAwait(false);
            foreach (var segment in result.Buffer)
            {
                Append(segment.Span);
            }

            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                await reader.CompleteAsync().ConfigureAwait(false);
                return;
            }
        }
    }

    /// <summary>Appends output (what <see cref="PumpAsync"/> reads) to the log, the ring and every client.</summary>
    internal void Append(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty)
        {
            return;
        }

        if (_log is not null)
        {
            try
            {
                _log.Write(bytes);
                _log.Flush();
            }
            catch (IOException)
            {
                // A full disk costs the log, never the guest.
            }
        }

        var chunk = bytes.ToArray();
        lock (_lock)
        {
            AppendToRingLocked(chunk);
            foreach (var c in _clients)
            {
                c.Offer(chunk);
            }
        }
    }

    private void AppendToRingLocked(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length >= RingBytes)
        {
            bytes[^RingBytes..].CopyTo(_ring);
            _ringStart = 0;
            _ringLength = RingBytes;
            return;
        }

        var end = (_ringStart + _ringLength) % RingBytes;
        var first = Math.Min(bytes.Length, RingBytes - end);
        bytes[..first].CopyTo(_ring.AsSpan(end));
        bytes[first..].CopyTo(_ring);
        var overflow = _ringLength + bytes.Length - RingBytes;
        if (overflow > 0)
        {
            _ringStart = (_ringStart + overflow) % RingBytes;
            _ringLength = RingBytes;
        }
        else
        {
            _ringLength += bytes.Length;
        }
    }

    /// <summary>A new client: the recent output in its backlog, everything after it in its queue.</summary>
    public ConsoleClient Attach()
    {
        lock (_lock)
        {
            var backlog = new byte[_ringLength];
            var first = Math.Min(_ringLength, RingBytes - _ringStart);
            _ring.AsSpan(_ringStart, first).CopyTo(backlog);
            _ring.AsSpan(0, _ringLength - first).CopyTo(backlog.AsSpan(first));
            var client = new ConsoleClient(this, backlog);
            if (_closed)
            {
                client.Complete();
            }
            else
            {
                _clients.Add(client);
            }

            return client;
        }
    }

    internal void Detach(ConsoleClient client)
    {
        lock (_lock)
        {
            _clients.Remove(client);
        }

        client.Complete();
    }

    /// <summary>
    /// Writes input to the current boot's console, one writer at a time; it waits while the guest
    /// has not taken earlier input (<see cref="Core.Console.DomainConsole.InputBufferBytes"/>), and
    /// is dropped when there is no running domain.
    /// </summary>
    public async Task WriteInputAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        await _input.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_domain is { State: DomainState.Running or DomainState.Paused or DomainState.Created } dom)
            {
                await dom.Console.Input.WriteAsync(bytes, ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException or IOException)
        {
            // The console went with its domain.
        }
        finally
        {
            _input.Release();
        }
    }

    /// <summary>The domain is gone for good: every client's output ends after what it has queued.</summary>
    public void Close()
    {
        ConsoleClient[] clients;
        lock (_lock)
        {
            _closed = true;
            clients = [.. _clients];
            _clients.Clear();
        }

        foreach (var c in clients)
        {
            c.Complete();
        }
    }

    public void Dispose()
    {
        Close();
        _log?.Dispose();
        _input.Dispose();
    }
}

/// <summary>One attached console client: the backlog, then its queue of output until it detaches or the domain is gone.</summary>
internal sealed class ConsoleClient : IDisposable
{
    private readonly ConsoleHub _hub;
    private readonly Channel<byte[]> _queue = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
    private long _queuedBytes;
    private long _dropped;

    internal ConsoleClient(ConsoleHub hub, byte[] backlog)
    {
        _hub = hub;
        Backlog = backlog;
    }

    /// <summary>The recent output when the client attached.</summary>
    public byte[] Backlog { get; }

    /// <summary>Output bytes dropped for this client because it read too slowly.</summary>
    public long DroppedBytes => Interlocked.Read(ref _dropped);

    /// <summary>Waits for the next output; null once the domain is gone (or the client detached) and the queue is empty.</summary>
    public async ValueTask<byte[]?> NextAsync(CancellationToken ct)
    {
        while (await _queue.Reader.WaitToReadAsync(ct).ConfigureAwait(false))
        {
            if (_queue.Reader.TryRead(out var chunk))
            {
                Interlocked.Add(ref _queuedBytes, -chunk.Length);
                return chunk;
            }
        }

        return null;
    }

    internal void Offer(byte[] chunk)
    {
        if (Interlocked.Read(ref _queuedBytes) + chunk.Length > ConsoleHub.ClientBudgetBytes)
        {
            Interlocked.Add(ref _dropped, chunk.Length);
            return;
        }

        Interlocked.Add(ref _queuedBytes, chunk.Length);
        _queue.Writer.TryWrite(chunk);
    }

    internal void Complete() => _queue.Writer.TryComplete();

    public void Dispose() => _hub.Detach(this);
}
