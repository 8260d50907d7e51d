using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Cpu;

public sealed class UpcallTests : IDisposable
{
    private const ulong CallbackAddress = 0x0040_1000;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 16 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task A_Pending_Unmasked_Upcall_Runs_The_Event_Callback_Once_With_Events_Masked_Then_Restores_The_Mask()
    {
        var kernel = new UpcallKernel(maskBeforeHypercall: false);
        var d = _hv.CreateDomain(new DomainConfig { Name = "upcall", MemoryMiB = 4 });
        d.Start(kernel);
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        kernel.Register.Should().Be(0);
        kernel.RegisterVcpuInfo.Should().Be(0);
        kernel.CallsDuringRegistration.Should().Be(0, "events were masked when vcpu_info moved, so its spurious pending waits");
        kernel.Calls.Should().Be(1);
        kernel.Address.Should().Be(CallbackAddress);
        kernel.MaskInside.Should().Be(1);
        kernel.MaskAfter.Should().Be(0, "returning from the callback restores the mask the guest had");
        kernel.PendingAfter.Should().Be(0);
    }

    [Fact]
    public async Task With_Events_Masked_No_Callback_Runs()
    {
        var kernel = new UpcallKernel(maskBeforeHypercall: true);
        var d = _hv.CreateDomain(new DomainConfig { Name = "masked", MemoryMiB = 4 });
        d.Start(kernel);
        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        d.Destroy();
        kernel.Calls.Should().Be(0);
        kernel.MaskAfter.Should().Be(1);
        kernel.PendingAfter.Should().Be(1, "the event stays pending until the guest unmasks");
    }

    /// <summary>
    /// Registers an event callback and its vcpu_info in its own page, raises evtchn_upcall_pending
    /// itself, and makes a hypercall. The callback acknowledges by clearing pending, as Linux's does.
    /// </summary>
    private sealed class UpcallKernel(bool maskBeforeHypercall) : ManagedKernel
    {
        private ulong _info;

        public long Register { get; private set; } = -1;

        public long RegisterVcpuInfo { get; private set; } = -1;

        public int CallsDuringRegistration { get; private set; } = -1;

        public int Calls { get; private set; }

        public ulong Address { get; private set; }

        public byte MaskInside { get; private set; }

        public byte MaskAfter { get; private set; }

        public byte PendingAfter { get; private set; }

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            var scratch = cpu.Memory.Read<start_info>(startInfo).pt_base;
            cpu.Memory.Write(scratch + 0x100, new callback_register { type = Callback.CALLBACKTYPE_event, address = CallbackAddress });
            Register = cpu.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, scratch + 0x100);
            _info = scratch + 0x1000;
            RegisterVcpuInfo = GuestVcpu.RegisterVcpuInfo(cpu, startInfo, scratch + 0x800, 0, _info, 0);
            CallsDuringRegistration = Calls;

            cpu.Memory.WriteVolatile(_info, 1, 1); // evtchn_upcall_pending
            cpu.Memory.WriteVolatile(_info + 1, 1, maskBeforeHypercall ? 1UL : 0UL); // evtchn_upcall_mask
            cpu.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version);
            MaskAfter = (byte)cpu.Memory.ReadVolatile(_info + 1, 1);
            PendingAfter = (byte)cpu.Memory.ReadVolatile(_info, 1);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }

        public override void EventCallback(IGuestCpu cpu, ulong address)
        {
            Calls++;
            Address = address;
            MaskInside = (byte)cpu.Memory.ReadVolatile(_info + 1, 1);
            cpu.Memory.WriteVolatile(_info, 1, 0);
        }
    }
}
