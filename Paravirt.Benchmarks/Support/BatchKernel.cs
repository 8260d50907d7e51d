using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Benchmarks.Support;

/// <summary>
/// A running managed guest that does one measured batch per host request: it connects its
/// devices (<see cref="Connect"/>), says it is <see cref="Ready"/>, then waits on <see cref="Go"/>,
/// runs <see cref="Batch"/> and releases <see cref="Done"/>, until <see cref="Stop"/>. A batch that
/// throws is kept in <see cref="Failure"/> for the host to report.
/// </summary>
internal abstract class BatchKernel : GuestKernel
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan BatchTimeout = TimeSpan.FromSeconds(120);
    private volatile bool _stop;

    public SemaphoreSlim Go { get; } = new(0);

    public SemaphoreSlim Done { get; } = new(0);

    public ManualResetEventSlim Ready { get; } = new();

    public Exception? Failure { get; private set; }

    public void Stop()
    {
        _stop = true;
        Go.Release();
    }

    /// <summary>Host side: waits (bounded) until the guest has connected its devices.</summary>
    public void WaitReady(Domain domain, string what)
    {
        if (!Ready.Wait(ReadyTimeout))
        {
            throw new TimeoutException($"{domain.Name} did not {what} within {ReadyTimeout.TotalSeconds} s (domain {domain.State}: {domain.Exit?.Reason})");
        }
    }

    /// <summary>Host side: waits (bounded) for the batch a <see cref="Go"/> started, and reports its failure.</summary>
    public void WaitBatch(Domain domain)
    {
        if (!Done.Wait(BatchTimeout))
        {
            throw new TimeoutException($"{domain.Name}'s batch did not finish within {BatchTimeout.TotalSeconds} s (domain {domain.State}: {domain.Exit?.Reason})");
        }

        if (Failure is { } e)
        {
            throw new InvalidOperationException($"{domain.Name}'s batch failed", e);
        }
    }

    /// <summary>Host side: one batch, started and awaited.</summary>
    public void RunBatch(Domain domain)
    {
        Go.Release();
        WaitBatch(domain);
    }

    /// <summary>Guest side, once: connect the devices the batches use.</summary>
    protected abstract void Connect(GuestRuntime rt);

    /// <summary>Guest side, per <see cref="Go"/>: the measured work.</summary>
    protected abstract void Batch();

    /// <summary>Guest side, after <see cref="Stop"/>: close what <see cref="Connect"/> opened.</summary>
    protected abstract void Disconnect();

    protected sealed override void Run(GuestRuntime rt)
    {
        Connect(rt);
        Ready.Set();
        while (true)
        {
            Go.Wait();
            if (_stop)
            {
                break;
            }

            try
            {
                Batch();
            }
            catch (Exception e)
            {
                Failure = e;
            }

            Done.Release();
        }

        Disconnect();
    }
}
