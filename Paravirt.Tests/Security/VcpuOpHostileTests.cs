using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using V = Paravirt.Core.Abi.VcpuOp;

namespace Paravirt.Tests.Security;

public sealed class VcpuOpHostileTests : IDisposable
{
    private const ulong Wild = 0x0000_7FFF_DEAD_0000;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 16 });

    public void Dispose() => _hv.Dispose();

    private static long E(Errno e) => -(long)e;

    [Fact]
    public void Every_Command_On_A_Vcpuid_Out_Of_Range_Is_ENOENT()
    {
        var results = new List<long>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            for (var cmd = 0; cmd <= 14; cmd++)
            {
                foreach (var id in new ulong[] { 1, 127, 0xFFFF_FFFF, 0x1234_5678_0000_0001 })
                {
                    results.Add(g.VcpuOp(cmd, id, g.Scratch + 0x100));
                }
            }
        });
        exit.State.Should().Be(DomainState.Shutdown);
        results.Should().OnlyContain(r => r == E(Errno.ENOENT));
    }

    [Fact]
    public void Wild_Argument_Pointers_Are_EFAULT()
    {
        var results = new Dictionary<int, long>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            foreach (var cmd in new[]
            {
                V.VCPUOP_get_runstate_info, V.VCPUOP_register_runstate_memory_area, V.VCPUOP_set_periodic_timer,
                V.VCPUOP_set_singleshot_timer, V.VCPUOP_register_vcpu_info, V.VCPUOP_register_vcpu_time_memory_area,
            })
            {
                results[cmd] = g.VcpuOp(cmd, 0, Wild);
            }

            results[-1] = g.VcpuOp(V.VCPUOP_get_runstate_info, 0, ulong.MaxValue - 8); // wraps the address space
        });
        exit.State.Should().Be(DomainState.Shutdown);
        results.Values.Should().OnlyContain(r => r == E(Errno.EFAULT));
    }

    [Fact]
    public async Task Initialise_From_A_Wild_Pointer_Is_EFAULT_And_Leaves_The_Vcpu_Uninitialised()
    {
        long init = 0, up = 0;
        var d = _hv.CreateDomain(new DomainConfig { Name = "wild-init", MemoryMiB = 4, Vcpus = 2 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            init = cpu.VcpuOp(V.VCPUOP_initialise, 1, Wild);
            up = cpu.VcpuOp(V.VCPUOP_up, 1);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        init.Should().Be(E(Errno.EFAULT));
        up.Should().Be(E(Errno.EINVAL));
    }

    [Fact]
    public void A_Vcpu_Info_Crossing_The_Page_End_Or_Misaligned_Is_ENXIO_And_The_Last_Fitting_Offset_Works()
    {
        long crossing = 0, beyond = 0, misaligned = 0, last = -1;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var page = g.Scratch + 0x1000;
            crossing = g.RegisterVcpuInfo(page, 4096 - 56);
            beyond = g.RegisterVcpuInfo(page, uint.MaxValue);
            misaligned = g.RegisterVcpuInfo(page, 4);
            last = g.RegisterVcpuInfo(page, 4096 - 64);
        });
        exit.State.Should().Be(DomainState.Shutdown);
        crossing.Should().Be(E(Errno.ENXIO));
        beyond.Should().Be(E(Errno.ENXIO));
        misaligned.Should().Be(E(Errno.ENXIO));
        last.Should().Be(0);
    }

    [Fact]
    public void A_Vcpu_Info_Frame_The_Guest_Does_Not_Own_Is_EINVAL()
    {
        var other = _hv.CreateDomain(new DomainConfig { Name = "other", MemoryMiB = 4 });
        other.PhysMap.TryLookup(10, out var foreign, out _).Should().BeTrue();
        var results = new List<long>();
        var exit = GuestRunner.RunPv(_hv, g =>
        {
            foreach (var mfn in new[] { foreign, (ulong)_hv.TotalFrames, ulong.MaxValue })
            {
                g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_vcpu_info { mfn = mfn, offset = 0 });
                results.Add(g.VcpuOp(V.VCPUOP_register_vcpu_info, 0, g.Scratch + 0x100));
            }
        });
        other.Destroy();
        exit.State.Should().Be(DomainState.Shutdown);
        results.Should().Equal(E(Errno.EINVAL), E(Errno.EINVAL), E(Errno.EINVAL));
    }

    [Fact]
    public void A_Translated_Guest_Can_Only_Name_Its_Own_Ram_Gfns_For_Vcpu_Info()
    {
        var results = new List<long>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            foreach (var gfn in new[] { 4096UL, 1UL << 39, ulong.MaxValue })
            {
                g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_vcpu_info { mfn = gfn, offset = 0 });
                results.Add(g.VcpuOp(V.VCPUOP_register_vcpu_info, 0, g.Scratch + 0x100));
            }
        });
        exit.State.Should().Be(DomainState.Shutdown);
        results.Should().Equal(E(Errno.EINVAL), E(Errno.EINVAL), E(Errno.EINVAL));
    }

    [Fact]
    public void A_Runstate_Area_At_A_Wild_Address_Is_Accepted_And_Updates_To_It_Fail_Quietly()
    {
        long rc = -1, block = -1;
        var exit = GuestRunner.Run(_hv, g =>
        {
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_runstate_memory_area { addr = new() { v = Wild } });
            rc = g.VcpuOp(V.VCPUOP_register_runstate_memory_area, 0, g.Scratch + 0x100);
            g.Cpu.Memory.Write(g.Scratch + 0x100, new vcpu_register_time_memory_area { addr = new() { v = Wild } });
            g.VcpuOp(V.VCPUOP_register_vcpu_time_memory_area, 0, g.Scratch + 0x100).Should().Be(0);
            block = GuestVcpu.BlockUntil(g.Cpu, _hv.Clock.SystemTimeNs() + 100_000);
        });
        exit.State.Should().Be(DomainState.Shutdown);
        rc.Should().Be(0, "Xen checks only that the handle lies in guest address space");
        block.Should().Be(0);
    }
}
