using System.Runtime.ExceptionServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;

namespace Paravirt.Tests.Support;

/// <summary>
/// Runs a piece of guest code in a managed domain and brings its outcome back to the test thread:
/// the guest body runs on vCPU 0 through the real gate; when it returns, the guest shuts down
/// with SHUTDOWN_poweroff; an assertion failure inside it is rethrown here.
/// </summary>
public static class GuestRunner
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="body"/> as the guest kernel's Main and waits (bounded) for the domain to end.</summary>
    public static DomainExit Run(Hypervisor hv, Action<GuestContext> body, DomainConfig? config = null)
    {
        var kernel = new LambdaKernel(body);
        var domain = hv.CreateDomain(config ?? new DomainConfig { Name = $"test-{Guid.NewGuid():N}", MemoryMiB = 4 });
        try
        {
            domain.Start(kernel);
            var exit = domain.WaitForShutdownAsync().Wait(Timeout)
                ? domain.Exit!
                : throw new TimeoutException($"the guest did not shut down within {Timeout.TotalSeconds} s (state {domain.State})");
            if (kernel.Failure is not null)
            {
                ExceptionDispatchInfo.Capture(kernel.Failure).Throw();
            }

            return exit;
        }
        finally
        {
            domain.Destroy();
        }
    }

    /// <summary>As <see cref="Run"/>, in a classic (not translated) PV domain: the guest speaks MFNs and keeps its own P→M list.</summary>
    public static DomainExit RunPv(Hypervisor hv, Action<GuestContext> body, DomainConfig? config = null) =>
        Run(hv, body, (config ?? new DomainConfig { Name = $"pv-{Guid.NewGuid():N}", MemoryMiB = 4 }) with { AutoTranslated = false });

    private sealed class LambdaKernel(Action<GuestContext> body) : ManagedKernel
    {
        public Exception? Failure { get; private set; }

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            try
            {
                body(new GuestContext(cpu, startInfo));
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                Failure = e;
            }

            var shutdown = new sched_shutdown { reason = Sched.SHUTDOWN_poweroff };
            var scratch = GuestContext.ScratchBase(cpu, startInfo);
            cpu.Memory.Write(scratch, shutdown);
            cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, scratch);
        }
    }
}

/// <summary>What a test's guest body gets: its vCPU, start_info's address, and scratch memory.</summary>
public sealed class GuestContext(IGuestCpu cpu, ulong startInfo)
{
    public IGuestCpu Cpu { get; } = cpu;

    public ulong StartInfo { get; } = startInfo;

    /// <summary>The first free guest-physical page (start_info.pt_base: the builder leaves everything above it free).</summary>
    public ulong Scratch { get; } = ScratchBase(cpu, startInfo);

    public start_info ReadStartInfo() => Cpu.Memory.Read<start_info>(StartInfo);

    public long Hypercall(int nr, ulong a1 = 0, ulong a2 = 0, ulong a3 = 0, ulong a4 = 0, ulong a5 = 0) =>
        Cpu.Hypercall((ulong)nr, a1, a2, a3, a4, a5);

    internal static ulong ScratchBase(IGuestCpu cpu, ulong startInfo) => cpu.Memory.Read<start_info>(startInfo).pt_base;
}

/// <summary>A kernel whose Main is a delegate.</summary>
public sealed class DelegateKernel(Action<IGuestCpu, ulong> main) : ManagedKernel
{
    public override void Main(IGuestCpu cpu, ulong startInfo) => main(cpu, startInfo);
}

public static class DomainTestExtensions
{
    /// <summary>Waits (bounded) for the domain to end; a clear failure when it does not.</summary>
    public static async Task<DomainExit> ExitWithinAsync(this Domain domain)
    {
        try
        {
            return await domain.WaitForShutdownAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"domain {domain.Id} ({domain.Name}) did not end within {GuestRunner.Timeout.TotalSeconds} s; it is {domain.State}");
        }
    }
}
