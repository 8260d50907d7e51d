using System.Runtime.ExceptionServices;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest.Block;

/// <summary>
/// A guest program for block tests: a <see cref="GuestKernel"/> whose <see cref="GuestKernel.Run"/>
/// is a delegate. A failure inside the guest is caught (the guest still powers off) and rethrown
/// on the test thread by <see cref="RunAsync"/>.
/// </summary>
internal sealed class BlockKernel(Action<GuestRuntime> body) : GuestKernel
{
    public Exception? Failure { get; private set; }

    /// <summary>Domain config for blkfront guests: room for the frontend's 352 data pages and more.</summary>
    public static DomainConfig Config(string name, int memoryMiB = 16) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = memoryMiB };

    protected override void Run(GuestRuntime runtime)
    {
        try
        {
            body(runtime);
        }
        catch (Exception e) when (e.GetType().Name != "VcpuExitException")
        {
            Failure = e;
        }
    }

    /// <summary>Starts <paramref name="domain"/> with <paramref name="body"/>, waits (bounded) for it to power off, rethrows a guest failure.</summary>
    public static async Task<DomainExit> RunAsync(Domain domain, Action<GuestRuntime> body)
    {
        var kernel = new BlockKernel(body);
        domain.Start(kernel);
        var exit = await domain.ExitWithinAsync();
        if (kernel.Failure is { } e)
        {
            ExceptionDispatchInfo.Throw(e);
        }

        exit.State.Should().Be(DomainState.Shutdown, $"the guest should power off cleanly ({exit.Reason})");
        return exit;
    }
}
