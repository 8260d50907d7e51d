using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

public sealed class ConsoleIoTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task Writes_Become_Lines_For_The_Host_With_Unprintables_Stripped()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "chatty", MemoryMiB = 4 });
        long rc = -1, read = 0;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var scratch = cpu.Memory.Read<start_info>(si).pt_base;
            var text = Encoding.ASCII.GetBytes("hello\u0007 world\nsecond line that is long enough to cross the 128-byte chunk boundary of console_io, which Xen copies in pieces\npartial");
            cpu.Memory.Write(scratch, text);
            rc = cpu.Hypercall(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_write, (ulong)text.Length, scratch);
            read = cpu.Hypercall(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_read, 16, scratch);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        d.Destroy();
        var lines = new List<string>();
        while (d.Console.TryReadLine(out var line))
        {
            lines.Add(line);
        }

        rc.Should().Be(0);
        read.Should().Be(-(long)Errno.EPERM, "only the hardware domain reads the hypervisor's serial input");
        lines.Should().Equal("hello world", "second line that is long enough to cross the 128-byte chunk boundary of console_io, which Xen copies in pieces", "partial");
    }

    [Fact]
    public async Task A_Chatty_Guest_Is_Bounded_And_Drops_Oldest_Lines()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "flood", MemoryMiB = 4, Limits = DomainLimits.Default with { ConsoleBufferBytes = 1024 } });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var scratch = cpu.Memory.Read<start_info>(si).pt_base;
            var line = Encoding.ASCII.GetBytes(new string('x', 99) + "\n");
            cpu.Memory.Write(scratch, line);
            for (var i = 0; i < 1000; i++)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_write, (ulong)line.Length, scratch);
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        var kept = 0;
        while (d.Console.TryReadLine(out _))
        {
            kept++;
        }

        kept.Should().BeLessThanOrEqualTo(11);
        d.Console.DroppedLines.Should().Be(1000 - kept);
        d.Console.BytesWritten.Should().Be(100_000);
        d.Destroy();
    }
}
