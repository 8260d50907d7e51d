using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using static Paravirt.Tests.Backends.Network.TestPackets;

namespace Paravirt.Tests.Backends.Network;

/// <summary>Software GSO, checked segment by segment against the original frame with checksums computed from scratch.</summary>
public sealed class TcpSegmenterTests
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");

    internal static FrameMeta GsoMeta(byte[] frame, ushort mss)
    {
        PacketHeaders.TryChecksumSetup(frame, out var ip).Should().BeTrue();
        return new FrameMeta
        {
            Checksum = FrameChecksum.Partial,
            GsoType = ip.IsIPv6 ? (byte)Netif.XEN_NETIF_GSO_TYPE_TCPV6 : (byte)Netif.XEN_NETIF_GSO_TYPE_TCPV4,
            GsoSize = mss,
            IsIPv6 = ip.IsIPv6,
            L4Protocol = ip.Protocol,
            L4Offset = (ushort)ip.L4Offset,
            L4Length = (ushort)ip.L4Length,
            HeaderBytes = (ushort)(ip.L4Offset + ((frame[ip.L4Offset + 12] >> 4) * 4)),
        };
    }

    /// <summary>Checks <paramref name="segments"/> are <paramref name="gso"/> cut at <paramref name="mss"/>: headers, lengths, ids, sequence numbers, flags, payload, checksums.</summary>
    internal static void ShouldBeSegmentsOf(IReadOnlyList<byte[]> segments, byte[] gso, int mss, bool fullChecksums)
    {
        var ipv6 = BinaryPrimitives.ReadUInt16BigEndian(gso.AsSpan(12)) == 0x86DD;
        var l4 = ipv6 ? 54 : 34;
        var headers = l4 + ((gso[l4 + 12] >> 4) * 4);
        var payload = gso.Length - headers;
        var expected = Math.Max(1, (payload + mss - 1) / mss);
        segments.Should().HaveCount(expected);
        var seq0 = BinaryPrimitives.ReadUInt32BigEndian(gso.AsSpan(l4 + 4));
        var id0 = BinaryPrimitives.ReadUInt16BigEndian(gso.AsSpan(18));
        for (var i = 0; i < segments.Count; i++)
        {
            var s = segments[i];
            var bytes = Math.Min(mss, payload - (i * mss));
            s.Length.Should().Be(headers + bytes, $"segment {i}");
            s.AsSpan(0, 14).ToArray().Should().Equal(gso.AsSpan(0, 14).ToArray());
            s.AsSpan(headers).ToArray().Should().Equal(gso.AsSpan(headers + (i * mss), bytes).ToArray(), $"segment {i}'s payload");
            if (ipv6)
            {
                BinaryPrimitives.ReadUInt16BigEndian(s.AsSpan(18)).Should().Be((ushort)(s.Length - 54));
            }
            else
            {
                BinaryPrimitives.ReadUInt16BigEndian(s.AsSpan(16)).Should().Be((ushort)(s.Length - 14));
                BinaryPrimitives.ReadUInt16BigEndian(s.AsSpan(18)).Should().Be((ushort)(id0 + i), "each segment takes the next IP id");
                s[20].Should().Be(gso[20], "DF and the rest of the fragment field are kept");
                IPv4HeaderChecksumOk(s).Should().BeTrue($"segment {i}'s IP header checksum");
            }

            BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(l4 + 4)).Should().Be(unchecked(seq0 + (uint)(i * mss)));
            var flags = gso[l4 + 13];
            var want = flags;
            if (i != segments.Count - 1)
            {
                want &= unchecked((byte)~(Fin | Psh));
            }

            if (i != 0)
            {
                want &= unchecked((byte)~Cwr);
            }

            s[l4 + 13].Should().Be(want, $"segment {i}'s TCP flags");
            s.AsSpan(l4 + 14, headers - l4 - 16 + 2).ToArray().Should().Equal(gso.AsSpan(l4 + 14, headers - l4 - 16 + 2).ToArray().Select((b, k) => k is 2 or 3 ? s[l4 + 14 + k] : b).ToArray(), "window, urgent pointer and options are copied");
            if (fullChecksums)
            {
                TransportChecksumOk(s).Should().BeTrue($"segment {i}'s TCP checksum");
            }
            else
            {
                TransportChecksumIsPartial(s).Should().BeTrue($"segment {i}'s TCP checksum is left blank for the receiver");
            }
        }
    }

    [Theory]
    [InlineData(false, 1448, 64000)]
    [InlineData(true, 1428, 60000)]
    [InlineData(false, 1000, 3000)]
    [InlineData(false, 1448, 100)]
    [InlineData(false, 1448, 0)]
    [InlineData(true, 48, 1000)]
    public void A_Gso_Frame_Becomes_Mss_Sized_Segments(bool ipv6, int mss, int payload)
    {
        var gso = Tcp(B, A, ipv6, 40000, 80, 0xFFFF_F000, Ack | Psh | Fin | Cwr, payload, seed: mss, ipId: 0xFFFE);
        var meta = GsoMeta(gso, (ushort)mss);
        foreach (var full in (bool[])[true, false])
        {
            var segments = new List<byte[]>();
            for (var i = 0; i < TcpSegmenter.Count(meta); i++)
            {
                var buffer = new byte[TcpSegmenter.Length(meta, i) + 10];
                var n = TcpSegmenter.Write(gso, meta, i, buffer, full, out var segMeta);
                n.Should().Be(TcpSegmenter.Length(meta, i));
                segMeta.IsGso.Should().BeFalse();
                segMeta.Checksum.Should().Be(full ? FrameChecksum.None : FrameChecksum.Partial);
                segments.Add(buffer[..n]);
            }

            ShouldBeSegmentsOf(segments, gso, mss, full);
        }
    }
}
