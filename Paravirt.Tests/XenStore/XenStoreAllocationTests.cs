using System.Buffers;
using System.Text;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;
using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>
/// The store's hot path in the steady state, as a transport drives it: parse a request from the
/// bytes it received into a reused buffer, submit it, encode the reply into a reused buffer.
/// A served READ allocates nothing, and a refused request costs no exception.
/// </summary>
public sealed class XenStoreAllocationTests
{
    private const int Warm = 200;
    private const int Measured = 2_000;

    /// <summary>A connection whose sink encodes into one reused buffer, as the socket transport's outbox does.</summary>
    private sealed class Client
    {
        private readonly XenStoreServer server;
        private readonly ArrayBufferWriter<byte> replies = new(8192);
        private readonly byte[] payload = new byte[XsWire.XENSTORE_PAYLOAD_MAX];
        private int lastAt;

        public Client(XenStoreServer server, uint domid)
        {
            this.server = server;
            Id = server.Connect(domid, m => XsWireCodec.Write(replies, m));
        }

        public uint Id { get; }

        public uint LastType { get; private set; }

        public int LastPayloadLength { get; private set; }

        /// <summary>Submits every message in <paramref name="wire"/> and notes the last reply. Allocates nothing itself.</summary>
        public void Serve(byte[] wire)
        {
            replies.ResetWrittenCount();
            var buffer = new ReadOnlySequence<byte>(wire);
            while (XsWireCodec.TryRead(ref buffer, payload, out var header, out var length) == XsReadStatus.Message)
            {
                server.Submit(Id, header, payload.AsSpan(0, length));
            }

            // The last reply: walk the headers.
            var written = replies.WrittenSpan;
            var at = 0;
            while (true)
            {
                var next = at + XsWireCodec.HeaderSize + BitConverter.ToInt32(written[(at + 12)..]);
                if (next >= written.Length)
                {
                    break;
                }

                at = next;
            }

            lastAt = at;
            LastType = BitConverter.ToUInt32(written[at..]);
            LastPayloadLength = BitConverter.ToInt32(written[(at + 12)..]);
        }

        public XsMessage Call(xsd_sockmsg_type type, params string[] args)
        {
            Serve(XsWireCodec.Encode(XsMessage.Strings(type, 1, 0, args)));
            return XsWireCodec.Decode(replies.WrittenSpan);
        }

        public void MustOk(xsd_sockmsg_type type, params string[] args) =>
            Call(type, args).Kind.Should().Be(type, $"{type} {string.Join(' ', args)} should succeed");

        /// <summary>The last reply's payload as text.</summary>
        public string ReplyText => Encoding.Latin1.GetString(replies.WrittenSpan[(lastAt + XsWireCodec.HeaderSize)..]);
    }

    private static byte[] Reads(params string[] paths) =>
        [.. paths.SelectMany((p, i) => XsWireCodec.Encode(XsMessage.Strings(XS_READ, (uint)i, 0, p)))];

    /// <summary>Bytes this thread allocated while <paramref name="serve"/> ran <see cref="Measured"/> times after <see cref="Warm"/> warm-up runs.</summary>
    private static long AllocatedPerRun(Action serve)
    {
        for (var i = 0; i < Warm; i++)
        {
            serve();
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Measured; i++)
        {
            serve();
        }

        return (GC.GetAllocatedBytesForCurrentThread() - before) / Measured;
    }

    private static (XenStoreServer Server, Client Dom0, Client Guest) Store(XsQuotas? quotas = null)
    {
        var server = new XenStoreServer(quotas);
        var dom0 = new Client(server, 0);
        dom0.MustOk(XS_WRITE, "/local/domain/7/data/key", new string('v', 32));
        dom0.MustOk(XS_SET_PERMS, "/local/domain/7", "n7");
        dom0.MustOk(XS_SET_PERMS, "/local/domain/7/data", "n7");
        dom0.MustOk(XS_SET_PERMS, "/local/domain/7/data/key", "n7");
        dom0.MustOk(XS_WRITE, "/secret", "s");
        return (server, dom0, new Client(server, 7));
    }

    [Fact]
    public void A_Served_Read_Allocates_Nothing_In_The_Steady_State()
    {
        var (_, dom0, guest) = Store();

        // 16 pipelined reads as the benchmark sends them: absolute paths from dom0, relative and
        // absolute ones from an unprivileged guest (permission checks, canonicalization).
        var fromDom0 = Reads([.. Enumerable.Repeat("/local/domain/7/data/key", 16)]);
        var fromGuest = Reads([.. Enumerable.Range(0, 16).Select(i => i % 2 == 0 ? "data/key" : "/local/domain/7/data/key")]);

        AllocatedPerRun(() => dom0.Serve(fromDom0)).Should().Be(0, "16 READs served to dom0 allocate nothing once warm");
        dom0.LastType.Should().Be((uint)XS_READ);
        dom0.LastPayloadLength.Should().Be(33, "the 32-byte value and the NUL the test wrote with it");

        AllocatedPerRun(() => guest.Serve(fromGuest)).Should().Be(0, "16 READs served to a guest allocate nothing once warm");
        guest.LastType.Should().Be((uint)XS_READ);
        guest.LastPayloadLength.Should().Be(33, "the 32-byte value and the NUL the test wrote with it");
    }

    [Fact]
    public void A_Refused_Read_Allocates_Nothing_In_The_Steady_State()
    {
        var (_, _, guest) = Store();
        var refused = Reads("/secret", "data/missing", "/local/domain/7/data/missing/deeper", "not valid!");

        AllocatedPerRun(() => guest.Serve(refused)).Should().Be(0, "EACCES, ENOENT and EINVAL replies are prebuilt");
        guest.LastType.Should().Be((uint)XS_ERROR);
        guest.ReplyText.Should().Be("EINVAL\0");
    }

    [Fact]
    public void Refused_Requests_Throw_No_Exception_Inside_The_Store()
    {
        var (_, _, guest) = Store(XsQuotas.Default with { EntriesPerDomain = 4 });
        var thread = Environment.CurrentManagedThreadId;
        var thrown = new List<string>();
        void Count(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
        {
            if (Environment.CurrentManagedThreadId == thread)
            {
                lock (thrown)
                {
                    thrown.Add(e.Exception.GetType().Name + ": " + e.Exception.Message);
                }
            }
        }

        guest.MustOk(XS_WRITE, "data/fill", "x"); // the guest now owns 4 nodes: its quota
        (string What, XsMessage Request, string Error)[] refusals =
        [
            ("read of a node it may not read", XsMessage.Strings(XS_READ, 1, 0, "/secret"), "EACCES"),
            ("read of a missing node", XsMessage.Strings(XS_READ, 2, 0, "data/none"), "ENOENT"),
            ("read of a bad path", XsMessage.Strings(XS_READ, 3, 0, "a//b"), "EINVAL"),
            ("write over its node quota", XsMessage.Strings(XS_WRITE, 4, 0, "data/more", "x"), "ENOSPC"),
            ("write where it may not", XsMessage.Strings(XS_WRITE, 5, 0, "/secret", "x"), "EACCES"),
            ("mkdir over quota", XsMessage.Strings(XS_MKDIR, 6, 0, "data/d"), "ENOSPC"),
            ("rm of a missing parent", XsMessage.Strings(XS_RM, 7, 0, "data/no/such"), "ENOENT"),
            ("privileged op", XsMessage.Strings(XS_INTRODUCE, 8, 0, "9", "1", "1"), "EACCES"),
            ("unknown type", new XsMessage(12345u, 9, 0, []), "ENOSYS"),
            ("unknown transaction", new XsMessage(XS_READ, 10, 77, XsWireCodec.String("data/key")), "ENOENT"),
            ("unwatch of no watch", XsMessage.Strings(XS_UNWATCH, 11, 0, "data", "t"), "ENOENT"),
            ("set_perms giving a node away", XsMessage.Strings(XS_SET_PERMS, 12, 0, "data/key", "n3"), "EPERM"),
            ("transaction end without one", XsMessage.Strings(XS_TRANSACTION_END, 13, 0, "T"), "ENOENT"),
        ];

        AppDomain.CurrentDomain.FirstChanceException += Count;
        try
        {
            foreach (var (what, request, error) in refusals)
            {
                for (var i = 0; i < 50; i++)
                {
                    guest.Serve(XsWireCodec.Encode(request));
                    guest.LastType.Should().Be((uint)XS_ERROR, what);
                    guest.ReplyText.Should().Be(error + "\0", what);
                }
            }
        }
        finally
        {
            AppDomain.CurrentDomain.FirstChanceException -= Count;
        }

        thrown.Should().BeEmpty("a refused request is an error result, not an exception on the store's thread");
    }
}
