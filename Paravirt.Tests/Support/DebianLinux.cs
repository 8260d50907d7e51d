namespace Paravirt.Tests.Support;

/// <summary>
/// Debian's own Linux kernels and busybox, as <c>./test.sh</c> fetches them into the cache
/// (<c>$PARAVIRT_CACHE</c>, else <c>~/.cache/paravirt</c>): <c>apt-get download</c> of the
/// <c>-unsigned</c> image package that <c>linux-image-cloud-amd64</c> / <c>linux-image-amd64</c>
/// depend on, and of <c>busybox-static</c>, each unpacked with <c>dpkg -x</c>. A test that needs
/// one and finds none fails naming the step; it never skips.
/// </summary>
internal static class DebianLinux
{
    public static string CacheDirectory =>
        Environment.GetEnvironmentVariable("PARAVIRT_CACHE") is { Length: > 0 } dir ? dir
        : Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "paravirt");

    /// <summary>linux-image-cloud-amd64's kernel: LZ4 payload.</summary>
    public static string CloudKernel => Kernel("linux-cloud", "linux-image-cloud-amd64");

    /// <summary>linux-image-amd64's kernel: XZ payload.</summary>
    public static string GenericKernel => Kernel("linux-generic", "linux-image-amd64");

    /// <summary>busybox-static's statically linked busybox.</summary>
    public static string Busybox
    {
        get
        {
            var path = Path.Combine(CacheDirectory, "busybox", "bin", "busybox");
            File.Exists(path).Should().BeTrue(
                $"busybox-static is needed at {path}: run ./test.sh, which fetches it (apt-get download busybox-static && dpkg -x busybox-static_*.deb {Path.GetDirectoryName(Path.GetDirectoryName(path))})");
            return path;
        }
    }

    /// <summary>A module of the cloud kernel's package, by its path under <c>lib/modules/VERSION/</c> (e.g. kernel/drivers/block/xen-blkfront.ko).</summary>
    public static string CloudModule(string relativePath)
    {
        var modules = Path.Combine(CacheDirectory, "linux-cloud", "lib", "modules");
        var found = Directory.Exists(modules) ? Directory.GetDirectories(modules).Select(v => Path.Combine(v, relativePath)).Where(File.Exists).ToArray() : [];
        found.Should().ContainSingle(
            $"{relativePath} of Debian's linux-image-cloud-amd64 is needed in {modules}: run ./test.sh, which fetches the kernel package (apt-get download linux-image-<version>-unsigned, then dpkg -x into {Path.Combine(CacheDirectory, "linux-cloud")})");
        return found[0];
    }

    private static string Kernel(string folder, string meta)
    {
        var boot = Path.Combine(CacheDirectory, folder, "boot");
        var found = Directory.Exists(boot) ? Directory.GetFiles(boot, "vmlinuz-*") : [];
        found.Should().ContainSingle(
            $"Debian's {meta} kernel is needed in {boot}: run ./test.sh, which fetches it (apt-get download linux-image-<version>-unsigned for the version {meta} depends on, then dpkg -x into {Path.Combine(CacheDirectory, folder)})");
        return found[0];
    }
}
