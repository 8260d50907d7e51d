using System.Buffers.Binary;

namespace Paravirt.Cli.Guests;

/// <summary>
/// The demo's ping-like echo protocol on Ethernet (ethertype <see cref="EtherType"/>): after the
/// 14-byte header, kind (1 byte), sequence (4, big-endian), payload length (2), FNV-1a of the
/// payload (4), then the payload. A ping's payload follows from a seed and its sequence alone, so
/// each end can regenerate what a pong must carry. Frames shorter than 60 bytes are zero-padded.
/// </summary>
internal static class PingProtocol
{
    /// <summary>IEEE 802 local experimental ethertype 1.</summary>
    public const ushort EtherType = 0x88B5;

    public const byte Ping = 1, Pong = 2, Done = 3;

    /// <summary>Header plus the protocol's own fields.</summary>
    public const int Meta = 14 + 11;

    /// <summary>The longest payload a ping carries (the frames stay below 1514 bytes).</summary>
    public const int MaxPayload = 1000;

    /// <summary>
    /// Writes ping <paramref name="seq"/>'s payload of stream <paramref name="seed"/> into
    /// <paramref name="into"/>; returns its length (0..<paramref name="maxPayload"/>, by default <see cref="MaxPayload"/>).
    /// </summary>
    public static int Payload(Span<byte> into, ulong seed, int seq, int maxPayload = MaxPayload)
    {
        var x = (uint)(seed * 7919UL) ^ (uint)(seq * 104729) | 1u;
        var length = (int)(x % (uint)(maxPayload + 1));
        for (var i = 0; i < length; i++)
        {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            into[i] = (byte)x;
        }

        return length;
    }

    public static uint Fnv(ReadOnlySpan<byte> bytes)
    {
        var h = 2166136261u;
        foreach (var b in bytes)
        {
            h = (h ^ b) * 16777619u;
        }

        return h;
    }

    /// <summary>Builds a frame into <paramref name="frame"/>; returns its length.</summary>
    public static int Build(Span<byte> frame, ReadOnlySpan<byte> to, ReadOnlySpan<byte> from, byte kind, int seq, ReadOnlySpan<byte> payload)
    {
        to[..6].CopyTo(frame);
        from[..6].CopyTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], EtherType);
        frame[14] = kind;
        BinaryPrimitives.WriteInt32BigEndian(frame[15..], seq);
        BinaryPrimitives.WriteUInt16BigEndian(frame[19..], (ushort)payload.Length);
        BinaryPrimitives.WriteUInt32BigEndian(frame[21..], Fnv(payload));
        payload.CopyTo(frame[Meta..]);
        var length = Meta + payload.Length;
        if (length < 60)
        {
            frame[length..60].Clear();
            length = 60;
        }

        return length;
    }

    /// <summary>Reads a frame of <paramref name="received"/> bytes; null with <paramref name="why"/> when it is not a whole, intact frame of ours.</summary>
    public static (byte Kind, int Seq, int Length)? Parse(ReadOnlySpan<byte> frame, int received, out string why)
    {
        why = "";
        if (received < 60 || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != EtherType)
        {
            why = $"a {received}-byte frame that is not ours (ethertype 0x{(received >= 14 ? BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) : 0):x4})";
            return null;
        }

        var length = BinaryPrimitives.ReadUInt16BigEndian(frame[19..]);
        if (received != Math.Max(Meta + length, 60))
        {
            why = $"a frame of {received} bytes that says its payload is {length} bytes";
            return null;
        }

        if (Fnv(frame.Slice(Meta, length)) != BinaryPrimitives.ReadUInt32BigEndian(frame[21..]))
        {
            why = $"a frame whose payload's FNV-1a does not match (seq {BinaryPrimitives.ReadInt32BigEndian(frame[15..])})";
            return null;
        }

        return (frame[14], BinaryPrimitives.ReadInt32BigEndian(frame[15..]), length);
    }
}
