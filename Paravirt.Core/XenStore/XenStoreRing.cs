using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.XenStore;

/// <summary>
/// One domain's connection to the store over its xenstore page (<c>xenstore_domain_interface</c>),
/// as xenstored's domain connections: requests are read from <c>req</c> and processed as the domain
/// (unprivileged), replies and watch events written to <c>rsp</c>; the event channel is notified
/// after either ring moves and wakes the connection when the guest notifies.
/// A bad ring (indices more than a ring apart) or a header announcing more than 4096 bytes makes
/// the store ignore the connection, as xenstored's ignore_connection: the page's <c>error</c> field
/// says why, watches and transactions go, nothing more is read or written; the domain itself runs on.
/// </summary>
internal sealed class XenStoreRing : IDisposable
{
    private static readonly int ErrorOffset = (int)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.error));
    private static readonly int FeaturesOffset = (int)Marshal.OffsetOf<xenstore_domain_interface>(nameof(xenstore_domain_interface.server_features));

    private readonly XenStoreServer server;
    private readonly PinnedPage page;
    private readonly HostEventChannel channel;
    private readonly ByteRing requests;
    private readonly ByteRing responses;
    private readonly int quota;
    private readonly Lock gate = new();
    private readonly Lock outboxGate = new();
    // Encoded messages waiting for room in the response ring, in arrays from the shared pool (given
    // back once written), so a served request allocates nothing.
    private readonly Queue<(byte[] Bytes, int Length)> outbox = new();
    private readonly SemaphoreSlim kick = new(0);
    private readonly CancellationTokenSource stop = new();
    private readonly byte[] header = new byte[XsWireCodec.HeaderSize];
    private int headerUsed;
    private readonly byte[] body = new byte[XsWire.XENSTORE_PAYLOAD_MAX];
    private int bodyLength;
    private int bodyUsed;
    private int outboxOffset;
    private int kicked;
    private bool ignored;
    private bool disposed;
    private Task pump = Task.CompletedTask;

    private XenStoreRing(XenStoreServer server, Domain domain, PinnedPage page, HostEventChannel channel)
    {
        this.server = server;
        this.page = page;
        this.channel = channel;
        Domain = domain;
        var memory = page.AsMemory();
        requests = ByteRing.XenStoreRequests(memory);
        responses = ByteRing.XenStoreResponses(memory);
        quota = server.State.Quotas.OutstandingRequests;
        page.At<uint>(FeaturesOffset) = XsWire.XENSTORE_SERVER_FEATURE_ERROR;
        ConnectionId = server.Connect(domain.Id, Enqueue);
    }

    public Domain Domain { get; }

    public uint ConnectionId { get; }

    /// <summary>Why the store stopped serving this ring (a XENSTORE_ERROR_*), or 0 while it serves.</summary>
    public uint Error { get; private set; }

    /// <summary>The pump's task (tests: it ends when the connection is ignored or disposed).</summary>
    public Task Pump => pump;

    /// <summary>Pins the store frame and binds the guest's store port, which the builder allocated for domain 0.</summary>
    public static XenStoreRing Open(HostXenStore store, Domain domain, ulong storeMfn, uint guestPort)
    {
        var page = PinnedPage.TryPin(domain.Hypervisor.Frames, storeMfn, domain.Id)
            ?? throw new InvalidOperationException($"domain {domain.Id}: its xenstore frame {storeMfn:x} is not its own");
        try
        {
            var channel = domain.Hypervisor.Host.BindInterdomain(domain, guestPort);
            return new XenStoreRing(store.Server, domain, page, channel);
        }
        catch
        {
            page.Dispose();
            throw;
        }
    }

    public void Start() => pump = Task.Run(RunAsync);

    // Called by the store under its lock: queue only.
    private void Enqueue(XsMessage message)
    {
        var length = XsWireCodec.EncodedLength(message);
        var bytes = ArrayPool<byte>.Shared.Rent(length);
        XsWireCodec.Encode(message, bytes);
        lock (outboxGate)
        {
            outbox.Enqueue((bytes, length));
        }

        if (Interlocked.Exchange(ref kicked, 1) == 0)
        {
            kick.Release();
        }
    }

    private int Outstanding
    {
        get
        {
            lock (outboxGate)
            {
                return outbox.Count;
            }
        }
    }

    private async Task RunAsync()
    {
        Task<bool>? guestWait = null;
        Task? kickWait = null;
        var ct = stop.Token;
        try
        {
            while (true)
            {
                Volatile.Write(ref kicked, 0);
                bool notify;
                lock (gate)
                {
                    if (disposed || ignored)
                    {
                        return;
                    }

                    notify = Service();
                }

                if (notify)
                {
                    try
                    {
                        channel.Notify();
                    }
                    catch (XenException)
                    {
                        // The guest's end is gone (it is being destroyed); nothing to tell.
                    }
                }

                if (ignored)
                {
                    return;
                }

                guestWait ??= channel.WaitAsync(ct).AsTask();
                kickWait ??= kick.WaitAsync(ct);
                var done = await Task.WhenAny(guestWait, kickWait).ConfigureAwait(false);
                if (done == guestWait)
                {
                    if (!await guestWait.ConfigureAwait(false))
                    {
                        return; // our end was closed
                    }

                    guestWait = null;
                }
                else
                {
                    await kickWait.ConfigureAwait(false);
                    kickWait = null;
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    /// <summary>Moves what can move: replies out, requests in (up to the outstanding quota). True if either ring moved.</summary>
    private bool Service()
    {
        var moved = Flush();
        while (!ignored && Outstanding < quota)
        {
            if (headerUsed < header.Length)
            {
                var n = requests.Read(header.AsSpan(headerUsed));
                if (n < 0)
                {
                    Ignore(XsWire.XENSTORE_ERROR_RINGIDX);
                    return true;
                }

                moved |= n > 0;
                headerUsed += n;
                if (headerUsed < header.Length)
                {
                    break;
                }

                var len = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12));
                if (len > XsWire.XENSTORE_PAYLOAD_MAX)
                {
                    Ignore(XsWire.XENSTORE_ERROR_PROTO);
                    return true;
                }

                bodyLength = (int)len;
                bodyUsed = 0;
            }

            if (bodyUsed < bodyLength)
            {
                var n = requests.Read(body.AsSpan(bodyUsed, bodyLength - bodyUsed));
                if (n < 0)
                {
                    Ignore(XsWire.XENSTORE_ERROR_RINGIDX);
                    return true;
                }

                moved |= n > 0;
                bodyUsed += n;
                if (bodyUsed < bodyLength)
                {
                    break;
                }
            }

            // The request was copied out of the shared ring into our own buffer once; the store
            // parses only that copy.
            var request = new XsHeader(
                BinaryPrimitives.ReadUInt32LittleEndian(header),
                BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4)),
                BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8)));
            headerUsed = 0;
            server.Submit(ConnectionId, request, body.AsSpan(0, bodyLength));
            moved |= Flush();
        }

        return Flush() | moved;
    }

    private bool Flush()
    {
        var moved = false;
        while (!ignored)
        {
            (byte[] Bytes, int Length) front;
            lock (outboxGate)
            {
                if (!outbox.TryPeek(out front))
                {
                    break;
                }
            }

            var n = responses.Write(front.Bytes.AsSpan(outboxOffset, front.Length - outboxOffset));
            if (n < 0)
            {
                Ignore(XsWire.XENSTORE_ERROR_RINGIDX);
                return true;
            }

            if (n == 0)
            {
                break;
            }

            moved = true;
            outboxOffset += n;
            if (outboxOffset == front.Length)
            {
                outboxOffset = 0;
                lock (outboxGate)
                {
                    outbox.Dequeue();
                }

                ArrayPool<byte>.Shared.Return(front.Bytes);
            }
        }

        return moved;
    }

    private void Ignore(int error)
    {
        ignored = true;
        Error = (uint)error;
        page.At<uint>(ErrorOffset) = (uint)error;
        server.Disconnect(ConnectionId);
        lock (outboxGate)
        {
            outbox.Clear();
        }
    }

    /// <summary>Stops serving (bounded wait for the pump), disconnects, unbinds and unpins.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
        }

        stop.Cancel();
        try
        {
            pump.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
            // A pump that failed has stopped serving already; tearing down goes on.
        }

        server.Disconnect(ConnectionId);
        channel.Dispose();
        lock (gate)
        {
            page.Dispose();
        }

        stop.Dispose();
        kick.Dispose();
    }
}
