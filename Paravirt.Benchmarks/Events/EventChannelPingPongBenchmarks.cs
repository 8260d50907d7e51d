using BenchmarkDotNet.Attributes;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;

namespace Paravirt.Benchmarks.Events;

/// <summary>
/// Event-channel ping-pong between two running managed domains bound interdomain: each vCPU thread
/// sends (EVTCHNOP_send), blocks (SCHEDOP_block), takes the upcall (the 2-level scan of its
/// shared_info) and answers. Beside it, the same round trips between two threads over a pair of
/// <see cref="SemaphoreSlim"/>. Both pairs are started in <see cref="GlobalSetupAttribute"/>; an
/// invocation releases the pinging side for <see cref="RoundTrips"/> round trips and waits until
/// it reports them done. Target: ≤ 1.2×.
/// </summary>
[MemoryDiagnoser]
public class EventChannelPingPongBenchmarks
{
    public const int RoundTrips = 1000;

    private Hypervisor _hv = null!;
    private Domain _ping = null!;
    private Domain _pong = null!;
    private PingPongKernel _pinger = null!;
    private SemaphorePair _semaphores = null!;

    [GlobalSetup]
    public void Setup()
    {
        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 32 });
        _ping = _hv.CreateDomain(new DomainConfig { Name = "ping", MemoryMiB = 4 });
        _pong = _hv.CreateDomain(new DomainConfig { Name = "pong", MemoryMiB = 4 });
        var pingPort = _ping.Events.AllocUnbound(_pong.Id);
        var pongPort = EventChannelTable.BindInterdomain(_pong, _ping, (uint)pingPort);
        if (pingPort < 0 || pongPort < 0)
        {
            throw new InvalidOperationException($"binding the channel failed ({pingPort}, {pongPort})");
        }

        _pinger = new PingPongKernel((uint)pingPort, pinger: true);
        _ping.Start(_pinger);
        var ponger = new PingPongKernel((uint)pongPort, pinger: false);
        _pong.Start(ponger);
        if (!_pinger.Ready.Wait(TimeSpan.FromSeconds(30)) || !ponger.Ready.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"the guests did not get ready within 30 s (ping {_ping.State}, pong {_pong.State})");
        }

        PingPong(); // one warm round trip proves the channel works before measuring
        _semaphores = new SemaphorePair();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pinger.Stop();
        _ping.Destroy();
        _pong.Destroy();
        _hv.Dispose();
        _semaphores.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = RoundTrips)]
    public void SemaphoreSlimPingPong() => _semaphores.Run(RoundTrips);

    [Benchmark(OperationsPerInvoke = RoundTrips)]
    public void PingPong()
    {
        _pinger.Go.Release();
        if (!_pinger.Done.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"ping-pong did not finish within 30 s (ping {_ping.State}, pong {_pong.State})");
        }
    }

    /// <summary>
    /// A guest that maps shared_info, registers its event callback and then either pings (send,
    /// block until the answer's upcall) or answers (block until a ping's upcall, send). The host
    /// harness only starts and collects the pinger's batch.
    /// </summary>
    private sealed class PingPongKernel(uint port, bool pinger) : ManagedKernel
    {
        private ulong _shared;
        private int _received;
        private volatile bool _stop;

        public SemaphoreSlim Go { get; } = new(0);

        public SemaphoreSlim Done { get; } = new(0);

        public ManualResetEventSlim Ready { get; } = new();

        public void Stop()
        {
            _stop = true;
            Go.Release();
        }

        public override void Main(IGuestCpu cpu, ulong startInfo)
        {
            _shared = BenchGuest.MapSharedInfo(cpu, startInfo);
            var scratch = BenchGuest.Scratch(cpu, startInfo);
            BenchGuest.RegisterEventCallback(cpu, scratch);
            var send = scratch + 0x100;
            cpu.Memory.Write(send, new evtchn_send { port = port });
            Ready.Set();
            if (pinger)
            {
                while (true)
                {
                    Go.Wait();
                    if (_stop)
                    {
                        break;
                    }

                    for (var i = 0; i < RoundTrips; i++)
                    {
                        cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, send);
                        Await(cpu);
                    }

                    Done.Release();
                }

                cpu.Memory.Write(scratch, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff });
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, scratch);
            }
            else
            {
                while (true)
                {
                    Await(cpu);
                    cpu.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, send);
                }
            }
        }

        public override void EventCallback(IGuestCpu cpu, ulong address) => _received += BenchGuest.Acknowledge(cpu, _shared, port);

        /// <summary>Blocks until the upcall has seen the port (SCHEDOP_block unmasks events; the upcall runs on the way out).</summary>
        private void Await(IGuestCpu cpu)
        {
            while (_received == 0)
            {
                cpu.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);
            }

            _received--;
        }
    }

    /// <summary>The baseline: the same harness, with the round trips over two semaphores between two threads.</summary>
    private sealed class SemaphorePair : IDisposable
    {
        private readonly SemaphoreSlim _toPong = new(0);
        private readonly SemaphoreSlim _toPing = new(0);
        private readonly SemaphoreSlim _go = new(0);
        private readonly SemaphoreSlim _done = new(0);
        private readonly Thread _pingThread;
        private readonly Thread _pongThread;
        private int _count;
        private volatile bool _stop;

        public SemaphorePair()
        {
            _pingThread = new Thread(Ping) { IsBackground = true, Name = "sem-ping" };
            _pongThread = new Thread(Pong) { IsBackground = true, Name = "sem-pong" };
            _pingThread.Start();
            _pongThread.Start();
        }

        public void Run(int count)
        {
            _count = count;
            _go.Release();
            if (!_done.Wait(TimeSpan.FromSeconds(30)))
            {
                throw new TimeoutException("semaphore ping-pong did not finish within 30 s");
            }
        }

        public void Dispose()
        {
            _stop = true;
            _go.Release();
            _toPong.Release();
            _pingThread.Join();
            _pongThread.Join();
        }

        private void Ping()
        {
            while (true)
            {
                _go.Wait();
                if (_stop)
                {
                    return;
                }

                for (var i = 0; i < _count; i++)
                {
                    _toPong.Release();
                    _toPing.Wait();
                }

                _done.Release();
            }
        }

        private void Pong()
        {
            while (true)
            {
                _toPong.Wait();
                if (_stop)
                {
                    return;
                }

                _toPing.Release();
            }
        }
    }
}
