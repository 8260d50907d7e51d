using System.Buffers;
using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;

namespace Paravirt.Tests.XenStore;

public sealed class XsWireCodecTests
{
    private static byte[] Header(uint type, uint req, uint tx, uint len)
    {
        var h = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(h, type);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), req);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), tx);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(12), len);
        return h;
    }

    [Fact]
    public void Encode_Writes_A_Little_Endian_Header_Then_The_Payload()
    {
        var bytes = XsWireCodec.Encode(XsMessage.Strings(xsd_sockmsg_type.XS_READ, 7, 3, "/a"));
        bytes.Should().Equal([.. Header(2, 7, 3, 3), (byte)'/', (byte)'a', 0]);
    }

    [Fact]
    public void Decode_Inverts_Encode()
    {
        var m = new XsMessage(xsd_sockmsg_type.XS_WRITE, 0xdeadbeef, 42, [1, 0, 2, 0xff]);
        var back = XsWireCodec.Decode(XsWireCodec.Encode(m));
        back.Type.Should().Be(m.Type);
        back.ReqId.Should().Be(m.ReqId);
        back.TxId.Should().Be(m.TxId);
        back.Payload.Should().Equal(m.Payload);
    }

    [Fact]
    public void Half_A_Header_Waits_For_More_Bytes_And_Consumes_Nothing()
    {
        var seq = new ReadOnlySequence<byte>(Header(2, 1, 0, 0)[..10]);
        XsWireCodec.TryRead(ref seq, out _).Should().Be(XsReadStatus.NeedMore);
        seq.Length.Should().Be(10);
    }

    [Fact]
    public void Half_A_Payload_Waits_For_More_Bytes()
    {
        var seq = new ReadOnlySequence<byte>([.. Header(2, 1, 0, 5), 1, 2]);
        XsWireCodec.TryRead(ref seq, out _).Should().Be(XsReadStatus.NeedMore);
        seq.Length.Should().Be(18);
    }

    [Fact]
    public void A_Message_Fed_One_Byte_At_A_Time_Parses_When_Complete()
    {
        var bytes = XsWireCodec.Encode(XsMessage.Strings(xsd_sockmsg_type.XS_DIRECTORY, 9, 0, "/tool"));
        for (var n = 0; n < bytes.Length; n++)
        {
            var partial = new ReadOnlySequence<byte>(bytes[..n]);
            XsWireCodec.TryRead(ref partial, out _).Should().Be(XsReadStatus.NeedMore, $"{n} of {bytes.Length} bytes");
        }

        var whole = new ReadOnlySequence<byte>(bytes);
        XsWireCodec.TryRead(ref whole, out var m).Should().Be(XsReadStatus.Message);
        m.ReqId.Should().Be(9);
        whole.Length.Should().Be(0);
    }

    [Fact]
    public void Several_Messages_In_One_Buffer_Come_Out_In_Order()
    {
        var bytes = XsWireCodec.Encode(XsMessage.Strings(xsd_sockmsg_type.XS_READ, 1, 0, "/a"))
            .Concat(XsWireCodec.Encode(XsMessage.Strings(xsd_sockmsg_type.XS_READ, 2, 0, "/b")))
            .Concat(Header(2, 3, 0, 4)[..7]).ToArray();
        var seq = new ReadOnlySequence<byte>(bytes);
        XsWireCodec.TryRead(ref seq, out var a).Should().Be(XsReadStatus.Message);
        XsWireCodec.TryRead(ref seq, out var b).Should().Be(XsReadStatus.Message);
        XsWireCodec.TryRead(ref seq, out _).Should().Be(XsReadStatus.NeedMore);
        (a.ReqId, b.ReqId).Should().Be((1u, 2u));
        seq.Length.Should().Be(7);
    }

    [Fact]
    public void A_Payload_Of_Exactly_The_Maximum_Is_Accepted()
    {
        var seq = new ReadOnlySequence<byte>([.. Header(11, 1, 0, 4096), .. new byte[4096]]);
        XsWireCodec.TryRead(ref seq, out var m).Should().Be(XsReadStatus.Message);
        m.Payload.Should().HaveCount(XsWire.XENSTORE_PAYLOAD_MAX);
    }

    [Fact]
    public void A_Length_Above_The_Maximum_Is_A_Protocol_Error_Before_The_Payload_Arrives()
    {
        var seq = new ReadOnlySequence<byte>(Header(11, 1, 0, 4097));
        XsWireCodec.TryRead(ref seq, out _).Should().Be(XsReadStatus.TooLong);
        var huge = new ReadOnlySequence<byte>(Header(11, 1, 0, uint.MaxValue));
        XsWireCodec.TryRead(ref huge, out _).Should().Be(XsReadStatus.TooLong);
    }

    [Fact]
    public void An_Unknown_Type_Still_Parses_So_It_Can_Get_An_Error_Reply()
    {
        var seq = new ReadOnlySequence<byte>(Header(999, 5, 0, 0));
        XsWireCodec.TryRead(ref seq, out var m).Should().Be(XsReadStatus.Message);
        m.Type.Should().Be(999u);
    }

    [Fact]
    public void Encoding_An_Oversized_Payload_Is_A_Host_Error()
    {
        var act = () => XsWireCodec.Encode(new XsMessage(xsd_sockmsg_type.XS_READ, 1, 0, new byte[4097]));
        act.Should().Throw<ArgumentException>().WithMessage("*at most 4096*");
    }

    [Theory]
    [InlineData(new byte[] { (byte)'a', 0 }, "a")]
    [InlineData(new byte[] { 0 }, "")]
    [InlineData(new byte[] { (byte)'a' }, null)]
    [InlineData(new byte[] { }, null)]
    [InlineData(new byte[] { (byte)'a', 0, (byte)'b', 0 }, null)]
    [InlineData(new byte[] { (byte)'a', 0, (byte)'b' }, null)]
    public void OneArg_Needs_Exactly_One_Nul_At_The_End(byte[] payload, string? expected) =>
        XsWireCodec.OneArg(payload).Should().Be(expected);

    [Fact]
    public void SplitStrings_Ignores_Bytes_After_The_Last_Nul() =>
        XsWireCodec.SplitStrings("a\0bc\0tail"u8).Should().Equal("a", "bc");

    [Theory]
    [InlineData("12", 12)]
    [InlineData(" 7x", 7)]
    [InlineData("-3", -3)]
    [InlineData("", 0)]
    [InlineData("abc", 0)]
    public void Atoi_Behaves_As_C(string s, int expected) => XsWireCodec.Atoi(s).Should().Be(expected);
}
