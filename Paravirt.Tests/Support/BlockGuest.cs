using System.Runtime.ExceptionServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;

namespace Paravirt.Tests.Support;

/// <summary>Runs a <see cref="TestBlkFront"/> body in a managed domain and brings its outcome back to the test.</summary>
public static class BlockGuest
{
    /// <summary>A domain big enough for a full ring of 11-page requests.</summary>
    public static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 8 };

    /// <summary>Starts <paramref name="domain"/> running <paramref name="body"/> against its vbd <paramref name="devid"/>; the guest powers off when the body returns.</summary>
    public static Task<Exception?> Start(Domain domain, Action<TestBlkFront> body, uint devid = 51712)
    {
        var failure = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        domain.Start(new DelegateKernel((cpu, si) =>
        {
            Exception? error = null;
            try
            {
                body(new TestBlkFront(new GuestContext(cpu, si), devid));
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                error = e;
            }
            finally
            {
                failure.TrySetResult(error);
            }

            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        return failure.Task;
    }

    /// <summary>Runs the body to its end (bounded) and rethrows what failed inside the guest.</summary>
    public static async Task<DomainExit> RunAsync(Domain domain, Action<TestBlkFront> body, uint devid = 51712)
    {
        var failure = Start(domain, body, devid);
        var exit = await domain.ExitWithinAsync();
        if (failure.IsCompleted && await failure is { } e)
        {
            ExceptionDispatchInfo.Throw(e);
        }

        return exit;
    }
}
