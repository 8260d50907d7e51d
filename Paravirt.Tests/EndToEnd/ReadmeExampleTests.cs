using System.Text;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>The README's embedding example, run as written there (keep the two in step).</summary>
public sealed class ReadmeExampleTests
{
    // --- the README's guest, verbatim ---
    private sealed class HelloDisk : GuestKernel
    {
        protected override void Run(GuestRuntime rt)
        {
            using var disk = BlockFrontend.Connect(rt);                  // device/vbd/51712 (xvda)
            rt.Out.WriteLine($"xvda: {disk.SectorCount} sectors of {disk.SectorSize} bytes");
            var sector = new byte[disk.SectorSize];
            Encoding.ASCII.GetBytes("hello, disk").CopyTo(sector, 0);
            disk.Write(0, sector);                                       // through a granted page
            disk.Flush();
            Array.Clear(sector);
            disk.Read(0, sector);
            rt.Out.WriteLine(Encoding.ASCII.GetString(sector, 0, 11));
        }                                                                // returning powers off
    }

    [Fact]
    public async Task The_Readme_Host_Program_Boots_A_Guest_With_A_Console_And_A_Disk()
    {
        var ct = TestContext.Current.CancellationToken;
        var path = Path.Combine(Path.GetTempPath(), $"paravirt-readme-{Guid.NewGuid():N}.img");
        try
        {
            // --- the README's host program, verbatim but for the path and the collected lines ---
            File.WriteAllBytes(path, new byte[1 << 20]);                 // a 1 MiB disk image
            using var hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 256 });
            var dom = hv.CreateDomain(new DomainConfig { Name = "hello", MemoryMiB = 16 });
            await using var disk = dom.AttachDisk("xvda", BlockDevice.OpenFile(path, writable: true));
            dom.Start(new HelloDisk());
            var exit = await dom.WaitForShutdownAsync(ct).WaitAsync(GuestRunner.Timeout, ct);
            dom.Destroy();                                               // the console backend drains the ring one last time
            var lines = new List<string>();
            await foreach (var line in dom.Console.ReadLinesAsync(ct))
            {
                lines.Add(line);                                         // the README prints them
            }

            exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
            lines.Should().Equal("xvda: 2048 sectors of 512 bytes", "hello, disk");
            await disk.DisposeAsync();
            var image = File.ReadAllBytes(path);
            Encoding.ASCII.GetString(image, 0, 11).Should().Be("hello, disk", "the guest's write reached the host file");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
