namespace Paravirt.Cli.Host;

/// <summary>
/// Where <c>paravirt run</c> puts its control socket and <c>paravirt list</c> looks for them: the
/// <c>--runtime-dir</c> option, else <c>$PARAVIRT_RUNTIME_DIR</c>, else
/// <c>$XDG_RUNTIME_DIR/paravirt</c>, else <c>/tmp/paravirt-UID</c>. Created owner-only (0700).
/// </summary>
internal static class RuntimeDirectory
{
    public const string EnvironmentVariable = "PARAVIRT_RUNTIME_DIR";

    public static string Resolve(string? option)
    {
        if (!string.IsNullOrEmpty(option))
        {
            return Path.GetFullPath(option);
        }

        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } env)
        {
            return Path.GetFullPath(env);
        }

        if (Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg)
        {
            return Path.Combine(xdg, "paravirt");
        }

        return Path.Combine(Path.GetTempPath(), $"paravirt-{UserId()}");
    }

    /// <summary>Creates the directory (0700) if it is missing.</summary>
    public static void Create(string path)
    {
        if (!OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        else
        {
            Directory.CreateDirectory(path);
        }
    }

    /// <summary>The real user id from /proc/self/status (Linux), else the user name.</summary>
    private static string UserId()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                {
                    return line["Uid:".Length..].Trim().Split('\t', ' ')[0];
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return Environment.UserName;
    }
}
