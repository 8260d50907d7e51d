using Paravirt.Core.Domains;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>Random bytes as a PV kernel: whatever they do, only their own domain suffers and the engine never fails.</summary>
public sealed class PvHostileCodeTests : IDisposable
{
    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task Random_Code_Ends_In_Its_Own_Shutdown_Crash_Or_Destroy_Never_An_Engine_Error()
    {
        var outcomes = new Dictionary<DomainState, int>();
        for (var seed = 0; seed < 40; seed++)
        {
            var random = new Random(seed);
            var k = new K(_hv, $"hostile-{seed}", memoryMiB: 4);
            var code = new byte[4096];
            random.NextBytes(code);
            k.Write(K.CodeVa, code);
            k.Start();
            DomainState state;
            try
            {
                state = (await k.Domain.WaitForShutdownAsync(TestContext.Current.CancellationToken)
                    .WaitAsync(TimeSpan.FromMilliseconds(100), TestContext.Current.CancellationToken)).State;
            }
            catch (TimeoutException)
            {
                state = DomainState.Running; // still running random code: the host destroys it
            }

            var reason = k.Domain.Exit?.Reason ?? "";
            var log = k.Vcpu.Pv.Engine!.Log;
            k.Domain.Destroy();
            outcomes[state] = outcomes.GetValueOrDefault(state) + 1;
            reason.Should().NotContain("PV engine error", $"seed {seed}");
            log.Should().NotContain(l => l.Contains("interpreter error"), $"seed {seed}");
            k.Domain.StuckVcpuThreads.Should().Be(0, $"seed {seed}: the vCPU stops at a slice boundary");
        }

        outcomes.Keys.Should().Contain(DomainState.Crashed, "random code mostly faults with no trap table");
        var after = Support.GuestRunner.Run(_hv, g => { });
        after.State.Should().Be(DomainState.Shutdown, "the host goes on");
    }
}
