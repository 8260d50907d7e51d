using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// The anti-spoofing rule of one vif, applied by the switch to every frame the vif sends: the
/// Ethernet source must be the vif's own MAC (libxl's <c>mac</c>), so a guest cannot pose as
/// another station or fill the switch's table; and when the vif has an <c>ip=</c> list, an IPv4
/// packet must come from one of those addresses, or be a DHCP request (UDP 68 → 67), which is
/// what Xen's vif scripts allow with iptables (vif-common.sh's handle_iptable; frames that are not
/// IPv4 — ARP, IPv6 — pass that rule as they pass iptables there).
/// </summary>
internal sealed class SourcePolicy
{
    private const ushort EtherTypeIpv4 = 0x0800, EtherTypeVlan = 0x8100;
    private readonly uint[] _ipv4;

    public SourcePolicy(MacAddress mac, IReadOnlyList<IPAddress>? addresses)
    {
        Mac = mac;
        var list = new List<uint>();
        foreach (var a in addresses ?? [])
        {
            if (a.AddressFamily != AddressFamily.InterNetwork)
            {
                throw new ArgumentException($"{a}: a vif's ip= list holds IPv4 addresses (Xen's vif scripts filter IPv4 only)", nameof(addresses));
            }

            list.Add(BinaryPrimitives.ReadUInt32BigEndian(a.GetAddressBytes()));
        }

        _ipv4 = [.. list];
    }

    public MacAddress Mac { get; }

    /// <summary>True when <paramref name="frame"/> (a valid Ethernet frame) may enter the switch.</summary>
    public bool Allows(ReadOnlySpan<byte> frame)
    {
        if (MacAddress.Read(frame[6..]).Value != Mac.Value)
        {
            return false;
        }

        if (_ipv4.Length == 0)
        {
            return true;
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        var ip = frame[14..];
        if (type == EtherTypeVlan)
        {
            // A tagged frame: the bridge's iptables sees its IPv4 packet too (br_netfilter's VLAN handling); so do we.
            if (frame.Length < 18)
            {
                return false;
            }

            type = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
            ip = frame[18..];
        }

        if (type != EtherTypeIpv4)
        {
            return true;
        }

        if (ip.Length < 20 || ip[0] >> 4 != 4)
        {
            return false; // not a parseable IPv4 header: iptables' conntrack drops it too
        }

        var source = BinaryPrimitives.ReadUInt32BigEndian(ip[12..]);
        if (Array.IndexOf(_ipv4, source) >= 0)
        {
            return true;
        }

        // DHCP: -p udp --sport 68 --dport 67 (any source address, 0.0.0.0 included).
        var headerBytes = (ip[0] & 0xF) * 4;
        var fragmentOffset = BinaryPrimitives.ReadUInt16BigEndian(ip[6..]) & 0x1FFF;
        if (ip[9] != 17 || fragmentOffset != 0 || headerBytes < 20 || ip.Length < headerBytes + 8)
        {
            return false;
        }

        var udp = ip[headerBytes..];
        return BinaryPrimitives.ReadUInt16BigEndian(udp) == 68 && BinaryPrimitives.ReadUInt16BigEndian(udp[2..]) == 67;
    }
}
