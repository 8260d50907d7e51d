using System.Globalization;
using System.Text;
using System.Text.Json;
using Paravirt.Core.Domains;

namespace Paravirt.Cli.Host;

/// <summary>One row of the domain table (<c>paravirt list</c>, and the end of <c>demo</c> and <c>run</c>): a domain's state and meter.</summary>
/// <param name="Host">The process id of the <c>paravirt</c> host the domain lives in.</param>
internal sealed record DomainRow(
    int Host,
    int Id,
    string Name,
    string State,
    long MemoryMiB,
    int Vcpus,
    double CpuSeconds,
    long Hypercalls,
    long EventsSent,
    long EventsReceived,
    long BlockBytesRead,
    long BlockBytesWritten,
    long NetworkBytesReceived,
    long NetworkBytesSent)
{
    /// <summary>The row of <paramref name="d"/> now. Read before the domain is destroyed: a dead domain holds no memory.</summary>
    public static DomainRow Of(Domain d, int host)
    {
        ArgumentNullException.ThrowIfNull(d);
        var (netRx, netTx) = NetworkBytes(d);
        return new DomainRow(
            host,
            d.Id,
            d.Name,
            StateName(d),
            d.TotalPages / 256,
            d.VcpuList.Count,
            d.CpuTimeNs / 1e9,
            d.Meter.TotalHypercalls,
            d.Meter.EventsSent,
            d.Meter.EventsReceived,
            d.Meter.BlockBytesRead,
            d.Meter.BlockBytesWritten,
            netRx,
            netTx);
    }

    /// <summary>The bytes the domain's vifs received (netback delivered into its buffers) and sent (into their switches).</summary>
    private static (long Received, long Sent) NetworkBytes(Domain d) => (d.Meter.NetBytesReceived, d.Meter.NetBytesSent);

    /// <summary>xl's words: running, paused, shutdown (with the reason), crashed, dying.</summary>
    private static string StateName(Domain d) => d.State switch
    {
        DomainState.Created => "created",
        DomainState.Running => "running",
        DomainState.Paused => "paused",
        DomainState.Shutdown => d.Exit is { } e ? $"shutdown:{ShutdownName(e.ShutdownCode)}" : "shutdown",
        DomainState.Crashed => "crashed",
        _ => "dying",
    };

    internal static string ShutdownName(uint code) => code switch
    {
        Core.Abi.Sched.SHUTDOWN_poweroff => "poweroff",
        Core.Abi.Sched.SHUTDOWN_reboot => "reboot",
        Core.Abi.Sched.SHUTDOWN_suspend => "suspend",
        Core.Abi.Sched.SHUTDOWN_crash => "crash",
        Core.Abi.Sched.SHUTDOWN_watchdog => "watchdog",
        Core.Abi.Sched.SHUTDOWN_soft_reset => "soft_reset",
        _ => code.ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>The domain table: rows of a hypervisor, as text or JSON lines.</summary>
internal static class DomainTable
{
    /// <summary>Every domain of <paramref name="hv"/> now (domain 0, the host, is not listed).</summary>
    public static IReadOnlyList<DomainRow> Snapshot(Hypervisor hv, int host) =>
        [.. hv.Domains.Select(d => DomainRow.Of(d, host))];

    /// <summary>Writes the table; <paramref name="withHost"/> adds the host process id column (<c>list</c> sees several hosts).</summary>
    public static void WriteText(TextWriter o, IEnumerable<DomainRow> rows, bool withHost)
    {
        ArgumentNullException.ThrowIfNull(o);
        var host = withHost ? $"{"Host",-8} " : "";
        o.WriteLine($"{host}{"Name",-16} {"ID",5} {"State",-17} {"Mem(MiB)",8} {"VCPUs",5} {"Time(s)",8} {"Hypercalls",10} {"Events(tx/rx)",15} {"Block(r/w bytes)",22} {"Net(rx/tx bytes)",17}");
        foreach (var r in rows)
        {
            var h = withHost ? $"{r.Host,-8} " : "";
            o.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{h}{r.Name,-16} {r.Id,5} {r.State,-17} {r.MemoryMiB,8} {r.Vcpus,5} {r.CpuSeconds,8:0.000} {r.Hypercalls,10} {$"{r.EventsSent}/{r.EventsReceived}",15} {$"{r.BlockBytesRead}/{r.BlockBytesWritten}",22} {$"{r.NetworkBytesReceived}/{r.NetworkBytesSent}",17}"));
        }
    }

    /// <summary>One row as one line of JSON (no reflection: Utf8JsonWriter).</summary>
    public static string ToJson(DomainRow r)
    {
        ArgumentNullException.ThrowIfNull(r);
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("host", r.Host);
            w.WriteNumber("id", r.Id);
            w.WriteString("name", r.Name);
            w.WriteString("state", r.State);
            w.WriteNumber("memoryMiB", r.MemoryMiB);
            w.WriteNumber("vcpus", r.Vcpus);
            w.WriteNumber("cpuSeconds", r.CpuSeconds);
            w.WriteNumber("hypercalls", r.Hypercalls);
            w.WriteNumber("eventsSent", r.EventsSent);
            w.WriteNumber("eventsReceived", r.EventsReceived);
            w.WriteNumber("blockBytesRead", r.BlockBytesRead);
            w.WriteNumber("blockBytesWritten", r.BlockBytesWritten);
            w.WriteNumber("networkBytesReceived", r.NetworkBytesReceived);
            w.WriteNumber("networkBytesSent", r.NetworkBytesSent);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>Parses a line written by <see cref="ToJson"/>.</summary>
    /// <exception cref="FormatException">Not such a line.</exception>
    public static DomainRow FromJson(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            var e = doc.RootElement;
            return new DomainRow(
                e.GetProperty("host").GetInt32(),
                e.GetProperty("id").GetInt32(),
                e.GetProperty("name").GetString() ?? "",
                e.GetProperty("state").GetString() ?? "",
                e.GetProperty("memoryMiB").GetInt64(),
                e.GetProperty("vcpus").GetInt32(),
                e.GetProperty("cpuSeconds").GetDouble(),
                e.GetProperty("hypercalls").GetInt64(),
                e.GetProperty("eventsSent").GetInt64(),
                e.GetProperty("eventsReceived").GetInt64(),
                e.GetProperty("blockBytesRead").GetInt64(),
                e.GetProperty("blockBytesWritten").GetInt64(),
                e.GetProperty("networkBytesReceived").GetInt64(),
                e.GetProperty("networkBytesSent").GetInt64());
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new FormatException($"not a domain row: {ex.Message}", ex);
        }
    }
}
