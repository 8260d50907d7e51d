using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Core.XenStore;

/// <summary>One XenStore message: an <see cref="xsd_sockmsg"/> header and its payload.</summary>
/// <remarks><see cref="Type"/> is the raw wire value, so an unknown type survives parsing and gets an error reply.</remarks>
internal readonly record struct XsMessage(uint Type, uint ReqId, uint TxId, byte[] Payload)
{
    public XsMessage(xsd_sockmsg_type type, uint reqId, uint txId, byte[] payload)
        : this((uint)type, reqId, txId, payload)
    {
    }

    /// <summary>The type as the enum (may be a value the enum does not name).</summary>
    public xsd_sockmsg_type Kind => (xsd_sockmsg_type)Type;

    /// <summary>A message whose payload is the given strings, each NUL-terminated.</summary>
    public static XsMessage Strings(xsd_sockmsg_type type, uint reqId, uint txId, params string[] strings) =>
        new(type, reqId, txId, XsWireCodec.JoinStrings(strings));

    public override string ToString() =>
        $"{Kind} req {ReqId} tx {TxId} \"{Encoding.ASCII.GetString(Payload).Replace('\0', '|')}\"";
}

/// <summary>The fields of an <see cref="xsd_sockmsg"/> header other than <c>len</c>.</summary>
internal readonly record struct XsHeader(uint Type, uint ReqId, uint TxId);

/// <summary>Outcome of <see cref="XsWireCodec.TryRead(ref ReadOnlySequence{byte}, out XsMessage)"/>.</summary>
internal enum XsReadStatus
{
    /// <summary>A whole message was taken from the buffer.</summary>
    Message,
    /// <summary>Not enough bytes yet (half a header or half a payload); nothing was consumed.</summary>
    NeedMore,
    /// <summary>The header announces a payload above <see cref="XsWire.XENSTORE_PAYLOAD_MAX"/>: the stream is unusable.</summary>
    TooLong,
}

/// <summary>
/// The XenStore wire format (docs/misc/xenstore.txt): a 16-byte little-endian <see cref="xsd_sockmsg"/>
/// header, then <c>len</c> bytes of payload, at most <see cref="XsWire.XENSTORE_PAYLOAD_MAX"/>.
/// </summary>
internal static class XsWireCodec
{
    /// <summary>Bytes of <see cref="xsd_sockmsg"/> on the wire.</summary>
    public const int HeaderSize = 16;

    /// <summary>
    /// Takes one message from the front of <paramref name="buffer"/> if it holds a whole one.
    /// On <see cref="XsReadStatus.NeedMore"/> and <see cref="XsReadStatus.TooLong"/> the buffer is untouched.
    /// </summary>
    public static XsReadStatus TryRead(ref ReadOnlySequence<byte> buffer, out XsMessage message)
    {
        message = default;
        var status = TryFrame(buffer, out var header, out var len);
        if (status != XsReadStatus.Message)
        {
            return status;
        }

        var payload = len == 0 ? [] : buffer.Slice(HeaderSize, len).ToArray();
        message = new XsMessage(header.Type, header.ReqId, header.TxId, payload);
        buffer = buffer.Slice(HeaderSize + len);
        return XsReadStatus.Message;
    }

    /// <summary>
    /// As <see cref="TryRead(ref ReadOnlySequence{byte}, out XsMessage)"/>, copying the payload into
    /// <paramref name="payload"/> (at least <see cref="XsWire.XENSTORE_PAYLOAD_MAX"/> bytes) instead of
    /// a new array: a transport that reuses one buffer reads requests without allocating.
    /// </summary>
    public static XsReadStatus TryRead(ref ReadOnlySequence<byte> buffer, Span<byte> payload, out XsHeader header, out int length)
    {
        header = default;
        length = 0;
        if (payload.Length < XsWire.XENSTORE_PAYLOAD_MAX)
        {
            throw new ArgumentException($"the payload buffer must hold {XsWire.XENSTORE_PAYLOAD_MAX} bytes, it has {payload.Length}", nameof(payload));
        }

        var status = TryFrame(buffer, out header, out var len);
        if (status != XsReadStatus.Message)
        {
            return status;
        }

        buffer.Slice(HeaderSize, len).CopyTo(payload);
        length = (int)len;
        buffer = buffer.Slice(HeaderSize + len);
        return XsReadStatus.Message;
    }

    /// <summary>Reads the header at the front of <paramref name="buffer"/> and checks that the whole message is there.</summary>
    private static XsReadStatus TryFrame(in ReadOnlySequence<byte> buffer, out XsHeader header, out uint len)
    {
        header = default;
        len = 0;
        if (buffer.Length < HeaderSize)
        {
            return XsReadStatus.NeedMore;
        }

        Span<byte> head = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(head);
        len = BinaryPrimitives.ReadUInt32LittleEndian(head[12..]);
        if (len > XsWire.XENSTORE_PAYLOAD_MAX)
        {
            return XsReadStatus.TooLong;
        }

        if (buffer.Length < HeaderSize + len)
        {
            return XsReadStatus.NeedMore;
        }

        header = new XsHeader(
            BinaryPrimitives.ReadUInt32LittleEndian(head),
            BinaryPrimitives.ReadUInt32LittleEndian(head[4..]),
            BinaryPrimitives.ReadUInt32LittleEndian(head[8..]));
        return XsReadStatus.Message;
    }

    /// <summary>Parses a byte array that must hold exactly one message (tests and simple callers).</summary>
    public static XsMessage Decode(ReadOnlySpan<byte> bytes)
    {
        var seq = new ReadOnlySequence<byte>(bytes.ToArray());
        var status = TryRead(ref seq, out var message);
        if (status != XsReadStatus.Message || seq.Length != 0)
        {
            throw new FormatException($"not exactly one XenStore message ({status}, {seq.Length} bytes left over)");
        }

        return message;
    }

    /// <summary>Bytes <paramref name="message"/> takes on the wire.</summary>
    public static int EncodedLength(in XsMessage message) => HeaderSize + message.Payload.Length;

    /// <summary>Writes header and payload into <paramref name="destination"/>; returns the bytes written.</summary>
    public static int Encode(in XsMessage message, Span<byte> destination)
    {
        if (message.Payload.Length > XsWire.XENSTORE_PAYLOAD_MAX)
        {
            throw new ArgumentException(
                $"a XenStore payload is at most {XsWire.XENSTORE_PAYLOAD_MAX} bytes, this one is {message.Payload.Length}",
                nameof(message));
        }

        var total = EncodedLength(message);
        if (destination.Length < total)
        {
            throw new ArgumentException($"need {total} bytes, have {destination.Length}", nameof(destination));
        }

        BinaryPrimitives.WriteUInt32LittleEndian(destination, message.Type);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], message.ReqId);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], message.TxId);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[12..], (uint)message.Payload.Length);
        message.Payload.CopyTo(destination[HeaderSize..]);
        return total;
    }

    /// <summary>The message as a fresh byte array.</summary>
    public static byte[] Encode(in XsMessage message)
    {
        var bytes = new byte[EncodedLength(message)];
        Encode(message, bytes);
        return bytes;
    }

    /// <summary>Appends the message to <paramref name="writer"/> without an intermediate array.</summary>
    public static void Write(IBufferWriter<byte> writer, in XsMessage message)
    {
        var total = EncodedLength(message);
        var span = writer.GetSpan(total);
        Encode(message, span);
        writer.Advance(total);
    }

    // ---- payload helpers -------------------------------------------------------------------

    /// <summary>The strings, each followed by a NUL.</summary>
    public static byte[] JoinStrings(params ReadOnlySpan<string> strings)
    {
        var len = 0;
        foreach (var s in strings)
        {
            len += Encoding.UTF8.GetByteCount(s) + 1;
        }

        var bytes = new byte[len];
        var at = 0;
        foreach (var s in strings)
        {
            at += Encoding.UTF8.GetBytes(s, bytes.AsSpan(at));
            bytes[at++] = 0;
        }

        return bytes;
    }

    /// <summary>A single NUL-terminated string.</summary>
    public static byte[] String(string s) => JoinStrings(s);

    /// <summary>Number of NULs in the payload (xs_count_strings).</summary>
    public static int CountStrings(ReadOnlySpan<byte> payload) => payload.Count((byte)0);

    /// <summary>
    /// The payload's only argument: it must contain exactly one NUL, at its end (xenstored's onearg).
    /// Null if it does not.
    /// </summary>
    public static string? OneArg(ReadOnlySpan<byte> payload)
    {
        if (payload.IsEmpty || payload.IndexOf((byte)0) != payload.Length - 1)
        {
            return null;
        }

        return Latin1(payload[..^1]);
    }

    /// <summary>
    /// The leading NUL-terminated strings of the payload, up to <paramref name="max"/>; bytes after the
    /// last NUL are ignored, as xenstored's get_strings does.
    /// </summary>
    public static List<string> SplitStrings(ReadOnlySpan<byte> payload, int max = int.MaxValue)
    {
        var result = new List<string>();
        while (result.Count < max)
        {
            var nul = payload.IndexOf((byte)0);
            if (nul < 0)
            {
                break;
            }

            result.Add(Latin1(payload[..nul]));
            payload = payload[(nul + 1)..];
        }

        return result;
    }

    /// <summary>
    /// Bytes are mapped one to one onto chars so that no byte sequence is lost or merged; node names are
    /// restricted to ASCII anyway, and values stay byte arrays.
    /// </summary>
    public static string Latin1(ReadOnlySpan<byte> bytes) => Encoding.Latin1.GetString(bytes);

    /// <summary>C's <c>atoi</c>: optional whitespace and sign, then digits; anything else ends the number; no digits is 0.</summary>
    public static int Atoi(string s)
    {
        var i = 0;
        while (i < s.Length && char.IsWhiteSpace(s[i]))
        {
            i++;
        }

        var negative = false;
        if (i < s.Length && (s[i] == '+' || s[i] == '-'))
        {
            negative = s[i] == '-';
            i++;
        }

        long value = 0;
        while (i < s.Length && s[i] is >= '0' and <= '9')
        {
            value = (value * 10) + (s[i] - '0');
            if (value > (long)int.MaxValue + 1)
            {
                value = (long)int.MaxValue + 1; // C leaves overflow undefined; saturate.
            }

            i++;
        }

        value = negative ? -value : value;
        return (int)Math.Clamp(value, int.MinValue, int.MaxValue);
    }
}
