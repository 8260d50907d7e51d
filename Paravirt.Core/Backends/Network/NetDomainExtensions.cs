using Paravirt.Core.Domains;

namespace Paravirt.Core.Backends.Network;

/// <summary>How a vif is attached (<see cref="NetDomainExtensions.AttachNic"/>).</summary>
public sealed record NicOptions
{
    /// <summary>The guest's MAC address (libxl's <c>mac</c>); by default a random one in Xen's OUI 00:16:3e.</summary>
    public MacAddress? Mac { get; init; }

    /// <summary>The XenBus devid (<c>vif/&lt;devid&gt;</c>, libxl's <c>handle</c>); by default the lowest free one from 0.</summary>
    public uint? DevId { get; init; }

    /// <summary>Limits what the guest transmits to this many bytes per second (libxl's <c>rate</c>); null: unlimited.</summary>
    public long? RateBytesPerSecond { get; init; }

    /// <summary>The credit window of the rate limit (xl's <c>rate=…@interval</c>; libxl's default is 50 ms).</summary>
    public TimeSpan RateInterval { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Frames waiting for the guest's receive buffers at most, per queue (the vif's switch port queues); by default the switch's.</summary>
    public int? QueueFrames { get; init; }

    /// <summary>
    /// xl's <c>ip=</c>: the IPv4 addresses the guest may send from on this vif (with DHCP requests
    /// always allowed), as Xen's vif scripts enforce with iptables; empty: any. Whatever the list,
    /// the vif sends only from its own <see cref="Mac"/>.
    /// </summary>
    public IReadOnlyList<System.Net.IPAddress> Ips { get; init; } = [];

    /// <summary>The vif's MTU (libxl's <c>mtu</c>, written to the frontend's <c>mtu</c> node): ordinary frames the guest sends and receives are at most this plus the 14-byte header. 68 to 65521; by default 1500.</summary>
    public int Mtu { get; init; } = 1500;

    /// <summary>Queues the frontend may use (<c>multi-queue-max-queues</c>, Linux netback's max_queues); by default the host's processor count, at most 8.</summary>
    public int? MaxQueues { get; init; }

    /// <summary>Diagnostics: connects, refusals, bad requests, protocol errors.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>The host's way to give a domain a network interface.</summary>
public static class NetDomainExtensions
{
    /// <summary>
    /// Attaches a vif of <paramref name="domain"/> to <paramref name="switch"/>: writes the vif's
    /// frontend and backend XenStore nodes as libxl does (mac, handle, bridge, rate …) and, once
    /// the guest's netfront connects, serves its rings (io/netif.h) and plugs it into the switch.
    /// The returned handle detaches the vif when disposed, and detaches by itself when the domain dies.
    /// </summary>
    public static NetBack AttachNic(this Domain domain, VirtualSwitch @switch, NicOptions? options = null) =>
        NetBack.Attach(domain, @switch, options);
}
