using System.Collections.Concurrent;

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

    /// <summary>A pending bit with an awaitable edge.</summary>
    internal sealed class PortSignal
    {
        private readonly Lock _lock = new();
        private TaskCompletionSource _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);
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
            TaskCompletionSource? wake = null;
            lock (_lock)
            {
                if (_closed || _pending)
                {
                    return;
                }

                _pending = true;
                wake = _tcs;
            }

            wake.TrySetResult();
        }

        /// <summary>Waits until the port is pending, then consumes the pending bit. False once the port is closed.</summary>
        public async ValueTask<bool> WaitAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_lock)
                {
                    if (_pending)
                    {
                        _pending = false;
                        _tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        return true;
                    }

                    if (_closed)
                    {
                        return false;
                    }

                    wait = _tcs.Task;
                }

                await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        public void Close()
        {
            TaskCompletionSource tcs;
            lock (_lock)
            {
                _closed = true;
                tcs = _tcs;
            }

            tcs.TrySetResult();
        }
    }
}
