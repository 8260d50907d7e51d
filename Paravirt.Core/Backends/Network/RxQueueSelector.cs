using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// A vif's receive-side hash settings, as the frontend set them through the control ring
/// (XEN_NETIF_CTRL_TYPE_SET_HASH_*): algorithm, hash types, a key of up to 40 bytes and a mapping
/// table of up to 128 queue numbers. Immutable: a change makes a new one, swapped in whole, so the
/// switch's senders read a consistent set without a lock.
/// </summary>
internal sealed class NetifHashSettings
{
    /// <summary>XEN_NETBK_MAX_HASH_KEY_SIZE.</summary>
    public const int MaxKeyBytes = 40;

    /// <summary>XEN_NETBK_MAX_HASH_MAPPING_SIZE.</summary>
    public const int MaxMappingSize = 128;

    /// <summary>Every hash type netback computes (XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS).</summary>
    public const uint AllTypes = Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4 | Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP |
        Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV6 | Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;

    private readonly byte[] _key;
    private readonly uint[] _mapping;

    private NetifHashSettings(int algorithm, uint flags, byte[] key, uint[] mapping)
    {
        Algorithm = algorithm;
        Flags = flags;
        _key = key;
        _mapping = mapping;
    }

    /// <summary>A new connection's: no algorithm (the default flow hash picks queues), no types, a zero key, no mapping.</summary>
    public static NetifHashSettings Initial { get; } = new(Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_NONE, 0, new byte[MaxKeyBytes], []);

    /// <summary>XEN_NETIF_CTRL_HASH_ALGORITHM_NONE or _TOEPLITZ.</summary>
    public int Algorithm { get; }

    /// <summary>XEN_NETIF_CTRL_HASH_TYPE_* bits in use.</summary>
    public uint Flags { get; }

    public ReadOnlySpan<byte> Key => _key;

    /// <summary>The mapping table (its length is the mapping size).</summary>
    public ReadOnlySpan<uint> Mapping => _mapping;

    public NetifHashSettings WithAlgorithm(int algorithm) => new(algorithm, Flags, _key, _mapping);

    public NetifHashSettings WithFlags(uint flags) => new(Algorithm, flags, _key, _mapping);

    /// <summary>The key, zero-padded to <see cref="MaxKeyBytes"/>.</summary>
    public NetifHashSettings WithKey(ReadOnlySpan<byte> key)
    {
        var k = new byte[MaxKeyBytes];
        key.CopyTo(k);
        return new(Algorithm, Flags, k, _mapping);
    }

    /// <summary>A mapping of <paramref name="size"/> entries, all queue 0.</summary>
    public NetifHashSettings WithMappingSize(int size) => new(Algorithm, Flags, _key, new uint[size]);

    /// <summary>The mapping with <paramref name="entries"/> written from <paramref name="offset"/> (checked by the caller).</summary>
    public NetifHashSettings WithMapping(int offset, ReadOnlySpan<uint> entries)
    {
        var m = (uint[])_mapping.Clone();
        entries.CopyTo(m.AsSpan(offset));
        return new(Algorithm, Flags, _key, m);
    }
}

/// <summary>
/// Which of a vif's queues receives a frame (Linux's <c>xenvif_select_queue</c>): without a hash
/// algorithm, a flow hash of the addresses and ports, the same both ways, scaled to the queue
/// count (<c>netdev_pick_tx</c>: one TCP flow stays on one queue); with Toeplitz, the Toeplitz hash
/// of the fields the hash types select (<c>xenvif_set_skb_hash</c>), then the mapping table
/// (hash modulo its size) or, without one, hash modulo the queue count. A frame none of the types
/// covers hashes to 0.
/// </summary>
internal static class RxQueueSelector
{
    /// <summary>The queue for <paramref name="frame"/>; <paramref name="hashType"/> is the Toeplitz hash's type, or -1 when none was computed.</summary>
    public static int Select(ReadOnlySpan<byte> frame, NetifHashSettings settings, int queues, out uint hash, out int hashType)
    {
        hash = 0;
        hashType = -1;
        if (settings.Algorithm == Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_NONE)
        {
            return queues <= 1 ? 0 : (int)(((ulong)FlowHash(frame) * (uint)queues) >> 32);
        }

        (hash, hashType) = ToeplitzHash(frame, settings);
        var mapping = settings.Mapping;
        return mapping.Length == 0 ? (int)(hash % (uint)queues) : (int)mapping[(int)(hash % (uint)mapping.Length)];
    }

    /// <summary>The Toeplitz hash and its _XEN_NETIF_CTRL_HASH_TYPE_* bit number, or (0, -1) when no enabled type covers the frame.</summary>
    public static (uint Hash, int Type) ToeplitzHash(ReadOnlySpan<byte> frame, NetifHashSettings settings)
    {
        var flags = settings.Flags;
        if (!PacketHeaders.TryParseIp(frame, out var ip))
        {
            return (0, -1);
        }

        var tcp = ip.Protocol == PacketHeaders.IpProtoTcp && !ip.IsFragment && ip.L4Length >= 4;
        var addresses = ip.IsIPv6 ? frame.Slice(PacketHeaders.EthernetHeader + 8, 32) : frame.Slice(PacketHeaders.EthernetHeader + 12, 8);
        Span<byte> input = stackalloc byte[36];
        addresses.CopyTo(input);
        var (l3Flag, l3Type, l4Flag, l4Type) = ip.IsIPv6
            ? (Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV6, Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV6, Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP)
            : (Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4, Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4, Netif.XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, Netif._XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
        if (tcp && (flags & l4Flag) != 0)
        {
            frame.Slice(ip.L4Offset, 4).CopyTo(input[addresses.Length..]); // source port, destination port
            return (Toeplitz.Hash(settings.Key, input[..(addresses.Length + 4)]), l4Type);
        }

        return (flags & l3Flag) != 0
            ? (Toeplitz.Hash(settings.Key, input[..addresses.Length]), l3Type)
            : (0, -1);
    }

    /// <summary>
    /// The default flow hash: protocol, addresses and (unfragmented TCP/UDP) ports, ordered so both
    /// directions of a flow hash alike, mixed with this process's random seed (<see cref="HashCode"/>,
    /// as Linux seeds its flow hash at boot); the ethertype alone for anything that is not IP.
    /// </summary>
    public static uint FlowHash(ReadOnlySpan<byte> frame)
    {
        var h = new HashCode();
        if (!PacketHeaders.TryParseIp(frame, out var ip))
        {
            h.Add(frame.Length >= PacketHeaders.EthernetHeader ? BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) : 0);
            return (uint)h.ToHashCode();
        }

        var size = ip.IsIPv6 ? 16 : 4;
        var at = PacketHeaders.EthernetHeader + (ip.IsIPv6 ? 8 : 12);
        var a = frame.Slice(at, size);
        var b = frame.Slice(at + size, size);
        uint pa = 0, pb = 0;
        if (!ip.IsFragment && ip.Protocol is PacketHeaders.IpProtoTcp or PacketHeaders.IpProtoUdp && ip.L4Length >= 4)
        {
            pa = BinaryPrimitives.ReadUInt16BigEndian(frame[ip.L4Offset..]);
            pb = BinaryPrimitives.ReadUInt16BigEndian(frame[(ip.L4Offset + 2)..]);
        }

        var order = a.SequenceCompareTo(b);
        var swap = order > 0 || (order == 0 && pa > pb);
        if (swap)
        {
            (pa, pb) = (pb, pa);
        }

        h.Add(ip.Protocol);
        h.AddBytes(swap ? b : a);
        h.AddBytes(swap ? a : b);
        h.Add(pa << 16 | pb);
        return (uint)h.ToHashCode();
    }
}
