using Paravirt.Cli;
using Paravirt.Cli.Config;
using Paravirt.Core.Boot;
using Paravirt.Tests.Boot;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Cli;

/// <summary><c>paravirt run --kernel FILE</c> and <c>kernel = "FILE"</c>: a PV kernel image built by the ELF domain builder.</summary>
public sealed class RunKernelTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-runk-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string RuntimeDir => Path.Combine(dir, "rt");

    private string File(string name, byte[] bytes)
    {
        var path = Path.Combine(dir, name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    private Task<(int Exit, string Out, string Err)> Run(params string[] args) =>
        CliRunner.RunAsync(["run", .. args, "--runtime-dir", RuntimeDir]);

    [Fact]
    public async Task Run_Kernel_Boots_Pv_Grub_From_An_Ext2_Disk_Copies_Its_Console_To_Stdout_And_Exits_0_On_Poweroff()
    {
        var ct = TestContext.Current.CancellationToken;
        var marker = $"cli-pvgrub-{Guid.NewGuid():N}";
        var disk = Path.Combine(dir, "boot.img");
        await Ext2Image.CreateAsync(disk, new Dictionary<string, byte[]> { ["boot/grub/grub.cfg"] = System.Text.Encoding.ASCII.GetBytes($"echo {marker}\nhalt\n") }, ct: ct);

        var (exit, output, error) = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", disk, "--cmdline", "root=(xen/xvda)");

        exit.Should().Be(ExitCodes.Ok, $"GRUB's halt is a poweroff; stderr:\n{error}");
        error.Should().Contain("paravirt: domain 1 (grub-x86_64-xen) starting: /usr/lib/grub-xen/grub-x86_64-xen.bin, 32 MiB, 1 vCPU(s), 1 disk(s)")
            .And.Contain("paravirt: PV layout: entry 0x0, start_info 0x624000, stack 0x62f000, 7 page-table frames at 0x627000")
            .And.Contain("powered off");
        output.Should().Contain("Welcome to GRUB!").And.Contain(marker, "the guest console is copied to stdout");
        Directory.EnumerateFiles(RuntimeDir, "*.sock").Should().BeEmpty("the control socket is removed on exit");
    }

    [Fact]
    public async Task Trace_Writes_Every_Hypercall_Per_Vcpu_And_Vcpus_Gives_The_Domain_Its_Vcpus()
    {
        var ct = TestContext.Current.CancellationToken;
        var disk = Path.Combine(dir, "boot.img");
        await Ext2Image.CreateAsync(disk, new Dictionary<string, byte[]> { ["boot/grub/grub.cfg"] = "halt\n"u8.ToArray() }, ct: ct);
        var trace = Path.Combine(dir, "trace.txt");

        var (exit, _, error) = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", disk, "--vcpus", "2", "--trace", trace, "-v");

        exit.Should().Be(ExitCodes.Ok, error);
        error.Should().Contain("32 MiB, 2 vCPU(s), 1 disk(s)");
        var lines = System.IO.File.ReadAllLines(trace);
        lines.Should().Contain(l => l.Contains("] d1v0 hypercall grant_table_op(0x", StringComparison.Ordinal), "GRUB sets up its grant table first");
        lines.Should().Contain(l => l.Contains("] d1v0 hypercall mmu_update(", StringComparison.Ordinal) && l.EndsWith(") = 0", StringComparison.Ordinal));
        lines.Should().NotContain(l => l.Contains(" d1v1 ", StringComparison.Ordinal), "GRUB never brings vCPU 1 up");

        var profile = Path.Combine(dir, "profile.txt");
        var symbols = File("grub.map", "0000000000000001 T grub_all\n"u8.ToArray());
        var profiled = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", disk, "--profile", profile, "--symbols", symbols);
        profiled.Exit.Should().Be(ExitCodes.Ok, profiled.Err);
        var report = System.IO.File.ReadAllLines(profile);
        report[0].Should().MatchRegex(@"^# [\d,]+ guest instructions, sampled every 10,000$");
        report.Should().Contain(l => l.EndsWith("100.00%  grub_all", StringComparison.Ordinal), "every sample of GRUB's code (above 0x1) resolves to the one symbol");
        var whole = Instructions(report);

        // The same run profiled only from a line GRUB prints part way: fewer instructions, said so.
        var from = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", disk, "--profile", profile, "--profile-from", "Welcome to GRUB!");
        from.Exit.Should().Be(ExitCodes.Ok, from.Err);
        var phase = System.IO.File.ReadAllLines(profile);
        phase[0].Should().Be("# from the first \"Welcome to GRUB!\" on the console on");
        Instructions(phase).Should().BePositive().And.BeLessThan(whole, "what GRUB ran before its welcome line is left out");
        var never = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", disk, "--profile", profile, "--profile-from", "no such line");
        never.Exit.Should().Be(ExitCodes.Ok, never.Err);
        System.IO.File.ReadAllLines(profile)[0].Should().Be("# \"no such line\" never appeared on the console: the whole run");
        var bad = await Run("--kernel", RealKernel.Path(), "--trace", Path.Combine(dir, "no", "such", "dir", "t.txt"));
        bad.Exit.Should().Be(ExitCodes.SetupFailed);
        bad.Err.Should().Contain("--trace").And.Contain("expected a writable path");
    }

    [Fact]
    public async Task A_Config_With_A_Kernel_Path_A_Ramdisk_And_Cmdline_Builds_And_Runs_The_Same_Way()
    {
        var kernel = File("test-kernel", PvTestKernel.Standard().Build());
        var ramdisk = File("initrd.img", new byte[10000]);
        var cfg = File("pv.cfg", System.Text.Encoding.UTF8.GetBytes($"name = 'pvtest'\nmemory = 16\nkernel = 'test-kernel'\nramdisk = 'initrd.img'\nroot = '/dev/xvda1'\nextra = 'quiet'\n"));

        var (exit, _, error) = await Run(cfg);

        error.Should().Contain($"domain 1 (pvtest) starting: {kernel}, 16 MiB")
            .And.Contain("PV layout: entry 0xffffffff80001000");
        // The test kernel calls sched_op(SCHEDOP_shutdown) with rsi still at start_info, so the
        // reason Xen reads is the low byte of its magic "xen-…" ('x' = 120): an unknown reason.
        error.Should().Contain("domain 1 (pvtest) shut down (120)");
        exit.Should().Be(ExitCodes.OtherShutdown, error);
        _ = ramdisk;
    }

    [Fact]
    public async Task Run_Kernel_Boots_A_BzImage_As_Its_Vmlinux()
    {
        var kernel = File("vmlinuz-test", TestBzImage.Build(KernelCompression.Zstd, PvTestKernel.Standard().Build()));

        var (exit, _, error) = await Run("--kernel", kernel, "--memory", "16");

        error.Should().Contain($"domain 1 (vmlinuz-test) starting: {kernel}, 16 MiB")
            .And.Contain("PV layout: entry 0xffffffff80001000")
            .And.Contain("domain 1 (vmlinuz-test) shut down (120)", "the test kernel's sched_op shutdown, as from its ELF file");
        exit.Should().Be(ExitCodes.OtherShutdown, error);
    }

    [Fact]
    public async Task A_Kernel_Whose_Last_Vcpu_Goes_Down_Exits_10_And_Says_No_Shutdown_Was_Asked()
    {
        var kernel = File("down-kernel", PvTestKernel.Standard(PvTestKernel.DownCode()).Build());

        var (exit, _, error) = await Run("--kernel", kernel, "--memory", "16");

        exit.Should().Be(ExitCodes.AllVcpusDown, error).And.Be(10);
        error.Should().Contain("stopped: its last vCPU (0) went down (VCPUOP_down), without SCHEDOP_shutdown (Xen powers it off)");
    }

    [Fact]
    public async Task Kernel_Errors_Have_Their_Own_Exit_Codes()
    {
        var notElf = await Run("--kernel", File("notes.txt", "just text"u8.ToArray()));
        notElf.Exit.Should().Be(ExitCodes.BadKernel).And.Be(9);
        notElf.Err.Should().Contain("notes.txt is not a bootable 64-bit PV kernel: not an ELF file or a bzImage: it starts with bytes 6A757374");

        var lzo = TestBzImage.Wrap(TestBzImage.WithSize([0x89, (byte)'L', (byte)'Z', (byte)'O', 0, 0x0d, 0x0a, 0x1a, 0x0a], 100_000));
        var badBz = await Run("--kernel", File("vmlinuz-lzo", lzo));
        badBz.Exit.Should().Be(ExitCodes.BadKernel);
        badBz.Err.Should().Contain("vmlinuz-lzo is not a bootable 64-bit PV kernel: the bzImage's payload is LZO-compressed");

        var badNotes = await Run("--kernel", File("k", PvTestKernel.Standard().XenNumber(Paravirt.Core.Abi.ElfNote.XEN_ELFNOTE_ENTRY, 0x10).Build()));
        badNotes.Exit.Should().Be(9);
        badNotes.Err.Should().Contain("the entry point 0x10 (ENTRY note) is outside the loaded image");

        var missing = await Run("--kernel", Path.Combine(dir, "absent"));
        missing.Exit.Should().Be(ExitCodes.Config).And.Be(2);
        missing.Err.Should().Contain($"kernel {dir}/absent does not exist");

        var noRamdisk = await Run("--kernel", RealKernel.Path(), "--ramdisk", Path.Combine(dir, "absent.img"));
        noRamdisk.Exit.Should().Be(2);
        noRamdisk.Err.Should().Contain($"ramdisk {dir}/absent.img does not exist");

        var tooSmall = await Run("--kernel", RealKernel.Path(), "--memory", "4");
        tooSmall.Exit.Should().Be(ExitCodes.SetupFailed).And.Be(6);
        tooSmall.Err.Should().Contain("4 MiB (1024 pages) is too small for this kernel");

        var noDisk = await Run("--kernel", RealKernel.Path(), "--memory", "32", "--disk", Path.Combine(dir, "absent.img"));
        noDisk.Exit.Should().Be(6);
        noDisk.Err.Should().Contain("--disk: disk xvda: cannot open");
    }

    [Theory]
    [InlineData(new string[0], "nothing to run: expected CONFIG (an xl.cfg-style file) or --kernel FILE")]
    [InlineData(new[] { "a.cfg", "--kernel", "k" }, "give either CONFIG or --kernel FILE, not both")]
    [InlineData(new[] { "a.cfg", "--memory", "3" }, "--memory goes with --kernel")]
    [InlineData(new[] { "a.cfg", "--cmdline", "x" }, "--cmdline goes with --kernel")]
    [InlineData(new[] { "--kernel", "k", "--memory", "lots" }, "lots")]
    public async Task A_Bad_Command_Line_Exits_1(string[] args, string message)
    {
        var (exit, _, error) = await Run(args);
        exit.Should().Be(ExitCodes.Usage).And.Be(1);
        error.Should().Contain(message);
    }

    [Fact]
    public void Run_Kernel_Options_Make_A_Domain_Spec()
    {
        var spec = DomainSpec.ForKernel("boot/vmlinuz", 64, ["a.img", "b.img", "format=raw, vdev=xvdz, access=ro, target=c.img"], "console=hvc0", "initrd", null, "/base");
        spec.Name.Should().Be("vmlinuz");
        spec.Kernel.Should().Be(new ImageKernel("/base/boot/vmlinuz"));
        spec.MemoryMiB.Should().Be(64);
        spec.CommandLine.Should().Be("console=hvc0");
        spec.Ramdisk.Should().Be("/base/initrd");
        spec.Disks.Select(d => (d.Spec.Vdev, d.Spec.Target, d.Spec.ReadOnly)).Should().Equal(("xvda", "/base/a.img", false), ("xvdb", "/base/b.img", false), ("xvdz", "/base/c.img", true));

        DomainSpec.ForKernel("/k", null, [], null, null, "web", "/").Should().Match<DomainSpec>(s => s.Name == "web" && s.MemoryMiB == 128 && s.CommandLine == "" && s.Ramdisk == null);
        var twice = () => DomainSpec.ForKernel("/k", null, ["a.img", "format=raw, vdev=xvda, target=b.img"], null, null, null, "/");
        twice.Should().Throw<ConfigException>().WithMessage("command line: --disk 'format=raw, vdev=xvda, target=b.img': vdev xvda is used twice; expected one disk per vdev");
        var bigCmd = () => DomainSpec.ForKernel("/k", null, [], new string('x', 1024), null, null, "/");
        bigCmd.Should().Throw<ConfigException>().WithMessage("*--cmdline is 1024 bytes; expected fewer than 1024*");
    }

    [Fact]
    public void Xl_Ramdisk_Is_A_Path_For_Kernel_Images_Only()
    {
        DomainSpec.Parse("name='a'\nkernel='/boot/vmlinuz'\nramdisk='initrd.img'\n", "a.cfg", "/base").Ramdisk.Should().Be("/base/initrd.img");
        var managed = () => DomainSpec.Parse("name='a'\nkernel='managed:hello'\nramdisk='initrd.img'\n", "a.cfg", "/base");
        managed.Should().Throw<ConfigException>().WithMessage("a.cfg:3: a ramdisk is given for a managed guest; expected ramdisk only with kernel = \"FILE\", a PV kernel image");
        DomainSpec.Parse("name='a'\nkernel='/k'\nroot='/dev/xvda1'\nextra='ro quiet'\n", "a.cfg", "/").CommandLine.Should().Be("root=/dev/xvda1 ro quiet", "xl composes root= and extra");
    }

    /// <summary>The instruction count in a profile report's header line.</summary>
    private static long Instructions(string[] report) =>
        long.Parse(report.First(l => l.Contains(" guest instructions, sampled every ", StringComparison.Ordinal)).Split(' ')[1], System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture);
}
