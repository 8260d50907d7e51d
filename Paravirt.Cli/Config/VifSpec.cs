using System.Globalization;

namespace Paravirt.Cli.Config;

/// <summary>A vif's outgoing rate limit (xl-network-configuration(5), <c>rate=</c>): credit-based, replenished every <see cref="IntervalMicroseconds"/>.</summary>
/// <param name="BytesPerSecond">The rate, in bytes per second (bit units are divided by 8).</param>
/// <param name="IntervalMicroseconds">How often the credit is replenished (default 50 ms).</param>
internal sealed record VifRate(long BytesPerSecond, long IntervalMicroseconds)
{
    public const long DefaultIntervalMicroseconds = 50_000;

    /// <summary>Bytes of credit per interval ("1MB/s@20ms" is 20,000 bytes every 20,000 us).</summary>
    public long BytesPerInterval => (long)((decimal)BytesPerSecond * IntervalMicroseconds / 1_000_000m);
}

/// <summary>
/// One entry of <c>vif = [ ... ]</c> (xl-network-configuration(5)): comma-separated
/// <c>key=value</c> pairs, all optional. Parsed and kept typed; attaching it is the network
/// backend's work.
/// </summary>
/// <param name="Bridge">The switch to plug into (xl's default is <c>xenbr0</c>).</param>
/// <param name="Mac">The guest's MAC address, or null for one generated in Xen's OUI 00:16:3e.</param>
/// <param name="Rate">The outgoing rate limit, or null for unlimited.</param>
internal sealed record VifSpec(string Bridge, byte[]? Mac, VifRate? Rate)
{
    public const string DefaultBridge = "xenbr0";

    private static readonly string[] OtherKeys = ["model", "type", "vifname", "script", "backend", "devid", "mtu", "gatewaydev"];

    /// <summary>
    /// <c>ip=</c>: the IPv4 addresses the guest may send from (space-separated), enforced by the
    /// switch as Xen's vif scripts enforce them with iptables; empty when not given (any source).
    /// </summary>
    public IReadOnlyList<System.Net.IPAddress> Ips { get; init; } = [];

    /// <summary>The MAC as xl writes it (lower-case hex, colons), or null.</summary>
    public string? MacText => Mac is null ? null : string.Join(':', Mac.Select(b => b.ToString("x2", CultureInfo.InvariantCulture)));

    /// <summary>Parses one vifspec; errors are <see cref="FormatException"/> (what was wrong; expected …).</summary>
    public static VifSpec Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string? bridge = null;
        byte[]? mac = null;
        VifRate? rate = null;
        IReadOnlyList<System.Net.IPAddress> ips = [];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var raw in spec.Split(','))
        {
            var part = raw.Trim();
            if (part.Length == 0 || part is "trusted" or "untrusted")
            {
                continue;
            }

            var eq = part.IndexOf('=');
            if (eq <= 0)
            {
                throw new FormatException($"'{part}' is not key=value; expected e.g. 'bridge=br0,mac=00:16:3e:01:02:03,rate=10Mb/s'");
            }

            var key = part[..eq].Trim();
            var value = part[(eq + 1)..].Trim();
            if (!seen.Add(key))
            {
                throw new FormatException($"'{key}' is given twice; expected each key at most once");
            }

            switch (key)
            {
                case "bridge":
                    bridge = value.Length > 0 ? value : throw new FormatException("bridge is empty; expected a switch name, e.g. bridge=br0");
                    break;
                case "mac":
                    mac = ParseMac(value);
                    break;
                case "rate":
                    rate = ParseRate(value);
                    break;
                case "ip":
                    ips = ParseIps(value);
                    break;
                default:
                    if (!OtherKeys.Contains(key))
                    {
                        throw new FormatException($"'{key}' is not a vif keyword; expected bridge, mac, rate, ip, {string.Join(", ", OtherKeys)}");
                    }

                    break; // known to xl; nothing for paravirt's switch to do with it
            }
        }

        return new VifSpec(bridge ?? DefaultBridge, mac, rate) { Ips = ips };
    }

    /// <summary>A dotted-quad IPv4 address (four parts: not IPAddress's shorthand forms such as "10.1"); false when <paramref name="text"/> is not one.</summary>
    internal static bool TryParseIpv4(string text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out System.Net.IPAddress? ip) =>
        System.Net.IPAddress.TryParse(text, out ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && text.Count(c => c == '.') == 3;

    private static System.Net.IPAddress[] ParseIps(string text)
    {
        var list = new List<System.Net.IPAddress>();
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!TryParseIpv4(word, out var ip))
            {
                throw new FormatException($"ip '{word}' is not an IPv4 address; expected dotted quads separated by spaces, e.g. ip=10.0.0.2 (Xen's vif scripts filter IPv4 only)");
            }

            list.Add(ip);
        }

        return list.Count > 0 ? [.. list] : throw new FormatException("ip is empty; expected one or more IPv4 addresses separated by spaces");
    }

    private static byte[] ParseMac(string text)
    {
        var parts = text.Split(':');
        var mac = new byte[6];
        if (parts.Length != 6 || !parts.Select((p, i) => p.Length == 2 && byte.TryParse(p, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out mac[i])).All(ok => ok))
        {
            throw new FormatException($"mac '{text}' is not a MAC address; expected six pairs of hex digits separated by ':', e.g. 00:16:3e:01:02:03");
        }

        if ((mac[0] & 1) != 0)
        {
            throw new FormatException($"mac '{text}' is a multicast address; expected the low bit of the first byte clear");
        }

        return mac;
    }

    /// <summary>
    /// RATE/s[@INTERVAL] as xl's libxlu_vif.c takes it: RATE a number up to 2^32-1 with GB, MB, KB, B
    /// (bytes) or Gb, Mb, Kb, b (bits; divided by 8), decimal multiples; INTERVAL up to 2^32-1 us
    /// with s, ms (m) or us (u), a bare number being seconds (xl's code; its man page says us).
    /// </summary>
    private static VifRate ParseRate(string text)
    {
        const string Expected = "RATE/s[@INTERVAL], RATE a number with GB, MB, KB, B (bytes) or Gb, Mb, Kb, b (bits), INTERVAL with s, ms or us (up to 4294967295 us), e.g. 10Mb/s or 1MB/s@20ms";
        var at = text.IndexOf('@');
        var ratePart = at < 0 ? text : text[..at];
        if (!ratePart.EndsWith("/s", StringComparison.Ordinal))
        {
            throw new FormatException($"rate '{text}' has no '/s'; expected {Expected}");
        }

        ratePart = ratePart[..^2];
        var digits = ratePart.TakeWhile(char.IsAsciiDigit).Count();
        var unit = ratePart[digits..];
        (long multiplier, bool bits) = unit switch
        {
            "GB" => (1_000_000_000L, false),
            "MB" => (1_000_000L, false),
            "KB" => (1_000L, false),
            "B" => (1L, false),
            "Gb" => (1_000_000_000L, true),
            "Mb" => (1_000_000L, true),
            "Kb" => (1_000L, true),
            "b" => (1L, true),
            _ => throw new FormatException($"rate '{text}' has unit '{unit}'; expected {Expected}"),
        };
        if (digits == 0 || !long.TryParse(ratePart.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number == 0
            || number > uint.MaxValue)
        {
            throw new FormatException($"rate '{text}' needs a positive number (at most 4294967295); expected {Expected}");
        }

        var bytes = number * multiplier / (bits ? 8 : 1);
        var interval = VifRate.DefaultIntervalMicroseconds;
        if (at >= 0)
        {
            var iv = text[(at + 1)..];
            var ivDigits = iv.TakeWhile(char.IsAsciiDigit).Count();
            var ivUnit = iv[ivDigits..];
            long scale = ivUnit switch
            {
                "s" or "" => 1_000_000, // xl (libxlu_vif.c) takes a bare number as seconds, though the man page says microseconds
                "ms" or "m" => 1_000,
                "us" or "u" => 1,
                _ => throw new FormatException($"rate interval '{iv}' has unit '{ivUnit}'; expected {Expected}"),
            };
            if (ivDigits == 0 || !long.TryParse(iv.AsSpan(0, ivDigits), NumberStyles.None, CultureInfo.InvariantCulture, out var ivNumber) || ivNumber == 0
                || ivNumber * scale > uint.MaxValue)
            {
                throw new FormatException($"rate interval '{iv}' needs a positive number (at most 4294967295); expected {Expected}");
            }

            interval = ivNumber * scale;
        }

        return new VifRate(bytes, interval);
    }
}
