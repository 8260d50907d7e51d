using System.Text;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Linux's own xen-blkfront (the module from Debian's cloud kernel package, which nobody here
/// wrote) against blkback, over its whole life cycle in one boot: load, mount an ext4 disk
/// read-write and write to it, unmount, unbind the device and unload the driver (rmmod), load
/// it again (reconnect), write again,
/// sync, unmount, and power off; the host then reads the files out of the image and e2fsck finds
/// it clean. Power-off is where Linux closes every xenbus device and waits 5 s for a backend that
/// does not answer Closing ("timeout closing device").
/// </summary>
public sealed class LinuxBlockFrontTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Applets = ["mount", "umount", "mkdir", "echo", "cat", "sleep", "insmod", "rmmod", "sync", "poweroff", "sh"];

    private static readonly string[] Forbidden = ["timeout closing device", "I/O error", "Oops", "BUG:", "WARNING:", "general protection fault", "Call Trace", "EXT4-fs error"];

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 400 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Linux_Blkfront_Mounts_Writes_Unloads_Reconnects_And_Shuts_Down_Cleanly_With_The_Files_In_The_Image()
    {
        var ct = TestContext.Current.CancellationToken;
        var mark = Guid.NewGuid().ToString("N");
        var dir = Directory.CreateTempSubdirectory("paravirt-blkfront-").FullName;
        try
        {
            var image = Path.Combine(dir, "xvda.img");
            await Ext2Image.CreateAsync(image, new Dictionary<string, byte[]> { ["seed.txt"] = Encoding.ASCII.GetBytes($"seed-{mark}\n") }, sizeMiB: 32, ct: ct, fileSystem: "ext4");
            const string WaitForDisk = "n=0; while [ ! -b /dev/xvda ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done";
            var init = $"""
                #!/bin/sh
                mount -t proc proc /proc
                mount -t sysfs sys /sys
                mount -t devtmpfs dev /dev
                mkdir -p /mnt
                insmod /xen-blkfront.ko
                {WaitForDisk}
                mount -t ext4 /dev/xvda /mnt && cat /mnt/seed.txt
                echo first-{mark} > /mnt/first.txt
                umount /mnt
                echo vbd-51712 > /sys/bus/xen/drivers/vbd/unbind && echo UNBOUND-{mark}
                rmmod xen_blkfront && echo UNLOADED-{mark}
                read go
                n=0; while [ -e /sys/bus/xen/devices/vbd-51712 ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done
                [ -e /sys/bus/xen/devices/vbd-51712 ] || echo DETACHED-{mark}
                read go
                insmod /xen-blkfront.ko
                {WaitForDisk}
                mount -t ext4 /dev/xvda /mnt && echo REMOUNTED-{mark}
                echo second-{mark} > /mnt/second.txt
                sync
                umount /mnt
                echo DONE-{mark}
                poweroff -f
                """;
            var ramdisk = Initramfs.Busybox(DebianLinux.Busybox, init, Applets)
                .FileEntry("xen-blkfront.ko", await File.ReadAllBytesAsync(DebianLinux.CloudModule("kernel/drivers/block/xen-blkfront.ko"), ct))
                .ToGzip();
            var free = hv.Frames.FreeFrames;
            var (d, boot) = hv.CreatePvDomain(
                new DomainConfig { Name = "linux-blkfront", MemoryMiB = 256, AutoTranslated = false, CommandLine = "console=hvc0" },
                await File.ReadAllBytesAsync(DebianLinux.CloudKernel, ct),
                ramdisk);
            var first = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true));
            using var console = new ConsoleWatcher(d.Console.Output, ct);
            PvKernelStart.Start(d, boot);

            // The driver let the device go (Closed) and was unloaded: detach the disk, as
            // `xl block-detach` would, and once Linux has dropped the vbd attach it again
            // (`xl block-attach`); the reloaded driver finds the new vbd and connects afresh.
            // (Linux's xenbus_dev_remove leaves a driver without allow_rebind Closed: the same
            // device object does not connect twice, so the toolstack makes a new one.)
            await console.WaitForAsync(d, $"UNLOADED-{mark}", Bound, ct);
            hv.XenStore.Read(first.BackendPath + "/state").Should().Be("6", "the backend is Closed once the frontend is (blkback's frontend_changed)");
            await first.DisposeAsync();
            await d.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            await console.WaitForAsync(d, $"DETACHED-{mark}", Bound, ct);
            await using var second = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true));
            await d.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);

            var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
            d.Destroy();
            var text = await console.Completed.WaitAsync(Bound, ct);

            exit.State.Should().Be(DomainState.Shutdown, $"the init script ends with poweroff -f; it ended {exit} with console:\n{text}");
            text.Should().Contain($"seed-{mark}", "the first mount read the disk")
                .And.Contain($"UNBOUND-{mark}", "unbinding vbd-51712 closed the device (xenbus holds the module while a device is bound)")
                .And.Contain($"UNLOADED-{mark}", "rmmod xen_blkfront then unloaded the driver")
                .And.Contain($"REMOUNTED-{mark}", "the reloaded driver reconnected")
                .And.Contain($"DONE-{mark}");
            foreach (var bad in Forbidden)
            {
                text.Should().NotContain(bad, $"the console:\n{text}");
            }

            (await Ext2Image.ReadFileAsync(image, "first.txt", ct)).Should().Be($"first-{mark}\n");
            (await Ext2Image.ReadFileAsync(image, "second.txt", ct)).Should().Be($"second-{mark}\n");
            await Ext2Image.CheckAsync(image, ct); // throws with e2fsck's report unless clean
            hv.Frames.FreeFrames.Should().Be(free, "every frame of the domain returns at destroy");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
