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
    /// <summary>The init scripts' wait (at most 60 s, in the guest) for blkfront to bring up /dev/xvda.</summary>
    private const string WaitForDisk = "n=0; while [ ! -b /dev/xvda ] && [ $n -lt 60 ]; do sleep 1; n=$((n+1)); done";

    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Applets = ["mount", "umount", "mkdir", "echo", "cat", "sleep", "insmod", "rmmod", "sync", "poweroff", "sh", "dd", "md5sum", "taskset", "ls", "wc"];

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
            var backendLog = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var options = new BlkBackOptions { Log = backendLog.Enqueue };
            var first = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true), options);
            using var console = new ConsoleWatcher(d.Console.Output, ct);
            PvKernelStart.Start(d, boot);

            // The driver let the device go (Closed) and was unloaded: detach the disk, as
            // `xl block-detach` would, and once Linux has dropped the vbd attach it again
            // (`xl block-attach`); the reloaded driver finds the new vbd and connects afresh.
            // (Linux's xenbus_dev_remove leaves a driver without allow_rebind Closed: the same
            // device object does not connect twice, so the toolstack makes a new one.)
            await console.WaitForAsync(d, $"UNLOADED-{mark}", Bound, ct);
            var frontendKeys = new[] { "feature-persistent", "multi-queue-num-queues", "ring-page-order", "protocol" }
                .Select(k => $"{k}={hv.XenStore.Read($"{first.FrontendPath}/{k}") ?? "(none)"}").ToArray();
            hv.XenStore.Read(first.BackendPath + "/state").Should().Be("6", "the backend is Closed once the frontend is (blkback's frontend_changed)");
            await first.DisposeAsync();
            await d.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            await console.WaitForAsync(d, $"DETACHED-{mark}", Bound, ct);
            await using var second = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true), options);
            await d.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);

            var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
            d.Destroy();
            var text = await console.Completed.WaitAsync(Bound, ct);
            var output = TestContext.Current.TestOutputHelper;
            output?.WriteLine($"frontend keys (first connection): {string.Join(", ", frontendKeys)}");
            frontendKeys.Should().Contain("feature-persistent=1", "Linux 6.1's blkfront takes persistent grants when offered");
            output?.WriteLine($"first: {first.Stats}");
            output?.WriteLine($"second: {second.Stats}");
            foreach (var line in backendLog)
            {
                output?.WriteLine(line);
            }

            foreach (var line in text.Split('\n').Where(l => l.Contains("blkfront", StringComparison.Ordinal)))
            {
                output?.WriteLine(line);
            }

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

    /// <summary>
    /// Linux's blkfront on two vCPUs against a backend offering four queues: it asks for two
    /// (one per CPU), persistent grants and indirect descriptors. Two readers pinned one to each
    /// CPU read 8 MiB each through the page cache (readahead sends 128 KiB requests: indirect,
    /// 32 segments); a copy of 4 MiB inside the disk writes back the same way. The checksums the
    /// guest prints, and the copy in the image, are checked against the host's bytes.
    /// </summary>
    [Fact]
    public async Task Linux_Blkfront_On_Two_Vcpus_Uses_Two_Queues_Persistent_Grants_And_Indirect_Requests()
    {
        var ct = TestContext.Current.CancellationToken;
        var mark = Guid.NewGuid().ToString("N");
        var dir = Directory.CreateTempSubdirectory("paravirt-blkfront-mq-").FullName;
        try
        {
            var image = Path.Combine(dir, "xvda.img");
            var bytes = new byte[24 << 20];
            new Random(51).NextBytes(bytes);
            await File.WriteAllBytesAsync(image, bytes, ct);
            var init = $"""
                #!/bin/sh
                mount -t proc proc /proc
                mount -t sysfs sys /sys
                mount -t devtmpfs dev /dev
                mkdir -p /tmp
                insmod /xen-blkfront.ko
                {WaitForDisk}
                echo "QUEUES-$(ls /sys/block/xvda/mq | wc -l)"
                taskset -c 0 sh -c 'dd if=/dev/xvda bs=1M count=8 2>/dev/null | md5sum > /tmp/a' &
                taskset -c 1 sh -c 'dd if=/dev/xvda bs=1M skip=8 count=8 2>/dev/null | md5sum > /tmp/b' &
                wait
                echo "READ0-$(cat /tmp/a)"
                echo "READ1-$(cat /tmp/b)"
                taskset -c 1 dd if=/dev/xvda of=/dev/xvda bs=1M count=4 seek=16 conv=fsync 2>/dev/null && echo WROTE-{mark}
                read go
                poweroff -f
                """;
            var ramdisk = Initramfs.Busybox(DebianLinux.Busybox, init, Applets)
                .FileEntry("xen-blkfront.ko", await File.ReadAllBytesAsync(DebianLinux.CloudModule("kernel/drivers/block/xen-blkfront.ko"), ct))
                .ToGzip();
            var (d, boot) = hv.CreatePvDomain(
                new DomainConfig { Name = "linux-blkfront-mq", MemoryMiB = 256, Vcpus = 2, AutoTranslated = false, CommandLine = "console=hvc0" },
                await File.ReadAllBytesAsync(DebianLinux.CloudKernel, ct),
                ramdisk);
            await using var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: true), new BlkBackOptions { MaxQueues = 4 });
            using var console = new ConsoleWatcher(d.Console.Output, ct);
            PvKernelStart.Start(d, boot);

            await console.WaitForAsync(d, $"WROTE-{mark}", Bound, ct);
            var queues = disk.Queues;
            var perQueue = disk.QueueRequests;
            var persistent = disk.UsesPersistentGrants;
            var keptGrants = disk.PersistentGrantCount;
            var frontendQueues = hv.XenStore.Read(disk.FrontendPath + "/multi-queue-num-queues");
            await d.Console.Input.WriteAsync("go\n"u8.ToArray(), ct);
            var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
            d.Destroy();
            var text = await console.Completed.WaitAsync(Bound, ct);
            var stats = disk.Stats;
            var output = TestContext.Current.TestOutputHelper;
            output?.WriteLine($"queues {queues} (frontend multi-queue-num-queues={frontendQueues}), requests per queue [{string.Join(", ", perQueue)}], persistent {persistent} ({keptGrants} grants kept)");
            output?.WriteLine(stats.ToString());
            foreach (var line in text.Split('\n').Where(l => l.Contains("blkfront", StringComparison.Ordinal) || l.Contains("QUEUES", StringComparison.Ordinal)))
            {
                output?.WriteLine(line);
            }

            exit.State.Should().Be(DomainState.Shutdown, $"the init script ends with poweroff -f; it ended {exit} with console:\n{text}");
            text.Should().Contain("QUEUES-2", "blk-mq made one hardware queue per vCPU");
            text.Should().Contain($"READ0-{Md5(bytes.AsSpan(0, 8 << 20))}", "the reader on vCPU 0 read the image's first 8 MiB");
            text.Should().Contain($"READ1-{Md5(bytes.AsSpan(8 << 20, 8 << 20))}", "the reader on vCPU 1 the next 8 MiB");
            foreach (var bad in Forbidden)
            {
                text.Should().NotContain(bad, $"the console:\n{text}");
            }

            queues.Should().Be(2);
            frontendQueues.Should().Be("2");
            perQueue.Should().HaveCount(2).And.OnlyContain(n => n > 0, "both rings carried requests");
            persistent.Should().BeTrue();
            keptGrants.Should().BeGreaterThan(0);
            stats.IndirectRequests.Should().BeGreaterThan(0, "readahead and writeback send requests larger than 11 segments");
            stats.PersistentGrantsReused.Should().BeGreaterThan(0);
            stats.Errors.Should().Be(0);
            stats.Unsupported.Should().Be(0);
            var after = await File.ReadAllBytesAsync(image, ct);
            after.AsSpan(16 << 20, 4 << 20).SequenceEqual(bytes.AsSpan(0, 4 << 20)).Should().BeTrue("dd copied the first 4 MiB to 16 MiB");
            after.AsSpan(0, 16 << 20).SequenceEqual(bytes.AsSpan(0, 16 << 20)).Should().BeTrue("and changed nothing before it");
            after.AsSpan(20 << 20).SequenceEqual(bytes.AsSpan(20 << 20)).Should().BeTrue("or after it");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string Md5(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData(data));
}
