namespace Paravirt.Core.Backends.Network;

/// <summary>Bounds of a <see cref="VirtualSwitch"/>.</summary>
public sealed record SwitchOptions
{
    /// <summary>Frames a port's queue holds by default (a vif's or a host endpoint's, unless they say otherwise).</summary>
    public int QueueFrames { get; init; } = 256;

    /// <summary>Source addresses learned per port at most; more are forwarded but not learned (a guest spraying source addresses cannot grow the table without bound).</summary>
    public int MaxMacsPerPort { get; init; } = 256;

    /// <summary>Ports at most.</summary>
    public int MaxPorts { get; init; } = 1024;

    /// <summary>
    /// How long a learned address is kept without a frame from it (a Linux bridge's ageing_time,
    /// 300 s by default); afterwards frames to it are flooded until it is heard again.
    /// <see cref="Timeout.InfiniteTimeSpan"/>: never forgotten while its port is attached.
    /// </summary>
    public TimeSpan AgeingTime { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>The clock ageing is measured on.</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;
}

/// <summary>
/// A virtual Ethernet switch: a learning bridge between guests' vifs (netback) and host
/// endpoints (<see cref="ConnectHost"/>). It learns each unicast source address on the port it
/// came from, forwards a unicast frame to the port its destination was learned on, and floods
/// broadcast, multicast and unknown-destination frames to every other port; a frame never goes
/// back out of the port it came in on. A port's learned addresses are forgotten when it
/// detaches, and any address is forgotten when nothing came from it for
/// <see cref="SwitchOptions.AgeingTime"/>. A vif may send only from its own MAC (and, with an
/// <c>ip=</c> list, only from those IPv4 addresses): other frames are dropped and counted
/// (<see cref="SwitchPortStats.Spoofed"/>). Frames are raw Ethernet (destination, source, ethertype, payload; no FCS) of
/// <see cref="MinFrameBytes"/> bytes up to their ingress port's MTU (<see cref="MaxFrameBytes"/>
/// by default), or up to <see cref="MaxLargeFrameBytes"/> for a GSO frame; each carries its
/// checksum and GSO state (<see cref="FrameMeta"/>) to the ports it goes to. Each port has a
/// bounded queue; a full queue drops and counts, never blocks the sender or other ports.
/// Thread-safe: ports forward from their own threads.
/// </summary>
public sealed class VirtualSwitch : IDisposable
{
    /// <summary>ETH_HLEN: destination, source, ethertype.</summary>
    public const int MinFrameBytes = 14;

    /// <summary>An MTU of 1500 plus the 14-byte header: the longest ordinary frame of a host port, and of a vif by default.</summary>
    public const int MaxFrameBytes = 1514;

    /// <summary>The longest frame the switch carries: a GSO frame, or an ordinary frame between ports with a larger MTU (XEN_NETIF_MAX_TX_SIZE).</summary>
    public const int MaxLargeFrameBytes = 65535;

    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, Learned> _table = [];
    private readonly long _ageingTicks;
    private SwitchPort[] _ports = [];
    private bool _disposed;

    /// <summary>A free-standing switch (a hypervisor's own come from <c>Hypervisor.Switch(name)</c>).</summary>
    public VirtualSwitch(string name, SwitchOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
        Options = options ?? new SwitchOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.QueueFrames, 1, nameof(SwitchOptions.QueueFrames));
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.MaxMacsPerPort, 0, nameof(SwitchOptions.MaxMacsPerPort));
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.MaxPorts, 1, nameof(SwitchOptions.MaxPorts));
        ArgumentNullException.ThrowIfNull(Options.Clock, nameof(SwitchOptions.Clock));
        if (Options.AgeingTime != Timeout.InfiniteTimeSpan && Options.AgeingTime <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), Options.AgeingTime, "AgeingTime: a positive time, or Timeout.InfiniteTimeSpan for no ageing");
        }

        _ageingTicks = Options.AgeingTime == Timeout.InfiniteTimeSpan
            ? long.MaxValue
            : (long)Math.Min(Options.AgeingTime.TotalSeconds * Options.Clock.TimestampFrequency, long.MaxValue / 2);
    }

    /// <summary>The bridge name (libxl's <c>bridge</c> node of each vif on it).</summary>
    public string Name { get; }

    public SwitchOptions Options { get; }

    /// <summary>The ports attached now.</summary>
    public IReadOnlyList<SwitchPort> Ports => Volatile.Read(ref _ports);

    /// <summary>Learned addresses now (all ports; aged ones are not counted).</summary>
    public int LearnedAddresses
    {
        get
        {
            lock (_lock)
            {
                var now = Options.Clock.GetTimestamp();
                return _table.Values.Count(e => !Aged(e, now));
            }
        }
    }

    /// <summary>The port <paramref name="mac"/> was learned on, or null (never learned, forgotten, or aged).</summary>
    public SwitchPort? PortOf(MacAddress mac)
    {
        lock (_lock)
        {
            return Lookup(mac.Value, Options.Clock.GetTimestamp());
        }
    }

    /// <summary>
    /// Connects the host to the switch: a port whose frames the host program sends and receives
    /// itself (no TAP device). <paramref name="mac"/> is the host's address there (the source
    /// <see cref="SwitchHostPort.Send(MacAddress, ushort, ReadOnlySpan{byte})"/> writes).
    /// Dispose the port to detach it.
    /// </summary>
    public SwitchHostPort ConnectHost(MacAddress mac, int? queueFrames = null)
    {
        var port = new SwitchHostPort(this, mac, queueFrames ?? Options.QueueFrames);
        Attach(port);
        return port;
    }

    internal void Attach(SwitchPort port)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (port.Switch != this || port.IsAttached)
            {
                throw new InvalidOperationException($"port {port.Name} is not a detached port of switch {Name}");
            }

            if (_ports.Length >= Options.MaxPorts)
            {
                throw new InvalidOperationException($"switch {Name} has {_ports.Length} ports, its limit (SwitchOptions.MaxPorts)");
            }

            port.MarkAttached(true);
            Volatile.Write(ref _ports, [.. _ports, port]);
        }
    }

    /// <summary>Detaches <paramref name="port"/>: it receives nothing more, its queued frames are released and its learned addresses forgotten.</summary>
    internal void Detach(SwitchPort port)
    {
        lock (_lock)
        {
            if (!port.IsAttached)
            {
                return;
            }

            port.MarkAttached(false);
            Volatile.Write(ref _ports, [.. _ports.Where(p => p != port)]);
            if (port.LearnedMacs > 0)
            {
                foreach (var (mac, entry) in _table.ToArray())
                {
                    if (entry.Port == port)
                    {
                        _table.Remove(mac);
                    }
                }

                port.LearnedMacs = 0;
            }
        }

        port.CloseQueue();
    }

    /// <summary>
    /// Switches one frame that came in on <paramref name="ingress"/>: learns its source, then
    /// queues a copy to the destination's port, or to every other port for a group or unknown
    /// destination. False when the frame is not a valid Ethernet frame (counted on the port): shorter
    /// than a header, or longer than the ingress port's MTU allows (65535 for a GSO frame).
    /// <paramref name="meta"/> (checksum and GSO state) travels with the frame.
    /// </summary>
    internal bool Forward(SwitchPort ingress, ReadOnlySpan<byte> frame, in FrameMeta meta = default)
    {
        if (frame.Length < MinFrameBytes || frame.Length > (meta.IsGso ? MaxLargeFrameBytes : ingress.MaxFrameBytes))
        {
            Interlocked.Increment(ref ingress.Invalid);
            return false;
        }

        if (!ingress.IsAttached)
        {
            return false;
        }

        if (ingress.Source is { } policy && !policy.Allows(frame))
        {
            Interlocked.Increment(ref ingress.Spoofed);
            return true; // dropped, as the bridge's filter drops it: the sender is not told
        }

        Interlocked.Increment(ref ingress.FramesIn);
        Interlocked.Add(ref ingress.BytesIn, frame.Length);
        var destination = MacAddress.Read(frame);
        var source = MacAddress.Read(frame[6..]);
        SwitchPort? target = null;
        lock (_lock)
        {
            var now = Options.Clock.GetTimestamp();
            if (!source.IsMulticast)
            {
                Learn(source, ingress, now);
            }

            if (!destination.IsMulticast)
            {
                target = Lookup(destination.Value, now);
            }
        }

        if (target == ingress)
        {
            // Learned on the port it came from: the destination already heard it (a bridge filters it).
            Interlocked.Increment(ref ingress.Filtered);
            return true;
        }

        if (target is not null)
        {
            target.Enqueue(frame, meta);
            return true;
        }

        foreach (var port in Volatile.Read(ref _ports))
        {
            if (port != ingress)
            {
                port.Enqueue(frame, meta);
            }
        }

        return true;
    }

    private bool Aged(Learned entry, long now) => now - entry.Seen > _ageingTicks;

    /// <summary>The port <paramref name="mac"/> was learned on, forgetting it if it has aged (under the lock).</summary>
    private SwitchPort? Lookup(ulong mac, long now)
    {
        if (!_table.TryGetValue(mac, out var entry))
        {
            return null;
        }

        if (!Aged(entry, now))
        {
            return entry.Port;
        }

        _table.Remove(mac);
        entry.Port.LearnedMacs--;
        return null;
    }

    private void Learn(MacAddress source, SwitchPort ingress, long now)
    {
        if (_table.TryGetValue(source.Value, out var entry))
        {
            if (entry.Port == ingress)
            {
                entry.Seen = now;
                return;
            }

            if (ingress.LearnedMacs >= Options.MaxMacsPerPort && !ForgetAged(ingress, now))
            {
                Interlocked.Increment(ref ingress.NotLearned);
                return;
            }

            entry.Port.LearnedMacs--; // the address moved (a guest migrated, or another port claims it)
            entry.Port = ingress;
            entry.Seen = now;
            ingress.LearnedMacs++;
            return;
        }

        if (!ingress.IsAttached)
        {
            return;
        }

        if (ingress.LearnedMacs >= Options.MaxMacsPerPort && !ForgetAged(ingress, now))
        {
            Interlocked.Increment(ref ingress.NotLearned);
            return;
        }

        _table[source.Value] = new Learned(ingress, now);
        ingress.LearnedMacs++;
    }

    /// <summary>Forgets <paramref name="port"/>'s aged addresses (a port at its quota); true when that freed room.</summary>
    private bool ForgetAged(SwitchPort port, long now)
    {
        var freed = false;
        foreach (var (mac, entry) in _table)
        {
            if (entry.Port == port && Aged(entry, now))
            {
                _table.Remove(mac);
                port.LearnedMacs--;
                freed = true;
            }
        }

        return freed;
    }

    /// <summary>One learned address: where it was heard, and when last (a timestamp of the switch's clock).</summary>
    private sealed class Learned(SwitchPort port, long seen)
    {
        public SwitchPort Port = port;
        public long Seen = seen;
    }

    /// <summary>Detaches every port (host endpoints then see the end of their frames).</summary>
    public void Dispose()
    {
        SwitchPort[] ports;
        lock (_lock)
        {
            _disposed = true;
            ports = _ports;
        }

        foreach (var p in ports)
        {
            Detach(p);
        }
    }
}
