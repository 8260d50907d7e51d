namespace Paravirt.Cli.Config;

/// <summary>
/// A domain configuration file that cannot be used. The message is <c>FILE:LINE: what was wrong;
/// expected …</c> (<c>FILE: …</c> when no single line is at fault, such as a missing key).
/// <see cref="NotSupported"/> marks valid xl.cfg that this build cannot honour yet.
/// </summary>
internal sealed class ConfigException(string file, int line, string what, string expected, bool notSupported = false)
    : Exception(line > 0 ? $"{file}:{line}: {what}; expected {expected}" : $"{file}: {what}; expected {expected}")
{
    public string File { get; } = file;

    /// <summary>1-based line, or 0 when the file as a whole is at fault.</summary>
    public int Line { get; } = line;

    public bool NotSupported { get; } = notSupported;
}
