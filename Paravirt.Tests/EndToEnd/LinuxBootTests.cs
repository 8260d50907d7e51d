using System.IO.Pipelines;
using System.Text;
using System.Text.RegularExpressions;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Boot;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// Debian 12's own Linux kernels (linux-image-cloud-amd64: LZ4 bzImage; linux-image-amd64: XZ),
/// unmodified, booted as 64-bit PV domUs on the interpreter with a busybox initramfs the test
/// builds, to a shell that runs processes and pipes and takes typed commands, on 1 and 2 vCPUs,
/// ending by poweroff, reboot and panic. Each boot costs tens of seconds: one per way of ending.
/// </summary>
public sealed partial class LinuxBootTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(4);

    private static readonly string[] Applets = ["mount", "echo", "cat", "poweroff", "reboot", "nproc", "tr", "seq", "wc", "uname", "grep", "taskset", "sh"];

    /// <summary>What Xen would never make a guest print, and what Linux prints when it breaks.</summary>
    private static readonly string[] Forbidden = ["unchecked MSR access", "Unable to read cpu state", "Oops", "BUG:", "WARNING:", "general protection fault", "Call Trace"];

    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 400 });

    public void Dispose()
    {
        hv.Dispose();
        _consoles.ForEach(c => c.Dispose());
    }

    private static byte[] Initramfs(string init) => Support.Initramfs.Busybox(DebianLinux.Busybox, init, Applets).ToGzip();

    private static string Init(string body) => $"""
        #!/bin/sh
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        {body}
        """;

    private (Domain Domain, ConsoleWatcher Console) Boot(string kernel, byte[] ramdisk, int vcpus, CancellationToken ct)
    {
        var (d, boot) = hv.CreatePvDomain(
            new DomainConfig { Name = $"linux-{vcpus}", MemoryMiB = 256, Vcpus = vcpus, AutoTranslated = false, CommandLine = "console=hvc0" },
            File.ReadAllBytes(kernel),
            ramdisk);
        var console = Watch(d, ct);
        PvKernelStart.Start(d, boot);
        return (d, console);
    }

    [Fact]
    public async Task The_Cloud_Kernel_Boots_To_Init_Runs_Processes_And_Pipes_Takes_Typed_Commands_And_Powers_Off()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = $"PARAVIRT-{Guid.NewGuid():N}";
        var free = hv.Frames.FreeFrames;
        var (d, console) = Boot(DebianLinux.CloudKernel, Initramfs(Init($"""
            echo "{marker} init"
            echo "lines=$(seq 1 500 | wc -l)"
            echo paravirt | tr a-z A-Z
            for i in 1 2 3; do sh -c 'echo "child $$"'; done
            echo "{marker} ready"
            exec sh
            """)), vcpus: 1, ct);

        await console.WaitForAsync(d, $"{marker} ready", Bound, ct);
        await d.Console.Input.WriteAsync(Encoding.ASCII.GetBytes("echo typed-$((6*7))\n"), ct);
        await console.WaitForAsync(d, "typed-42", Bound, ct); // computed by the guest's shell, not the terminal's echo of the line
        await d.Console.Input.WriteAsync("poweroff -f\n"u8.ToArray(), ct);

        var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
        d.Destroy();
        var text = await console.Completed.WaitAsync(Bound, ct);
        exit.State.Should().Be(DomainState.Shutdown, $"poweroff -f is SCHEDOP_shutdown(poweroff); it ended {exit} with console:\n{text}");
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_poweroff);
        text.Should().Contain("Hypervisor detected: Xen PV").And.Contain("Run /init as init process").And.Contain($"{marker} init")
            .And.Contain("lines=500").And.Contain("PARAVIRT");
        ChildLines().Matches(text).Count.Should().Be(3, "three child processes ran and printed their pids");
        text.Should().NotContainAny(Forbidden);
        hv.Frames.FreeFrames.Should().Be(free, "every frame of the Linux domain returns at destroy");
    }

    [Fact]
    public async Task The_Generic_Kernel_On_Two_Vcpus_Sees_Both_Runs_Work_On_Each_And_Reboots()
    {
        var ct = TestContext.Current.CancellationToken;
        var (d, console) = Boot(DebianLinux.GenericKernel, Initramfs(Init("""
            echo "nproc=$(nproc)"
            for cpu in 0 1; do taskset -c $cpu sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo "counted on $(grep -c processor /proc/cpuinfo) cpus"'; done
            grep '^cpu[01] ' /proc/stat
            reboot -f
            """)), vcpus: 2, ct);

        var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
        d.Destroy();
        var text = await console.Completed.WaitAsync(Bound, ct);
        exit.State.Should().Be(DomainState.Shutdown, $"reboot -f is SCHEDOP_shutdown(reboot); it ended {exit} with console:\n{text}");
        exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_reboot);
        text.Should().Contain("smp: Brought up 1 node, 2 CPUs").And.Contain("nproc=2");
        foreach (Match m in CpuStat().Matches(text))
        {
            var user = long.Parse(m.Groups["user"].Value, System.Globalization.CultureInfo.InvariantCulture);
            var system = long.Parse(m.Groups["system"].Value, System.Globalization.CultureInfo.InvariantCulture);
            (user + system).Should().BeGreaterThan(0, $"cpu{m.Groups["cpu"].Value} ran work: {m.Value}");
        }

        CpuStat().Matches(text).Count.Should().Be(2, $"both vCPUs are in /proc/stat; console:\n{text}");
        text.Should().NotContainAny(Forbidden);
    }

    [Fact]
    public async Task A_Kernel_Panic_Crashes_The_Domain()
    {
        var ct = TestContext.Current.CancellationToken;
        var (d, console) = Boot(DebianLinux.CloudKernel, Initramfs(Init("echo c > /proc/sysrq-trigger")), vcpus: 1, ct);

        var exit = await d.WaitForShutdownAsync(ct).WaitAsync(Bound, ct);
        d.Destroy();
        var text = await console.Completed.WaitAsync(Bound, ct);
        exit.State.Should().Be(DomainState.Crashed, $"a panic ends in SCHEDOP_shutdown(crash); it ended {exit} with console:\n{text}");
        text.Should().Contain("sysrq: Trigger a crash").And.Contain("Kernel panic");
    }

    [Fact]
    public async Task Pv_Grub_Loads_The_Generic_Kernel_And_An_Initramfs_From_An_Ext4_Disk_By_Its_Grub_Cfg_And_Linux_Reaches_Init()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = $"PARAVIRT-CHAIN-{Guid.NewGuid():N}";
        var dir = Directory.CreateTempSubdirectory("paravirt-chain-").FullName;
        try
        {
            var image = Path.Combine(dir, "xvda.img");
            var kernel = await File.ReadAllBytesAsync(DebianLinux.GenericKernel, ct);
            await Ext2Image.CreateAsync(image, new Dictionary<string, byte[]>
            {
                ["boot/vmlinuz"] = kernel,
                ["boot/initrd.gz"] = Initramfs(Init($"echo \"{marker}\"\npoweroff -f")),
                ["boot/grub/grub.cfg"] = Encoding.ASCII.GetBytes("set timeout=0\nlinux /boot/vmlinuz console=hvc0\ninitrd /boot/initrd.gz\nboot\n"),
            }, sizeMiB: 32, ct: ct, fileSystem: "ext4");
            var free = hv.Frames.FreeFrames;
            var (d, boot) = hv.CreatePvDomain(new DomainConfig { Name = "pvgrub-linux", MemoryMiB = 256, AutoTranslated = false }, EndToEnd.PvGrubEndToEndTests.ReadGrub());
            await using (var disk = d.AttachDisk("xvda", BlockDevice.OpenFile(image, writable: false)))
            {
                var console = Watch(d, ct);
                PvKernelStart.Start(d, boot);

                var exit = await d.WaitForShutdownAsync(ct).WaitAsync(TimeSpan.FromMinutes(8), ct);
                d.Destroy();
                var text = await console.Completed.WaitAsync(Bound, ct);
                exit.State.Should().Be(DomainState.Shutdown, $"Linux's poweroff -f after GRUB's boot; it ended {exit} with console:\n{text}");
                text.Should().Contain("Welcome to GRUB!").And.Contain("Run /init as init process").And.Contain(marker);
                d.Meter.BlockBytesRead.Should().BeGreaterThan(kernel.Length, "GRUB read the kernel from the disk through blkback");
            }

            hv.Frames.FreeFrames.Should().Be(free, "every frame of the domain returns at destroy");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [GeneratedRegex(@"^child \d+\r?$", RegexOptions.Multiline)]
    private static partial Regex ChildLines();

    [GeneratedRegex(@"^cpu(?<cpu>[01]) (?<user>\d+) \d+ (?<system>\d+) ", RegexOptions.Multiline)]
    private static partial Regex CpuStat();

    private readonly List<ConsoleWatcher> _consoles = [];

    private ConsoleWatcher Watch(Domain d, CancellationToken ct)
    {
        var console = new ConsoleWatcher(d.Console.Output, ct);
        _consoles.Add(console);
        return console;
    }
}
