using System.CommandLine;
using System.Text.Json;
using Paravirt.Cli;
using Paravirt.Core.Boot;
using Paravirt.Tests.Boot;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Cli;

/// <summary><c>paravirt scan KERNEL [--json]</c>, run through the CLI's parser in-process.</summary>
public sealed class ScanCommandTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("pv-scan-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static async Task<(int Exit, string Out, string Err)> Paravirt(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var exit = await CliRoot.Build().Parse(args).InvokeAsync(
            new InvocationConfiguration { Output = output, Error = error }, TestContext.Current.CancellationToken);
        return (exit, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Scan_Of_PV_Grub_Prints_Segments_Notes_Instruction_Classes_And_Hypercalls()
    {
        var (exit, output, error) = await Paravirt("scan", RealKernel.Path());

        exit.Should().Be(0, error);
        error.Should().BeEmpty();
        output.Should().Contain("ELF64 x86-64 EXEC, 2119488 bytes, entry 0x0");
        output.Should().MatchRegex(@"\n\s+0\s+LOAD\s+0x1000\s+0x0\s+0xeaef\s+0x41e1f0\s+RWX\n");
        output.Should().MatchRegex(@"GUEST_OS\s+\( 6\)\s+""GRUB""");
        output.Should().MatchRegex(@"XEN_VERSION\s+\( 5\)\s+""xen-3.0""");
        output.Should().Contain("no XEN_ELFNOTE_HYPERCALL_PAGE note");
        output.Should().MatchRegex(@"\n\s+29\s+sched_op\s+0\s+1\s+0\n");
        output.Should().MatchRegex(@"\n\s+cli/sti\s+privileged \(traps\)\s+\d+");
        output.Should().Contain("linear sweep");
    }

    [Fact]
    public async Task Scan_Json_Is_One_Object_With_The_Same_Facts()
    {
        var (exit, output, _) = await Paravirt("scan", RealKernel.Path(), "--json");

        exit.Should().Be(0);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        root.GetProperty("size").GetInt64().Should().Be(2119488);
        root.GetProperty("segments").GetArrayLength().Should().Be(4);
        root.GetProperty("xenNotes").EnumerateArray().Select(n => n.GetProperty("name").GetString())
            .Should().Equal("GUEST_OS", "LOADER", "XEN_VERSION", "ENTRY", "VIRT_BASE");
        root.GetProperty("xenNotes")[0].GetProperty("value").GetString().Should().Be("GRUB");
        root.GetProperty("hypercalls").GetProperty("page").ValueKind.Should().Be(JsonValueKind.Null);
        root.GetProperty("hypercalls").GetProperty("sites").EnumerateArray()
            .Single(s => s.GetProperty("name").GetString() == "sched_op").GetProperty("syscall").GetInt32().Should().Be(1);
        var classes = root.GetProperty("code").GetProperty("classes").EnumerateArray().ToArray();
        classes.Should().HaveCount(24);
        root.GetProperty("code").GetProperty("instructions").GetInt64()
            .Should().Be(root.GetProperty("code").GetProperty("regions").EnumerateArray().Sum(r => r.GetProperty("instructions").GetInt64()));
    }

    [Fact]
    public async Task Scan_Of_A_BzImage_Scans_Its_Vmlinux_And_Says_So()
    {
        var vmlinux = PvTestKernel.Standard().Build();
        var path = Path.Combine(dir, "vmlinuz");
        await File.WriteAllBytesAsync(path, TestBzImage.Build(KernelCompression.Lz4, vmlinux), TestContext.Current.CancellationToken);

        var (exit, output, error) = await Paravirt("scan", path);
        var (jsonExit, json, _) = await Paravirt("scan", path, "--json");

        exit.Should().Be(0, error);
        output.Should().Contain($"{path}: Linux bzImage, boot protocol 2.15, lz4 payload of")
            .And.Contain($"vmlinux: ELF64 x86-64 EXEC, {vmlinux.Length} bytes, entry 0xffffffff80001000")
            .And.MatchRegex(@"FEATURES\s+\(10\)\s+""!writable_page_tables\|pae_pgdir_above_4gb""");
        jsonExit.Should().Be(0);
        using var doc = JsonDocument.Parse(json);
        doc.RootElement.GetProperty("bzImage").GetProperty("compression").GetString().Should().Be("lz4");
        doc.RootElement.GetProperty("size").GetInt64().Should().Be(vmlinux.Length, "size is the scanned ELF file's");
    }

    [Fact]
    public async Task A_Corrupt_BzImage_Exits_3_Saying_What_Is_Wrong()
    {
        var image = TestBzImage.Build(KernelCompression.Xz, PvTestKernel.Standard().Build());
        var path = Path.Combine(dir, "vmlinuz");
        await File.WriteAllBytesAsync(path, image[..^200], TestContext.Current.CancellationToken);

        var (exit, output, error) = await Paravirt("scan", path);

        exit.Should().Be(ScanCommand.ExitNotElf);
        output.Should().BeEmpty();
        error.Should().Contain($"paravirt scan: {path}: the bzImage's payload").And.Contain("runs past the end");
    }

    [Fact]
    public async Task A_Missing_File_Exits_2_With_A_Message_On_Stderr()
    {
        var (exit, output, error) = await Paravirt("scan", Path.Combine(dir, "absent.bin"));

        exit.Should().Be(ScanCommand.ExitUnreadable).And.Be(2);
        output.Should().BeEmpty();
        error.Should().Contain("paravirt scan: cannot read").And.Contain("absent.bin");
    }

    [Fact]
    public async Task A_Non_Elf_File_Exits_3_Saying_What_Was_Expected()
    {
        var path = Path.Combine(dir, "script.sh");
        await File.WriteAllTextAsync(path, "#!/bin/sh\necho hi\n", TestContext.Current.CancellationToken);

        var (exit, output, error) = await Paravirt("scan", path);

        exit.Should().Be(ScanCommand.ExitNotElf).And.Be(3);
        output.Should().BeEmpty();
        error.Should().Contain("not an ELF file or a bzImage").And.Contain("expected the ELF magic 7F454C46 (\\x7fELF) of a PV kernel, or a Linux bzImage's boot setup header");
    }

    [Fact]
    public async Task A_Truncated_Kernel_Exits_3()
    {
        var path = Path.Combine(dir, "cut.bin");
        var bytes = RealKernel.Bytes();
        await File.WriteAllBytesAsync(path, bytes[..0x1000], TestContext.Current.CancellationToken);

        var (exit, _, error) = await Paravirt("scan", path);

        exit.Should().Be(3);
        error.Should().Contain("segment 0 (LOAD): file bytes [0x1000, +0xeaef) run past the end of the 4096-byte file");
    }

    [Fact]
    public async Task Help_Documents_The_Exit_Codes()
    {
        var (exit, output, _) = await Paravirt("scan", "--help");

        exit.Should().Be(0);
        output.Should().Contain("KERNEL").And.Contain("--json").And.Contain("Exit codes: 0 done; 1 bad command line; 2 the file cannot be read; 3 not a valid ELF64");
    }

    [Fact]
    public async Task No_Kernel_Argument_Is_A_Usage_Error()
    {
        var (exit, _, error) = await Paravirt("scan");

        exit.Should().Be(ScanCommand.ExitUsage);
        error.Should().NotBeEmpty();
    }
}
