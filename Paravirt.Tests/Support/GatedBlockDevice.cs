using System.Collections.Concurrent;
using Paravirt.Core.Backends.Block;

namespace Paravirt.Tests.Support;

/// <summary>
/// A block device wrapper for tests: operations matching <see cref="Hold"/> wait at a gate the
/// test opens; it counts operations in flight (and the most at once), lets a test await a number
/// in flight, and logs each operation as it completes ("read 40+8", "write 1000+8", "flush", "discard 8+16").
/// </summary>
public sealed class GatedBlockDevice(IBlockDevice inner) : IBlockDevice
{
    private readonly Lock gate = new();
    private TaskCompletionSource open = Opened();
    private int inFlight;
    private int maxInFlight;
    private (int Count, TaskCompletionSource Reached)? waiter;

    /// <summary>Which operations ("read", "write", "flush", "discard" and their first sector) wait at the gate while it is closed.</summary>
    public Func<string, long, bool> Hold { get; set; } = (_, _) => true;

    public ConcurrentQueue<string> Completed { get; } = new();

    /// <summary>Operations as they entered the device ("read 40", "write 0", "flush 0", "discard 8").</summary>
    public ConcurrentQueue<string> Started { get; } = new();

    public int InFlight => Volatile.Read(ref inFlight);

    public int MaxInFlight => Volatile.Read(ref maxInFlight);

    public bool Disposed { get; private set; }

    public int SectorSize => inner.SectorSize;

    public int PhysicalSectorSize => inner.PhysicalSectorSize;

    public long SectorCount => inner.SectorCount;

    public bool IsReadOnly => inner.IsReadOnly;

    public bool SupportsDiscard => inner.SupportsDiscard;

    private static TaskCompletionSource Opened()
    {
        var t = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        t.SetResult();
        return t;
    }

    public void CloseGate()
    {
        lock (gate)
        {
            if (open.Task.IsCompleted)
            {
                open = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    public void OpenGate()
    {
        lock (gate)
        {
            open.TrySetResult();
        }
    }

    /// <summary>Completes when at least <paramref name="count"/> operations are in the device at once (bounded by the test's timeout).</summary>
    public Task WaitForInFlightAsync(int count)
    {
        lock (gate)
        {
            if (inFlight >= count)
            {
                return Task.CompletedTask;
            }

            var t = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            waiter = (count, t);
            return t.Task.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        }
    }

    private async ValueTask Enter(string op, long sector)
    {
        Task wait;
        Started.Enqueue($"{op} {sector}");
        lock (gate)
        {
            inFlight++;
            maxInFlight = Math.Max(maxInFlight, inFlight);
            if (waiter is { } w && inFlight >= w.Count)
            {
                w.Reached.TrySetResult();
                waiter = null;
            }

            wait = Hold(op, sector) ? open.Task : Task.CompletedTask;
        }

        await wait.ConfigureAwait(false);
    }

    private void Leave(string entry)
    {
        Completed.Enqueue(entry);
        lock (gate)
        {
            inFlight--;
        }
    }

    public async ValueTask ReadAsync(long sector, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        await Enter("read", sector);
        await inner.ReadAsync(sector, destination, cancellationToken);
        Leave($"read {sector}+{destination.Length / SectorSize}");
    }

    public async ValueTask WriteAsync(long sector, ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
    {
        await Enter("write", sector);
        await inner.WriteAsync(sector, source, cancellationToken);
        Leave($"write {sector}+{source.Length / SectorSize}");
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        await Enter("flush", 0);
        await inner.FlushAsync(cancellationToken);
        Leave("flush");
    }

    public async ValueTask DiscardAsync(long sector, long count, CancellationToken cancellationToken = default)
    {
        await Enter("discard", sector);
        await inner.DiscardAsync(sector, count, cancellationToken);
        Leave($"discard {sector}+{count}");
    }

    public void Dispose()
    {
        Disposed = true;
        inner.Dispose();
    }
}
