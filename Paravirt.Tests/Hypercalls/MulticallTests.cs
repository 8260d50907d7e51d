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
    public void Each_Entry_Is_Read_Just_Before_It_Runs_So_An_Earlier_Entry_Can_Rewrite_A_Later_One()
    {
        // Entry 0 asks for XENVER_extraversion into entry 1's op and result fields (16 bytes):
        // entry 1's op becomes the text ".0-paravirt" as a number, which is no hypercall. A
        // multicall that had read the whole list up front would run entry 1 as xen_version.
        var results = new long[3];
        long rc = -1;
        GuestRunner.Run(_hv, g =>
        {
            var size = (ulong)System.Runtime.InteropServices.Marshal.SizeOf<multicall_entry>();
            var list = g.Scratch + 0x1000;
            g.Cpu.Memory.Write(list + 0 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_extraversion, list + size));
            g.Cpu.Memory.Write(list + 1 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            g.Cpu.Memory.Write(list + 2 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_pagesize));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 3);
            for (var i = 0; i < 3; i++)
            {
                results[i] = (long)g.Cpu.Memory.Read<multicall_entry>(list + (ulong)i * size).result;
            }
        });
        rc.Should().Be(0);
        results.Should().Equal(0, -(long)Errno.ENOSYS, 4096);
    }

    [Fact]
    public void An_Entry_That_Releases_The_Lists_Own_Page_Makes_The_Rest_EFAULT_And_The_Frame_Comes_Back()
    {
        var free = _hv.FreeFrames;
        long rc = 0;
        GuestRunner.Run(_hv, g =>
        {
            var size = (ulong)System.Runtime.InteropServices.Marshal.SizeOf<multicall_entry>();
            var list = g.Scratch + 0x2000;                     // its own page, apart from the extent list
            var extents = MemoryOpTests.List(g);
            g.Cpu.Memory.Write(extents, list >> 12);
            g.Cpu.Memory.Write(g.Scratch, new xen_memory_reservation { extent_start = extents, nr_extents = 1, domid = Xen.DOMID_SELF });
            g.Cpu.Memory.Write(list + 0 * size, Entry(Xen.__HYPERVISOR_memory_op, (ulong)XenMem.XENMEM_decrease_reservation, g.Scratch));
            g.Cpu.Memory.Write(list + 1 * size, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 2);
        });
        rc.Should().Be(-(long)Errno.EFAULT, "entry 0's result has nowhere to go once its page is gone");
        _hv.FreeFrames.Should().Be(free, "the multicall let go of the list's page, so every frame returned when the domain was destroyed");
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
