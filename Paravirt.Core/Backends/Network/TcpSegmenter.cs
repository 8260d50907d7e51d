using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// Software GSO for TCP (what Linux's <c>tcp_gso_segment</c> does for a device without TSO): a
/// GSO frame (Ethernet, IPv4 or IPv6, TCP headers, then up to 64 KiB of payload) becomes frames
/// of at most one MSS of payload each, every one with the same headers except: IPv4 total length,
/// identification (the first segment's, plus one per segment) and header checksum; IPv6 payload
/// length; TCP sequence number (plus one MSS per segment), FIN and PSH only on the last segment,
/// CWR only on the first; and a TCP checksum over the segment, finished or left partial as the
/// receiver wants. Written straight into the receiver's buffer, one segment at a time.
/// </summary>
internal static class TcpSegmenter
{
    private const byte Fin = 0x01;
    private const byte Psh = 0x08;
    private const byte Cwr = 0x80;

    /// <summary>How many segments <paramref name="meta"/>'s frame makes (at least one).</summary>
    public static int Count(in FrameMeta meta)
    {
        var payload = Payload(meta);
        return payload <= meta.GsoSize ? 1 : (payload + meta.GsoSize - 1) / meta.GsoSize;
    }

    /// <summary>The length of segment <paramref name="index"/>.</summary>
    public static int Length(in FrameMeta meta, int index) =>
        meta.HeaderBytes + Math.Min(meta.GsoSize, Payload(meta) - (index * meta.GsoSize));

    /// <summary>
    /// Writes segment <paramref name="index"/> of <paramref name="gso"/> into
    /// <paramref name="segment"/> (at least <see cref="Length"/> bytes) and returns its length and
    /// metadata: an ordinary frame whose TCP checksum is finished (<paramref name="finishChecksum"/>)
    /// or left partial for a receiver that finishes it.
    /// </summary>
    public static int Write(ReadOnlySpan<byte> gso, in FrameMeta meta, int index, Span<byte> segment, bool finishChecksum, out FrameMeta segmentMeta)
    {
        var count = Count(meta);
        var tcpHeader = meta.HeaderBytes - meta.L4Offset;
        var start = meta.HeaderBytes + (index * meta.GsoSize);
        var bytes = Math.Min(meta.GsoSize, Payload(meta) - (index * meta.GsoSize));
        var length = meta.HeaderBytes + bytes;
        gso[..meta.HeaderBytes].CopyTo(segment);
        gso.Slice(start, bytes).CopyTo(segment[meta.HeaderBytes..]);

        var ip = segment[PacketHeaders.EthernetHeader..meta.L4Offset];
        if (meta.IsIPv6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)(length - PacketHeaders.EthernetHeader - 40));
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(length - PacketHeaders.EthernetHeader));
            var id = BinaryPrimitives.ReadUInt16BigEndian(ip[4..]);
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], unchecked((ushort)(id + index)));
            PacketHeaders.WriteIPv4HeaderChecksum(ip[..((ip[0] & 0xF) * 4)]);
        }

        var tcp = segment[meta.L4Offset..];
        var seq = BinaryPrimitives.ReadUInt32BigEndian(tcp[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], unchecked(seq + (uint)(index * meta.GsoSize)));
        if (index != count - 1)
        {
            tcp[13] &= unchecked((byte)~(Fin | Psh));
        }

        if (index != 0)
        {
            tcp[13] &= unchecked((byte)~Cwr);
        }

        var l4Length = tcpHeader + bytes;
        PacketHeaders.SeedPartial(segment, meta.IsIPv6, PacketHeaders.IpProtoTcp, meta.L4Offset, l4Length);
        if (finishChecksum)
        {
            PacketHeaders.Complete(segment, PacketHeaders.IpProtoTcp, meta.L4Offset, l4Length);
        }

        segmentMeta = meta with
        {
            Checksum = finishChecksum ? FrameChecksum.None : FrameChecksum.Partial,
            GsoType = Netif.XEN_NETIF_GSO_TYPE_NONE,
            GsoSize = 0,
            L4Length = (ushort)l4Length,
        };
        return length;
    }

    private static int Payload(in FrameMeta meta) => meta.L4Length - (meta.HeaderBytes - meta.L4Offset);
}
