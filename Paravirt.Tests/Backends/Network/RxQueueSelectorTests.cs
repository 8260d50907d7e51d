using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using static Paravirt.Tests.Backends.Network.TestPackets;

namespace Paravirt.Tests.Backends.Network;

/// <summary>Receive queue selection: the default flow hash and Toeplitz with the control ring's settings.</summary>
public sealed class RxQueueSelectorTests
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");

    /// <summary>The key of Microsoft's RSS verification suite.</summary>
    internal static readonly byte[] RssKey = Convert.FromHexString("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa");

    [Theory]
    // Microsoft's "Verifying the RSS Hash Calculation" table: source → destination, IPv4 and IPv4 with TCP ports.
    [InlineData("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323e8fc2u, 0x51ccc178u)]
    [InlineData("199.92.111.2", 14230, "65.69.140.83", 4739, 0xd718262au, 0xc626b0eau)]
    [InlineData("24.19.198.95", 12898, "12.22.207.184", 38024, 0xd2d0a5deu, 0x5c2b394au)]
    [InlineData("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176u, 0xafc7327fu)]
    [InlineData("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5d1809c5u, 0x10e828a2u)]
    public void Toeplitz_Matches_The_Rss_Verification_Suite(string src, int sport, string dst, int dport, uint ipv4, uint ipv4Tcp)
    {
        var input = new List<byte>();
        input.AddRange(System.Net.IPAddress.Parse(src).GetAddressBytes());
        input.AddRange(System.Net.IPAddress.Parse(dst).GetAddressBytes());
        Core.Backends.Network.Toeplitz.Hash(RssKey, input.ToArray()).Should().Be(ipv4);
        input.AddRange([(byte)(sport >> 8), (byte)sport, (byte)(dport >> 8), (byte)dport]);
        Core.Backends.Network.Toeplitz.Hash(RssKey, input.ToArray()).Should().Be(ipv4Tcp);
        TestPackets.Toeplitz(RssKey, input.ToArray()).Should().Be(ipv4Tcp, "the test's own bit-by-bit version agrees");
    }

    [Fact]
    public void The_Default_Flow_Hash_Keeps_A_Flow_On_One_Queue_Both_Ways_And_Spreads_Flows()
    {
        var settings = NetifHashSettings.Initial;
        var used = new HashSet<int>();
        for (var flow = 0; flow < 64; flow++)
        {
            var port = (ushort)(30000 + flow);
            var there = RxQueueSelector.Select(Tcp(B, A, false, port, 80, 1, Ack, 10), settings, 4, out _, out var type);
            type.Should().Be(-1, "no Toeplitz hash without an algorithm");
            for (var i = 0; i < 3; i++)
            {
                RxQueueSelector.Select(Tcp(B, A, false, port, 80, (uint)(1000 * i), Ack | Psh, 100 * i), settings, 4, out _, out _).Should().Be(there);
            }

            // The reply direction: addresses and ports swapped.
            var reply = Tcp(A, B, false, 80, port, 5, Ack, 10);
            Ip4B.CopyTo(reply.AsSpan(26));
            Ip4A.CopyTo(reply.AsSpan(30));
            RxQueueSelector.Select(reply, settings, 4, out _, out _).Should().Be(there);
            used.Add(there);
        }

        used.Count.Should().BeGreaterThan(1, "64 flows over 4 queues do not all hash alike");
        RxQueueSelector.Select(new byte[60], settings, 4, out _, out _).Should().Be(RxQueueSelector.Select(new byte[64], settings, 4, out _, out _), "non-IP frames of one ethertype share a queue");
    }

    [Fact]
    public void Toeplitz_Settings_Pick_The_Fields_The_Hash_Types_Name_And_The_Mapping_Picks_The_Queue()
    {
        var frame = Tcp(B, A, false, 2794, 1766, 1, Ack, 10);
        var key = RssKey.AsSpan(0, 40).ToArray();
        var settings = NetifHashSettings.Initial.WithAlgorithm(Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ).WithKey(key);
        RxQueueSelector.Select(frame, settings, 3, out _, out var type).Should().Be(0, "no hash type enabled: hash 0");
        type.Should().Be(-1);

        byte[] l3 = [.. Ip4A, .. Ip4B];
        byte[] l4 = [.. l3, 0x0a, 0xea, 0x06, 0xe6];
        settings = settings.WithFlags(Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4);
        RxQueueSelector.Select(frame, settings, 3, out var hash, out type).Should().Be((int)(TestPackets.Toeplitz(key, l3) % 3));
        (hash, type).Should().Be((TestPackets.Toeplitz(key, l3), Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4));

        settings = settings.WithFlags(Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4 | Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
        RxQueueSelector.Select(frame, settings, 3, out hash, out type);
        (hash, type).Should().Be((TestPackets.Toeplitz(key, l4), Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP));
        RxQueueSelector.Select(Udp(B, A, false, 2794, 1766, 10), settings, 3, out hash, out type);
        (hash, type).Should().Be((TestPackets.Toeplitz(key, l3), Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4), "UDP hashes by addresses only");

        settings = settings.WithMappingSize(8).WithMapping(0, [2, 1, 0, 2, 1, 0, 2, 1]);
        var h = TestPackets.Toeplitz(key, l4);
        RxQueueSelector.Select(frame, settings, 3, out _, out _).Should().Be((int)new uint[] { 2, 1, 0, 2, 1, 0, 2, 1 }[h % 8]);

        var v6 = settings.WithFlags(Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
        RxQueueSelector.Select(Tcp(B, A, true, 1, 2, 3, Ack, 10), v6, 3, out hash, out type);
        (hash, type).Should().Be((TestPackets.Toeplitz(key, [.. Ip6A, .. Ip6B, 0, 1, 0, 2]), Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP));
    }
}
