namespace Paravirt.Core.Backends.Network;

/// <summary>The checksum state a frame carries through the switch (Linux's <c>skb-&gt;ip_summed</c>).</summary>
internal enum FrameChecksum : byte
{
    /// <summary>Nothing known (CHECKSUM_NONE): the frame's checksums are whatever its sender wrote.</summary>
    None,

    /// <summary>The sender vouches for the checksums (NETTXF_data_validated; CHECKSUM_UNNECESSARY).</summary>
    Validated,

    /// <summary>
    /// The TCP/UDP checksum is left to be finished (NETTXF_csum_blank; CHECKSUM_PARTIAL): its field
    /// holds the folded pseudo-header sum, and <see cref="FrameMeta.L4Offset"/>,
    /// <see cref="FrameMeta.L4Length"/> say which bytes it covers.
    /// </summary>
    Partial,
}

/// <summary>
/// What travels with a frame through the switch and the port queues besides its bytes: its checksum
/// state, its GSO type and segment size (a frame of many TCP segments, up to 64 KiB), where its
/// transport header is (found once, when the frame entered the switch), and the receive hash a
/// vif chose for it. A value type copied with the frame: no allocation.
/// </summary>
internal readonly record struct FrameMeta
{
    public FrameChecksum Checksum { get; init; }

    /// <summary>XEN_NETIF_GSO_TYPE_TCPV4/TCPV6, or XEN_NETIF_GSO_TYPE_NONE for an ordinary frame.</summary>
    public byte GsoType { get; init; }

    /// <summary>The payload bytes of each TCP segment (the MSS) of a GSO frame.</summary>
    public ushort GsoSize { get; init; }

    /// <summary>True for an IPv6 frame (known when <see cref="L4Offset"/> is set).</summary>
    public bool IsIPv6 { get; init; }

    /// <summary>IPPROTO_TCP (6) or IPPROTO_UDP (17) when the headers were parsed, else 0.</summary>
    public byte L4Protocol { get; init; }

    /// <summary>Offset in the frame of the TCP/UDP header (csum_start), when the headers were parsed.</summary>
    public ushort L4Offset { get; init; }

    /// <summary>Bytes from <see cref="L4Offset"/> to the end of the IP payload (as the IP header says).</summary>
    public ushort L4Length { get; init; }

    /// <summary>A GSO frame's headers (Ethernet, IP, TCP with options): what every segment repeats.</summary>
    public ushort HeaderBytes { get; init; }

    /// <summary>True when a vif's Toeplitz hash was computed for the frame (<see cref="Hash"/>, <see cref="HashType"/>).</summary>
    public bool HasHash { get; init; }

    /// <summary>The receive hash.</summary>
    public uint Hash { get; init; }

    /// <summary>_XEN_NETIF_CTRL_HASH_TYPE_* (the bit number) of <see cref="Hash"/>.</summary>
    public byte HashType { get; init; }

    public bool IsGso => GsoType != Abi.Io.Netif.XEN_NETIF_GSO_TYPE_NONE;

    /// <summary>The longest segment software segmentation makes of this GSO frame: its headers and one MSS.</summary>
    public int SegmentBytes => HeaderBytes + GsoSize;
}
