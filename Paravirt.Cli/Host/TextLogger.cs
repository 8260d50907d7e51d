using Microsoft.Extensions.Logging;

namespace Paravirt.Cli.Host;

/// <summary>
/// The hypervisor's log on stderr for <c>paravirt run --log-level</c>: one line per entry,
/// "paravirt: LEVEL: message", at or above the chosen level. Lines are written whole.
/// </summary>
internal sealed class TextLogger(TextWriter writer, LogLevel minimum) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= minimum;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        if (!IsEnabled(logLevel))
        {
            return;
        }

        var text = formatter(state, exception);
        writer.WriteLine(exception is null ? $"paravirt: {Name(logLevel)}: {text}" : $"paravirt: {Name(logLevel)}: {text}: {exception.Message}");
    }

    private static string Name(LogLevel level) => level switch
    {
        LogLevel.Trace => "trace",
        LogLevel.Debug => "debug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warning",
        LogLevel.Error => "error",
        _ => "critical",
    };
}
