using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using BenchmarkDotNet.Attributes;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;

namespace Paravirt.Benchmarks.XenStore;

/// <summary>
/// 16 pipelined XS_READs over the XenStore Unix socket (<see cref="XenStoreSocketServer"/>): one
/// send of all 16 requests, then every reply read. Beside it, the same bytes against a raw
/// Unix-socket server of our own that answers each complete request with the reply XenStore gave
/// it (captured at setup): the transport's floor. Target: ≤ 2×.
/// </summary>
[MemoryDiagnoser]
public class XenStoreSocketBenchmarks
{
    public const int Pipelined = 16;
    private const int HeaderSize = 16;

    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"paravirt-bench-{Environment.ProcessId}-{Guid.NewGuid():N}");
    private XenStoreSocketServer _server = null!;
    private Socket _store = null!;
    private Socket _echo = null!;
    private EchoServer _echoServer = null!;
    private byte[] _requests = null!;
    private byte[] _replies = null!;
    private byte[] _buffer = null!;

    [GlobalSetup]
    public void Setup()
    {
        Directory.CreateDirectory(_dir);
        _server = XenStoreSocketServer.Start(Path.Combine(_dir, "xenstored.sock"));
        _store = Connect(_server.SocketPath);

        // A key to read: XS_WRITE "/bench" = 32 bytes of value.
        var write = Message(xsd_sockmsg_type.XS_WRITE, 1000, "/bench\0" + new string('v', 32));
        _store.Send(write);
        var ack = new byte[256];
        ReceiveExactly(_store, ack.AsSpan(0, HeaderSize));
        ReceiveExactly(_store, ack.AsSpan(0, (int)BinaryPrimitives.ReadUInt32LittleEndian(ack.AsSpan(12))));

        using (var batch = new MemoryStream())
        {
            for (var i = 0; i < Pipelined; i++)
            {
                batch.Write(Message(xsd_sockmsg_type.XS_READ, (uint)i, "/bench\0"));
            }

            _requests = batch.ToArray();
        }

        // Capture XenStore's replies to one batch: these are the bytes the echo server answers with.
        _store.Send(_requests);
        using (var replies = new MemoryStream())
        {
            var header = new byte[HeaderSize];
            for (var i = 0; i < Pipelined; i++)
            {
                ReceiveExactly(_store, header);
                var type = (xsd_sockmsg_type)BinaryPrimitives.ReadUInt32LittleEndian(header);
                var payload = new byte[BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12))];
                ReceiveExactly(_store, payload);
                if (type != xsd_sockmsg_type.XS_READ || payload.Length != 32)
                {
                    throw new InvalidOperationException($"reply {i} is {type} with {payload.Length} bytes; expected XS_READ with the 32-byte value");
                }

                replies.Write(header);
                replies.Write(payload);
            }

            _replies = replies.ToArray();
        }

        _buffer = new byte[_replies.Length];
        _echoServer = new EchoServer(Path.Combine(_dir, "echo.sock"), _replies, Pipelined);
        _echo = Connect(_echoServer.SocketPath);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.Dispose();
        _echo.Dispose();
        _echoServer.Dispose();
        _server.DisposeAsync().AsTask().Wait();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(Baseline = true)]
    public int RawSocketEcho() => RoundTrip(_echo);

    [Benchmark]
    public int XenStoreRead16() => RoundTrip(_store);

    private int RoundTrip(Socket socket)
    {
        socket.Send(_requests);
        ReceiveExactly(socket, _buffer);
        return _buffer[^1];
    }

    private static Socket Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        return socket;
    }

    private static void ReceiveExactly(Socket socket, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            var n = socket.Receive(buffer);
            if (n == 0)
            {
                throw new IOException("the server closed the connection");
            }

            buffer = buffer[n..];
        }
    }

    private static byte[] Message(xsd_sockmsg_type type, uint reqId, string payload)
    {
        var bytes = Encoding.ASCII.GetBytes(payload);
        var message = new byte[HeaderSize + bytes.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)type);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), reqId);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(12), (uint)bytes.Length);
        bytes.CopyTo(message, HeaderSize);
        return message;
    }

    /// <summary>
    /// The baseline server: one thread, one client; for each complete request message received it
    /// sends the next captured reply, all replies for one received chunk in one send.
    /// </summary>
    private sealed class EchoServer : IDisposable
    {
        private readonly Socket _listener;
        private readonly Thread _thread;
        private readonly byte[] _replies;
        private readonly int[] _replyStarts;
        private Socket? _client;

        public EchoServer(string path, byte[] replies, int count)
        {
            SocketPath = path;
            _replies = replies;
            _replyStarts = new int[count + 1];
            for (int i = 0, at = 0; i <= count; i++)
            {
                _replyStarts[i] = at;
                if (i < count)
                {
                    at += HeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(replies.AsSpan(at + 12));
                }
            }

            _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            _listener.Bind(new UnixDomainSocketEndPoint(path));
            _listener.Listen(1);
            _thread = new Thread(Serve) { IsBackground = true, Name = "echo-server" };
            _thread.Start();
        }

        public string SocketPath { get; }

        public void Dispose()
        {
            _listener.Dispose();
            _client?.Dispose();
            _thread.Join(TimeSpan.FromSeconds(5));
        }

        private void Serve()
        {
            try
            {
                _client = _listener.Accept();
                var buffer = new byte[64 * 1024];
                int have = 0, next = 0;
                var count = _replyStarts.Length - 1;
                while (true)
                {
                    var n = _client.Receive(buffer.AsSpan(have));
                    if (n == 0)
                    {
                        return;
                    }

                    have += n;
                    var at = 0;
                    var first = next;
                    while (have - at >= HeaderSize)
                    {
                        var length = HeaderSize + (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(at + 12));
                        if (have - at < length)
                        {
                            break;
                        }

                        at += length;
                        next++;
                    }

                    buffer.AsSpan(at, have - at).CopyTo(buffer);
                    have -= at;
                    SendReplies(first, next);
                    next %= count;
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // The benchmark closed the connection.
            }

            void SendReplies(int from, int to)
            {
                var count = _replyStarts.Length - 1;
                while (from < to)
                {
                    var start = from % count;
                    var end = Math.Min(count, start + (to - from));
                    _client!.Send(_replies.AsSpan(_replyStarts[start], _replyStarts[end] - _replyStarts[start]));
                    from += end - start;
                }
            }
        }
    }
}
