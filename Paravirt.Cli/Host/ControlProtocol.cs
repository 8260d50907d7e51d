using System.Text;
using System.Text.Json;

namespace Paravirt.Cli.Host;

/// <summary>
/// A request to a <c>paravirt host</c> on its control socket: one line of JSON, e.g.
/// <c>{"verb":"shutdown","domain":"web","wait":true}</c>. Written with <see cref="Utf8JsonWriter"/>
/// and read with <see cref="JsonDocument"/> (no reflection).
/// </summary>
/// <param name="Verb">create, console, shutdown, reboot, destroy, pause, unpause, vcpu-list or info.</param>
internal sealed record ControlRequest(string Verb)
{
    /// <summary>The domain's name or id (console, shutdown, reboot, destroy, pause, unpause; vcpu-list optionally).</summary>
    public string? Domain { get; init; }

    /// <summary>create: the config file's absolute path (the host reads it: paths in it are relative to its folder).</summary>
    public string? Config { get; init; }

    /// <summary>shutdown, reboot: answer once the domain has ended and its on_* action was taken, not at the guest's acknowledgement.</summary>
    public bool Wait { get; init; }

    /// <summary>shutdown, reboot: how long the guest has to acknowledge the request (libxl: 60 s).</summary>
    public double? TimeoutSeconds { get; init; }

    /// <summary>The request as one line of JSON (no newline).</summary>
    public string ToJson() => ControlJson.Write(w =>
    {
        w.WriteString("verb", Verb);
        if (Domain is not null)
        {
            w.WriteString("domain", Domain);
        }

        if (Config is not null)
        {
            w.WriteString("config", Config);
        }

        if (Wait)
        {
            w.WriteBoolean("wait", true);
        }

        if (TimeoutSeconds is { } t)
        {
            w.WriteNumber("timeout", t);
        }
    });

    /// <summary>Parses a line written by <see cref="ToJson"/>.</summary>
    /// <exception cref="FormatException">Not such a line.</exception>
    public static ControlRequest Parse(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            var e = doc.RootElement;
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("verb", out var verb) || verb.ValueKind != JsonValueKind.String)
            {
                throw new FormatException("a request is a JSON object with a \"verb\" string");
            }

            return new ControlRequest(verb.GetString()!)
            {
                Domain = e.TryGetProperty("domain", out var d) ? d.GetString() : null,
                Config = e.TryGetProperty("config", out var c) ? c.GetString() : null,
                Wait = e.TryGetProperty("wait", out var w) && w.GetBoolean(),
                TimeoutSeconds = e.TryGetProperty("timeout", out var t) ? t.GetDouble() : null,
            };
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            throw new FormatException($"not a request: {ex.Message}", ex);
        }
    }
}

/// <summary>
/// The host's answers: one line of JSON, <c>{"ok":true, …}</c> or <c>{"ok":false,"code":N,"error":"…"}</c>
/// where N is the exit code the verb gives (docs/cli.md).
/// </summary>
internal static class ControlReply
{
    public static string Ok(Action<Utf8JsonWriter>? body = null) => ControlJson.Write(w =>
    {
        w.WriteBoolean("ok", true);
        body?.Invoke(w);
    });

    public static string Error(int code, string message) => ControlJson.Write(w =>
    {
        w.WriteBoolean("ok", false);
        w.WriteNumber("code", code);
        w.WriteString("error", message);
    });
}

internal static class ControlJson
{
    /// <summary>One JSON object, its members written by <paramref name="members"/>, as a line without the newline.</summary>
    public static string Write(Action<Utf8JsonWriter> members)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            members(w);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }
}
