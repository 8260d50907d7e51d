namespace Paravirt.Tests.Boot;

/// <summary>Debian's PV GRUB (package grub-xen-host): a real x86-64 Xen PV kernel image.</summary>
internal static class RealKernel
{
    public const string GrubX86_64 = "/usr/lib/grub-xen/grub-x86_64-xen.bin";

    /// <summary>The image's path; fails the test (never skips it) when the package is missing.</summary>
    public static string Path()
    {
        File.Exists(GrubX86_64).Should().BeTrue(
            $"the real PV kernel {GrubX86_64} is needed; install it with: apt-get install -y grub-xen-host (./test.sh does)");
        return GrubX86_64;
    }

    public static byte[] Bytes() => File.ReadAllBytes(Path());
}
