namespace Paravirt.Benchmarks.Linux;

/// <summary>
/// Debian's kernels and busybox where <c>./test.sh</c> fetches them: <c>$PARAVIRT_CACHE</c>, else
/// <c>$XDG_CACHE_HOME/paravirt</c>, else <c>~/.cache/paravirt</c> (the tests' DebianLinux rule, without
/// their assertion library). A missing file is an exception naming the step that fetches it.
/// </summary>
internal static class KernelCache
{
    public static string Directory =>
        Environment.GetEnvironmentVariable("PARAVIRT_CACHE") is { Length: > 0 } dir ? dir
        : Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "paravirt");

    /// <summary>The one <c>vmlinuz-*</c> of a flavour's package (<c>linux-cloud</c>, <c>linux-generic</c>).</summary>
    public static string Kernel(string flavour = "linux-cloud")
    {
        var boot = Path.Combine(Directory, flavour, "boot");
        var kernels = System.IO.Directory.Exists(boot) ? System.IO.Directory.GetFiles(boot, "vmlinuz-*") : [];
        return kernels.Length == 1 ? kernels[0] : throw Missing($"one Debian kernel in {boot}");
    }

    /// <summary>A module of the cloud kernel's package by file name (e.g. xen-netfront.ko).</summary>
    public static string CloudModule(string fileName)
    {
        var modules = Path.Combine(Directory, "linux-cloud", "lib", "modules");
        var found = System.IO.Directory.Exists(modules) ? System.IO.Directory.GetFiles(modules, fileName, SearchOption.AllDirectories) : [];
        return found.Length == 1 ? found[0] : throw Missing($"{fileName} under {modules}");
    }

    public static string Busybox
    {
        get
        {
            var path = Path.Combine(Directory, "busybox", "bin", "busybox");
            return File.Exists(path) ? path : throw Missing(path);
        }
    }

    private static InvalidOperationException Missing(string what) =>
        new($"{what} is needed: run ./test.sh once, which fetches Debian's kernels and busybox-static into {Directory}");
}
