namespace Paravirt.Core.Time;

/// <summary>
/// One thread per hypervisor that fires vCPU timers (single-shot and periodic) at their system
/// time deadlines. Arming replaces a vCPU's earlier deadline of the same kind; a stale entry is
/// recognised by its generation and skipped.
/// </summary>
internal sealed class TimerService : IDisposable
{
    private readonly Clock _clock;
    private readonly PriorityQueue<Entry, ulong> _queue = new();
    private readonly Lock _lock = new();
    private readonly AutoResetEvent _changed = new(false);
    private readonly Thread _thread;
    private volatile bool _stopping;

    public TimerService(Clock clock)
    {
        _clock = clock;
        _thread = new Thread(Run) { IsBackground = true, Name = "paravirt-timers" };
        _thread.Start();
    }

    /// <summary>Calls <paramref name="fire"/> once system time reaches <paramref name="deadlineNs"/>, unless <paramref name="isCurrent"/> says the arming was replaced.</summary>
    public void Arm(ulong deadlineNs, Action fire, Func<bool> isCurrent)
    {
        lock (_lock)
        {
            _queue.Enqueue(new Entry(fire, isCurrent), deadlineNs);
        }

        _changed.Set();
    }

    public int Pending
    {
        get
        {
            lock (_lock)
            {
                return _queue.Count;
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _changed.Set();
        _thread.Join(TimeSpan.FromSeconds(5));
        _changed.Dispose();
    }

    private void Run()
    {
        var due = new List<Entry>();
        while (!_stopping)
        {
            var wait = Timeout.InfiniteTimeSpan;
            lock (_lock)
            {
                var now = _clock.SystemTimeNs();
                while (_queue.TryPeek(out var e, out var deadline) && deadline <= now)
                {
                    _queue.Dequeue();
                    due.Add(e);
                }

                if (_queue.TryPeek(out _, out var next))
                {
                    // Waits are whole milliseconds (the wait handle's unit), rounded up: a shorter
                    // one would round down to zero and spin a host core until the deadline.
                    wait = TimeSpan.FromMilliseconds(Math.Min((next - now + 999_999) / 1_000_000, 1000));
                }
            }

            foreach (var e in due)
            {
                if (e.IsCurrent())
                {
                    e.Fire();
                }
            }

            due.Clear();
            _changed.WaitOne(wait);
        }
    }

    private readonly record struct Entry(Action Fire, Func<bool> IsCurrent);
}
