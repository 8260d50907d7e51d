using System.IO.Pipelines;
using System.Text;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Debian's PV GRUB 2 (<c>grub-x86_64-xen.bin</c> from grub-xen-host), a real 64-bit PV kernel nobody
/// here wrote, booted by the ELF domain builder and run on the interpreter: it reads its grub.cfg
/// from an ext2 disk through blkback and XenStore, prints to the console ring, takes input from it,
/// and powers off with SCHEDOP_shutdown.
/// </summary>
public sealed class PvGrubEndToEndTests : IDisposable
{
    private const string GrubImage = "/usr/lib/grub-xen/grub-x86_64-xen.bin";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(120);
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 256 });
    private readonly string dir = Directory.CreateTempSubdirectory("paravirt-pvgrub-").FullName;

    public void Dispose()
    {
        hv.Dispose();
        Directory.Delete(dir, recursive: true);
    }

    internal static byte[] ReadGrub()
    {
        File.Exists(GrubImage).Should().BeTrue($"PV GRUB is at {GrubImage} once grub-xen-host is installed (apt-get install -y grub-xen-host; ./test.sh installs it)");
        return File.ReadAllBytes(GrubImage);
    }

    [Fact]
    public async Task Pv_Grub_Reads_Its_Config_From_An_Ext2_Disk_Echoes_The_Marker_And_Powers_Off()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = $"PARAVIRT-PVGRUB-{Guid.NewGuid():N}";
        var image = Path.Combine(dir, "boot.img");
        await Ext2Image.CreateAsync(image, new Dictionary<string, byte[]>
        {
            ["boot/grub/grub.cfg"] = Encoding.ASCII.GetBytes($"echo \"{marker}\"\nhalt\n"),
        }, sizeMiB: 8, ct: ct);
        var frames = hv.Frames.FreeFrames;

        var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = "pvgrub", MemoryMiB = 64 }, ReadGrub());
        var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: false));
        var output = CollectAsync(d.Console.Output, ct);
        PvKernelStart.Start(d, boot);

        var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
        d.Destroy(); // closes the console, which completes its output stream
        var text = await output.WaitAsync(Bound, ct);
        exit.State.Should().Be(DomainState.Shutdown, $"GRUB's halt is SCHEDOP_shutdown(poweroff); it ended {exit} with console:\n{text}");
        exit.ShutdownCode.Should().Be(0u);
        text.Should().Contain("Welcome to GRUB!").And.Contain(marker, "grub.cfg was read from the ext2 disk through blkback");
        d.Meter.BlockBytesRead.Should().BeGreaterThan(0);
        d.Meter.Hypercalls(Core.Abi.Xen.__HYPERVISOR_mmu_update).Should().BeGreaterThan(0, "GRUB builds its own mappings with mmu_update");
        hv.Frames.FreeFrames.Should().Be(frames, "every frame of the PV domain (RAM, page tables, grant frames) returns at destroy");
    }

    [Fact]
    public async Task Without_A_Disk_Pv_Grub_Stops_At_Its_Prompt_And_Runs_What_The_Host_Types()
    {
        var ct = TestContext.Current.CancellationToken;
        var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = "pvgrub-prompt", MemoryMiB = 64 }, ReadGrub());
        var seen = new StringBuilder();
        PvKernelStart.Start(d, boot);

        await ReadUntilAsync(d.Console.Output, seen, "grub> ", ct);
        var marker = $"typed-{Guid.NewGuid():N}";
        await d.Console.Input.WriteAsync(Encoding.ASCII.GetBytes($"echo {marker}\r"), ct);
        await ReadUntilAsync(d.Console.Output, seen, marker, ct); // the typed echo has cursor moves between letters; only the output is contiguous
        await d.Console.Input.WriteAsync("halt\r"u8.ToArray(), ct);

        var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
        exit.State.Should().Be(DomainState.Shutdown, $"halt typed at the prompt powers GRUB off; console:\n{seen}");
    }

    private static async Task<string> CollectAsync(PipeReader reader, CancellationToken ct)
    {
        var text = new StringBuilder();
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            foreach (var segment in result.Buffer)
            {
                text.Append(Encoding.Latin1.GetString(segment.Span));
            }

            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return text.ToString();
            }
        }
    }

    private static async Task ReadUntilAsync(PipeReader reader, StringBuilder seen, string wanted, CancellationToken ct)
    {
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bound.CancelAfter(Bound);
        try
        {
            while (!seen.ToString().Contains(wanted, StringComparison.Ordinal))
            {
                var result = await reader.ReadAsync(bound.Token);
                foreach (var segment in result.Buffer)
                {
                    seen.Append(Encoding.Latin1.GetString(segment.Span));
                }

                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
        }

        seen.ToString().Should().Contain(wanted, $"GRUB should print it within {Bound.TotalSeconds} s; the console so far:\n{seen}");
    }
}
