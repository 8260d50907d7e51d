using System.Runtime.ExceptionServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest;

/// <summary>
/// Runs a test body inside a managed domain booted by the guest stub (<see cref="XenGuest.Boot"/>):
/// upcalls go to the stub's dispatcher, an assertion failure in the guest is rethrown on the test
/// thread, and the guest powers off with SCHEDOP_shutdown when the body returns.
/// </summary>
internal static class StubRunner
{
    public static DomainConfig Config(bool classicPv = false, int vcpus = 1) =>
        new() { Name = $"stub-{Guid.NewGuid():N}", MemoryMiB = 8, Vcpus = vcpus, AutoTranslated = !classicPv };

    /// <summary>Creates the domain (so a test can prepare host-side objects for it), then <see cref="StartAsync"/> runs it.</summary>
    public static Domain Create(Hypervisor hv, bool classicPv = false, int vcpus = 1) => hv.CreateDomain(Config(classicPv, vcpus));

    public static async Task<DomainExit> RunAsync(Hypervisor hv, Action<XenGuest> body, bool classicPv = false, GuestOptions? options = null, int vcpus = 1)
    {
        var d = Create(hv, classicPv, vcpus);
        return await StartAsync(d, body, options);
    }

    public static async Task<DomainExit> StartAsync(Domain d, Action<XenGuest> body, GuestOptions? options = null)
    {
        var kernel = new Kernel(body, options);
        try
        {
            d.Start(kernel);
            var exit = await d.ExitWithinAsync();
            if (kernel.Failure is not null)
            {
                ExceptionDispatchInfo.Capture(kernel.Failure).Throw();
            }

            exit.State.Should().Be(DomainState.Shutdown, $"the guest should power off cleanly ({exit.Reason})");
            return exit;
        }
        finally
        {
            d.Destroy();
        }
    }

    private sealed class Kernel(Action<XenGuest> body, GuestOptions? options) : ManagedKernel
    {
        private XenGuest? guest;

        public Exception? Failure { get; private set; }

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            try
            {
                guest = XenGuest.Boot(cpu, startInfo, options);
                body(guest);
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                Failure = e;
            }

            var shutdown = new sched_shutdown { reason = Sched.SHUTDOWN_poweroff };
            var at = cpu.Memory.Read<start_info>(startInfo).pt_base;
            cpu.Memory.Write(at, shutdown);
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, at);
        }

        public override void EventCallback(IGuestCpu cpu, ulong address) => (guest ?? XenGuest.OnThisVcpu)?.HandleUpcall(cpu);

        public override void SecondaryEntry(IGuestCpu cpu, ulong rip, ulong rsp) => guest?.EnterSecondary(cpu);
    }
}
