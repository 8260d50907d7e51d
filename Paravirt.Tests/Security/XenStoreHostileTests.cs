using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;
using Paravirt.Tests.XenStore;
using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.Security;

/// <summary>Clients that break the protocol or push limits hurt only themselves.</summary>
public sealed class XenStoreHostileTests : IAsyncLifetime
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly string dir = Directory.CreateTempSubdirectory("pv-xsh-").FullName;
    private XenStoreSocketServer server = null!;

    public ValueTask InitializeAsync()
    {
        server = XenStoreSocketServer.Start(Path.Combine(dir, "socket"));
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>A raw socket client reading whole messages.</summary>
    private sealed class RawClient : IDisposable
    {
        private readonly Socket socket = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        private readonly byte[] buffer = new byte[64 * 1024];
        private int filled;

        public RawClient(string path) => socket.Connect(new UnixDomainSocketEndPoint(path));

        public Task Send(byte[] bytes) => socket.SendAsync(bytes.AsMemory()).AsTask();

        public Task Send(XsMessage m) => Send(XsWireCodec.Encode(m));

        public async Task<XsMessage?> Receive()
        {
            using var cts = new CancellationTokenSource(Wait);
            while (true)
            {
                var seq = new ReadOnlySequence<byte>(buffer, 0, filled);
                if (XsWireCodec.TryRead(ref seq, out var m) == XsReadStatus.Message)
                {
                    var used = filled - (int)seq.Length;
                    Array.Copy(buffer, used, buffer, 0, filled - used);
                    filled -= used;
                    return m;
                }

                var n = await socket.ReceiveAsync(buffer.AsMemory(filled), cts.Token);
                if (n == 0)
                {
                    return null; // closed by the server
                }

                filled += n;
            }
        }

        public void Dispose() => socket.Dispose();
    }

    private RawClient Client() => new(server.SocketPath);

    private static byte[] Header(uint type, uint req, uint len)
    {
        var h = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(h, type);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), req);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(12), len);
        return h;
    }

    private static async Task ExpectReadWorks(RawClient c, uint req)
    {
        await c.Send(XsMessage.Strings(XS_READ, req, 0, "/tool"));
        var r = await c.Receive();
        r.Should().NotBeNull();
        r!.Value.ReqId.Should().Be(req);
        r.Value.Kind.Should().Be(XS_READ);
    }

    [Fact]
    public async Task An_Over_Long_Payload_Closes_That_Connection_Only()
    {
        using var bad = Client();
        using var good = Client();
        await bad.Send(Header((uint)XS_WRITE, 1, XsWire.XENSTORE_PAYLOAD_MAX + 1));
        (await bad.Receive()).Should().BeNull("xenstored drops a client that announces more than XENSTORE_PAYLOAD_MAX");
        await ExpectReadWorks(good, 2);
    }

    [Fact]
    public async Task A_Stalled_Half_Header_Does_Not_Block_Others()
    {
        using var stalled = Client();
        using var good = Client();
        await stalled.Send(Header((uint)XS_READ, 1, 6)[..7]);
        await ExpectReadWorks(good, 5);
        await good.Send(XsMessage.Strings(XS_WRITE, 6, 0, "/after", "x"));
        (await good.Receive())!.Value.Kind.Should().Be(XS_WRITE);

        // The stalled client finishes its message later and is served then.
        await stalled.Send([.. Header((uint)XS_READ, 1, 7)[7..], .. "/after\0"u8.ToArray()]);
        var late = await stalled.Receive();
        late!.Value.Payload.Should().Equal("x\0"u8.ToArray());
    }

    [Fact]
    public async Task An_Unknown_Type_Gets_An_Error_And_The_Connection_Goes_On()
    {
        using var c = Client();
        await c.Send(new XsMessage(12345u, 9, 0, []));
        var r = await c.Receive();
        r!.Value.Kind.Should().Be(XS_ERROR);
        r.Value.ReqId.Should().Be(9);
        r.Value.Payload.Should().Equal("ENOSYS\0"u8.ToArray());
        await ExpectReadWorks(c, 10);
    }

    [Fact]
    public async Task A_Missing_Nul_Gets_Einval()
    {
        using var c = Client();
        await c.Send(new XsMessage(XS_READ, 3, 0, "/tool"u8.ToArray()));
        (await c.Receive())!.Value.Payload.Should().Equal("EINVAL\0"u8.ToArray());
    }

    [Fact]
    public async Task A_Reused_Req_Id_Is_Answered_Twice_In_Order()
    {
        using var c = Client();
        await c.Send([.. XsWireCodec.Encode(XsMessage.Strings(XS_READ, 4, 0, "/nope")), .. XsWireCodec.Encode(XsMessage.Strings(XS_READ, 4, 0, "/tool"))]);
        var first = await c.Receive();
        var second = await c.Receive();
        (first!.Value.ReqId, second!.Value.ReqId).Should().Be((4u, 4u));
        first.Value.Kind.Should().Be(XS_ERROR);
        second.Value.Kind.Should().Be(XS_READ);
    }

    [Fact]
    public async Task Watch_Events_Reach_Another_Connection_With_Req_Id_0()
    {
        using var watcher = Client();
        using var writer = Client();
        await watcher.Send(XsMessage.Strings(XS_WATCH, 1, 0, "/w", "tok"));
        (await watcher.Receive())!.Value.Kind.Should().Be(XS_WATCH);
        var initial = await watcher.Receive();
        initial!.Value.Kind.Should().Be(XS_WATCH_EVENT);
        initial.Value.ReqId.Should().Be(0);

        await writer.Send(XsMessage.Strings(XS_WRITE, 2, 0, "/w/x", "1"));
        (await writer.Receive())!.Value.Kind.Should().Be(XS_WRITE);
        var ev = await watcher.Receive();
        ev!.Value.Kind.Should().Be(XS_WATCH_EVENT);
        ev.Value.Payload.Should().Equal("/w/x\0tok\0"u8.ToArray());
    }

    [Fact]
    public async Task A_Watch_Flood_From_One_Client_Is_Delivered_In_Order()
    {
        using var watcher = Client();
        using var writer = Client();
        await watcher.Send(XsMessage.Strings(XS_WATCH, 1, 0, "/flood", "t"));
        await watcher.Receive();
        await watcher.Receive();
        var burst = Enumerable.Range(0, 500)
            .SelectMany(i => XsWireCodec.Encode(XsMessage.Strings(XS_WRITE, (uint)i + 1, 0, $"/flood/n{i}", "v"))).ToArray();
        await writer.Send(burst);
        for (var i = 0; i < 500; i++)
        {
            var ev = await watcher.Receive();
            ev!.Value.Payload.Should().Equal(XsWireCodec.JoinStrings($"/flood/n{i}", "t"));
        }

        for (var i = 0; i < 500; i++)
        {
            (await writer.Receive())!.Value.ReqId.Should().Be((uint)i + 1);
        }
    }

    [Fact]
    public async Task A_Watcher_That_Never_Reads_Holds_Up_Neither_The_Writer_Nor_The_Server()
    {
        // The watcher's events pile up far beyond what the socket buffers hold (2,000 events of
        // ~2 KiB), so its sends block; the writer's own replies must still all arrive, and the
        // server must still shut down (DisposeAsync in the fixture) within its bounded wait.
        using var watcher = Client();
        using var writer = Client();
        await watcher.Send(XsMessage.Strings(XS_WATCH, 1, 0, "/stall", new string('t', 2000)));
        (await watcher.Receive())!.Value.Kind.Should().Be(XS_WATCH);
        const int Writes = 2000;
        var burst = Enumerable.Range(0, Writes)
            .SelectMany(i => XsWireCodec.Encode(XsMessage.Strings(XS_WRITE, (uint)i + 1, 0, "/stall/x", "v"))).ToArray();
        var sending = writer.Send(burst);
        for (var i = 0; i < Writes; i++)
        {
            var reply = await writer.Receive();
            reply.Should().NotBeNull($"reply {i + 1} of {Writes} must arrive while the watcher is stalled");
            reply!.Value.ReqId.Should().Be((uint)i + 1);
            reply.Value.Kind.Should().Be(XS_WRITE);
        }

        await sending;
        await ExpectReadWorks(writer, Writes + 1);
    }

    [Fact]
    public void A_Guest_Watch_Flood_Stops_At_The_Quota()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        var refused = 0;
        for (var i = 0; i < 1000; i++)
        {
            if (xs.Send(guest, XS_WATCH, "/", $"t{i}").Error == "E2BIG")
            {
                refused++;
            }
        }

        refused.Should().Be(1000 - 129);
        xs.State.Connections[guest].Watches.Should().HaveCount(129);
    }

    [Fact]
    public void A_Guest_Writing_Outside_Its_Subtree_Changes_Nothing()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        xs.Guest(dom0, 6);
        var before = xs.State;
        foreach (var path in new[] { "/local/domain/6/device", "/local/domain/0/x", "/tool/xenstored/x", "/vm/x", "/local/x" })
        {
            xs.Write(guest, path, "pwned").Error.Should().Be("EACCES", path);
            xs.Send(guest, XS_RM, path).Error.Should().Be("EACCES", path);
            xs.Send(guest, XS_SET_PERMS, path, "b5").Error.Should().Be("EACCES", path);
        }

        xs.State.Nodes.Should().BeSameAs(before.Nodes);
    }

    [Fact]
    public void Ten_Thousand_Nodes_Work_For_Dom0_And_Stop_At_The_Quota_For_A_Guest()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        for (var i = 0; i < 10_000; i++)
        {
            xs.Send(dom0, XS_MKDIR, $"/big/d{i % 100}/n{i}").Error.Should().BeNull();
        }

        xs.State.Nodes.Should().HaveCountGreaterThan(10_100);
        xs.Send(dom0, XS_DIRECTORY, "/big/d7").Strings.Should().HaveCount(100);
        xs.MustOk(xs.Send(dom0, XS_RM, "/big"));
        xs.State.Nodes.Keys.Should().NotContain(k => k.StartsWith("/big", StringComparison.Ordinal));

        var guest = xs.Guest(dom0, 5);
        var refused = 0;
        for (var i = 0; i < 10_000; i++)
        {
            if (xs.Send(guest, XS_MKDIR, $"d{i % 20}/n{i}").Error is not null)
            {
                refused++;
            }
        }

        xs.State.EntriesOf(5).Should().Be(1000);
        refused.Should().Be(10_000 - (1000 - 1 - 20));
    }
}
