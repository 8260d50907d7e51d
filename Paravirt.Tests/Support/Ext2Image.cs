using System.Diagnostics;

namespace Paravirt.Tests.Support;

/// <summary>
/// Makes an ext2 disk image (no partition table) holding given files, with e2fsprogs'
/// <c>mke2fs -t ext2 -d FOLDER</c> from a temporary folder, for guests that read a file system
/// (PV GRUB reads <c>/boot/grub/grub.cfg</c> from one: docs/boot.md). Fails, never skips, when
/// e2fsprogs is missing, naming the install step.
/// </summary>
internal static class Ext2Image
{
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Writes an image of <paramref name="sizeMiB"/> MiB at <paramref name="imagePath"/> whose root
    /// holds <paramref name="files"/> (relative paths with '/', folders made as needed).
    /// </summary>
    public static async Task CreateAsync(string imagePath, IReadOnlyDictionary<string, byte[]> files, int sizeMiB = 8, string label = "paravirt", CancellationToken ct = default, string fileSystem = "ext2")
    {
        var mke2fs = Find("mke2fs");
        var root = Directory.CreateTempSubdirectory("pv-ext2-").FullName;
        try
        {
            foreach (var (path, bytes) in files)
            {
                if (Path.IsPathRooted(path) || path.Split('/').Contains(".."))
                {
                    throw new ArgumentException($"'{path}' is not a relative path inside the image; expected e.g. boot/grub/grub.cfg", nameof(files));
                }

                var full = Path.Combine(root, path);
                Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                await File.WriteAllBytesAsync(full, bytes, ct);
            }

            File.Delete(imagePath);
            await RunAsync(mke2fs, ["-q", "-F", "-t", fileSystem, "-m", "0", "-L", label, "-d", root, imagePath, $"{sizeMiB}M"], ct);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>Reads a file back out of an image with e2fsprogs' <c>debugfs -R 'cat PATH'</c>.</summary>
    public static async Task<string> ReadFileAsync(string imagePath, string path, CancellationToken ct = default) =>
        await RunAsync(Find("debugfs"), ["-R", $"cat /{path}", imagePath], ct);

    /// <summary>
    /// Checks an image read-only with <c>e2fsck -fn</c>: returns its report when the file system is
    /// clean, throws with the report when e2fsck finds anything (a non-zero exit).
    /// </summary>
    public static async Task<string> CheckAsync(string imagePath, CancellationToken ct = default) =>
        await RunAsync(Find("e2fsck"), ["-fn", imagePath], ct);

    private static string Find(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin"]))
        {
            var candidate = Path.Combine(dir, tool);
            if (dir.Length > 0 && File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException($"{tool} (e2fsprogs) is not installed; install it with: apt-get install -y e2fsprogs (./test.sh does)");
    }

    private static async Task<string> RunAsync(string tool, string[] args, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        var stderr = p.StandardError.ReadToEndAsync(ct);
        try
        {
            await p.WaitForExitAsync(ct).WaitAsync(Bound, ct);
        }
        catch (TimeoutException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish within {Bound.TotalSeconds} s");
        }

        var output = await stdout;
        var errors = await stderr;
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{tool} {string.Join(' ', args)} exited with {p.ExitCode}: {errors.Trim()}");
        }

        return output;
    }
}
