using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Hypercalls;

public sealed class MulticallTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    private static unsafe multicall_entry Entry(ulong op, params ulong[] args)
    {
        var e = new multicall_entry { op = op, result = 0xAAAA };
        for (var i = 0; i < args.Length; i++)
        {
            e.args[i] = args[i];
        }

        return e;
    }

    [Fact]
    public void Each_Entry_Gets_Its_Own_Result_And_Nested_Multicall_Is_EINVAL()
    {
        var results = new long[4];
        long rc = -1;
        GuestRunner.Run(_hv, g =>
        {
            var size = (ulong)System.Runtime.InteropServices.Marshal.SizeOf<multicall_entry>();
            var list = g.Scratch + 0x1000;
            g.Cpu.Memory.Write(list + 0 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            g.Cpu.Memory.Write(list + 1 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_pagesize));
            g.Cpu.Memory.Write(list + 2 * size, Entry(Xen.__HYPERVISOR_multicall, list, 1));
            g.Cpu.Memory.Write(list + 3 * size, Entry(63));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 4);
            for (var i = 0; i < 4; i++)
            {
                results[i] = (long)g.Cpu.Memory.Read<multicall_entry>(list + (ulong)i * size).result;
            }
        });
        rc.Should().Be(0);
        results.Should().Equal((4L << 16) | 17, 4096, -(long)Errno.EINVAL, -(long)Errno.ENOSYS);
    }

    [Fact]
    public void A_List_Pointing_Into_Unmapped_Memory_Is_EFAULT()
    {
        long rc = 0;
        GuestRunner.Run(_hv, g => rc = g.Hypercall(Xen.__HYPERVISOR_multicall, 0x7fff_ffff_f000UL, 2));
        rc.Should().Be(-(long)Errno.EFAULT);
    }

    [Fact]
    public async Task The_Calls_Are_Metered_By_Number()
    {
        var d = _hv.CreateDomain(new DomainConfig { Name = "metered", MemoryMiB = 4 });
        var kernel = new Support.DelegateKernel((cpu, si) =>
        {
            for (var i = 0; i < 10; i++)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        });
        d.Start(kernel);
        await d.ExitWithinAsync();
        d.Meter.Hypercalls(Xen.__HYPERVISOR_xen_version).Should().Be(10);
        d.Meter.Hypercalls(Xen.__HYPERVISOR_sched_op).Should().Be(1);
        d.Destroy();
    }
}
