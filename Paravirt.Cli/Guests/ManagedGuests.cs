using Paravirt.Core.Cpu;

namespace Paravirt.Cli.Guests;

/// <summary>A built-in managed guest: <c>kernel = "managed:NAME"</c>.</summary>
internal sealed record ManagedGuest(string Name, string Description, Func<ManagedKernel> Create);

/// <summary>The managed guests the program offers (see docs/cli.md). Each reads its options from the command line (<c>extra</c>).</summary>
internal static class ManagedGuests
{
    public static IReadOnlyList<ManagedGuest> All { get; } =
    [
        new("hello", "greets, lists its devices, does a write-flush-read-compare on each writable disk, then powers off (extra: shutdown=poweroff|reboot|crash, crash-once)", () => new HelloGuest()),
        new("echo", "echoes each console input line until it reads 'poweroff' (or 'crash')", () => new EchoGuest()),
        new("netecho", "connects its first vif, broadcasts a hello (ethertype 0x88b6), sends each frame back to its sender until a stop frame (ethertype 0x88b6, byte 2) or frames=N echoed (extra: frames=N)", () => new NetEchoGuest()),
        new("pingable", "connects its first vif and answers ARP and ICMP echo (ping) at ip=A.B.C.D, checking checksums; powers off after pings=N replies or a netecho stop frame (extra: ip=A.B.C.D pings=N)", () => new PingableGuest()),
        new("worker", "block roundtrip on each disk, XenStore keys written and read back, events over a loopback channel (extra: bytes=N keys=N events=N seed=N)", () => new WorkerGuest()),
        new("bomb", "allocates memory, event channels, grant frames and XenStore nodes without end, reports each limit with Xen's answer, then crashes (extra: hold, to keep it all until console input first)", () => new BombGuest()),
    ];

    public static ManagedGuest? Find(string name) => All.FirstOrDefault(g => g.Name == name);
}

/// <summary>A guest's command line as words: <c>key=value</c> pairs and bare flags.</summary>
internal sealed class GuestArgs
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public GuestArgs(string commandLine)
    {
        foreach (var word in (commandLine ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = word.IndexOf('=');
            _values[eq < 0 ? word : word[..eq]] = eq < 0 ? "" : word[(eq + 1)..];
        }
    }

    public bool Has(string flag) => _values.ContainsKey(flag);

    public string Get(string key, string fallback) => _values.TryGetValue(key, out var v) && v.Length > 0 ? v : fallback;

    public long Get(string key, long fallback) =>
        _values.TryGetValue(key, out var v) && long.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : fallback;
}

/// <summary>Turns a failed hypercall or XenStore result into an exception that crashes the guest with the reason.</summary>
internal static class GuestCheck
{
    public static long Ok(long rc, string what) =>
        rc >= 0 ? rc : throw new InvalidOperationException($"{what} failed: {Paravirt.Guest.XenGuest.ErrnoName(rc)}");
}
