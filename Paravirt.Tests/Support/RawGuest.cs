using System.Runtime.ExceptionServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;

namespace Paravirt.Tests.Support;

/// <summary>
/// Runs a test's raw guest body (a hand-driven frontend made from the guest's context) in a
/// domain: the guest powers off when the body returns, and the body's failure comes back to the test.
/// </summary>
public static class RawGuest
{
    /// <summary>Starts <paramref name="domain"/> running <paramref name="body"/> on what <paramref name="make"/> builds; the task carries the body's failure, if any.</summary>
    public static Task<Exception?> Start<T>(Domain domain, Func<GuestContext, T> make, Action<T> body)
    {
        var failure = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        domain.Start(new DelegateKernel((cpu, si) =>
        {
            Exception? error = null;
            try
            {
                body(make(new GuestContext(cpu, si)));
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
    public static async Task<DomainExit> RunAsync<T>(Domain domain, Func<GuestContext, T> make, Action<T> body)
    {
        var failure = Start(domain, make, body);
        var exit = await domain.ExitWithinAsync();
        if (failure.IsCompleted && await failure is { } e)
        {
            ExceptionDispatchInfo.Throw(e);
        }

        return exit;
    }
}
