using System.Diagnostics;

namespace Paravirt.Tests.Conformance;

/// <summary>The committed ABI JSON is exactly what <c>abi/generate.sh</c> makes from the installed Xen headers.</summary>
public sealed class AbiDriftTests
{
    [Fact]
    public async Task Committed_Json_Matches_Installed_Headers()
    {
        File.Exists("/usr/include/xen/xen.h").Should().BeTrue(
            "the Xen public headers are needed; install them with: apt-get install -y libxen-dev (the README's test command does)");

        var root = AbiData.RepoRoot;
        var fresh = Path.Combine(Path.GetTempPath(), $"paravirt-abi-{Guid.NewGuid():N}.json");
        try
        {
            var psi = new ProcessStartInfo("bash", [Path.Combine(root, "abi", "generate.sh"), fresh])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
            timeout.CancelAfter(TimeSpan.FromMinutes(2));
            try
            {
                await p.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                p.Kill(entireProcessTree: true);
                throw new TimeoutException("abi/generate.sh did not finish within two minutes");
            }

            p.ExitCode.Should().Be(0, $"abi/generate.sh failed:\n{await stderr}{await stdout}");

            var committed = File.ReadAllText(Path.Combine(root, "abi", AbiData.FileName));
            var regenerated = File.ReadAllText(fresh);
            regenerated.Should().Be(committed, "abi/xen-4.17-x86_64.json is stale; run abi/generate.sh and commit the result");
        }
        finally
        {
            File.Delete(fresh);
        }
    }

    [Fact]
    public void Json_Describes_Xen_4_17_On_X86_64()
    {
        AbiData.Committed.Xen.Should().Be("4.17");
        AbiData.Committed.Arch.Should().Be("x86_64");
    }
}
