using System.Collections.Concurrent;
using System.Threading.Tasks.Sources;

namespace Paravirt.Core.Events;

/// <summary>
/// Event delivery to the host (domain 0): each port has a signal that a <see cref="HostEventChannel"/>
/// awaits. A notification while nobody waits is remembered (one pending bit per port, as in the
/// guest ABI), so none is lost and repeated sends before a wait coalesce into one.
/// </summary>
internal sealed class HostEventDelivery : IEventDelivery
{
    private readonly ConcurrentDictionary<uint, PortSignal> _ports = new();

    public void SetPending(int vcpuId, uint port) => Signal(port).Set();

    public void ClearPending(uint port)
    {
        if (_ports.TryRemove(port, out var s))
        {
            s.Close();
        }
    }

    public void Unmask(int vcpuId, uint port)
    {
    }

    public bool IsPending(uint port) => _ports.TryGetValue(port, out var s) && s.IsSet;

    public bool IsMasked(uint port) => false;

    internal PortSignal Signal(uint port) => _ports.GetOrAdd(port, _ => new PortSignal());

    /// <summary>
    /// A pending bit with an awaitable edge. The usual caller is one pump per port that waits,
    /// handles, waits again: that waiter is served by one reusable <see cref="IValueTaskSource{TResult}"/>
    /// (no task, no promise, no registration object per notification, so a backend's wake-up
    /// allocates nothing), and a notification that finds it waiting is handed to it directly. A
    /// second waiter at the same time (rare) waits the general way, on a shared task.
    /// </summary>
    internal sealed class PortSignal : IValueTaskSource<bool>
    {
        private readonly Lock _lock = new();
        private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
        private CancellationTokenRegistration _registration; // under _lock, of the reusable waiter
        private CancellationToken _waitToken; // under _lock
        private TaskCompletionSource? _others; // under _lock: waiters beyond the reusable one
        private bool _waiting; // under _lock: the reusable waiter waits
        private bool _inUse; // under _lock: its result has not been taken yet
        private bool _pending;
        private bool _closed;

        public bool IsSet
        {
            get
            {
                lock (_lock)
                {
                    return _pending;
                }
            }
        }

        public void Set()
        {
            TaskCompletionSource? others;
            bool handOver;
            CancellationTokenRegistration registration = default;
            lock (_lock)
            {
                if (_closed || _pending)
                {
                    return;
                }

                others = _others;
                _others = null;
                handOver = _waiting;
                if (handOver)
                {
                    // The waiter takes this notification itself: the bit stays clear.
                    _waiting = false;
                    registration = _registration;
                    _registration = default;
                }
                else
                {
                    _pending = true;
                }
            }

            registration.Unregister();
            if (handOver)
            {
                _core.SetResult(true);
            }

            others?.TrySetResult();
        }

        /// <summary>Waits until the port is pending, then consumes the pending bit. False once the port is closed.</summary>
        public ValueTask<bool> WaitAsync(CancellationToken cancellationToken)
        {
            lock (_lock)
            {
                if (_pending)
                {
                    _pending = false;
                    return new ValueTask<bool>(true);
                }

                if (_closed)
                {
                    return new ValueTask<bool>(false);
                }

                if (cancellationToken.IsCancellationRequested)
                {
                    return ValueTask.FromCanceled<bool>(cancellationToken);
                }

                if (!_inUse)
                {
                    _inUse = true;
                    _waiting = true;
                    _core.Reset();
                    _waitToken = cancellationToken;
                    var version = _core.Version;
                    if (cancellationToken.CanBeCanceled)
                    {
                        // Lock is re-entrant: a token cancelled just now runs Cancel here, which is fine.
                        _registration = cancellationToken.UnsafeRegister(static (s, t) => ((PortSignal)s!).Cancel(t), this);
                    }

                    return new ValueTask<bool>(this, version);
                }
            }

            return WaitAnotherAsync(cancellationToken);
        }

        private void Cancel(CancellationToken token)
        {
            lock (_lock)
            {
                // A late callback of an earlier wait (with another token) must not end this one.
                if (!_waiting || _waitToken != token)
                {
                    return;
                }

                _waiting = false;
                _registration = default;
            }

            _core.SetException(new OperationCanceledException(token));
        }

        private async ValueTask<bool> WaitAnotherAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_lock)
                {
                    if (_pending)
                    {
                        _pending = false;
                        return true;
                    }

                    if (_closed)
                    {
                        return false;
                    }

                    _others ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _others.Task;
                }

                await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        public void Close()
        {
            TaskCompletionSource? others;
            bool wake;
            CancellationTokenRegistration registration = default;
            lock (_lock)
            {
                _closed = true;
                others = _others;
                _others = null;
                wake = _waiting;
                if (wake)
                {
                    _waiting = false;
                    registration = _registration;
                    _registration = default;
                }
            }

            registration.Unregister();
            if (wake)
            {
                _core.SetResult(false);
            }

            others?.TrySetResult();
        }

        bool IValueTaskSource<bool>.GetResult(short token)
        {
            try
            {
                return _core.GetResult(token);
            }
            finally
            {
                lock (_lock)
                {
                    if (token == _core.Version)
                    {
                        _inUse = false;
                    }
                }
            }
        }

        ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token) => _core.GetStatus(token);

        void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
