using BenchmarkDotNet.Attributes;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Benchmarks.Isolation;

/// <summary>
/// Performance isolation (issue 8's fork bomb, measured): a neighbour guest's batch of work — 256
/// random 4 KiB disk reads with 32 in flight, then 64 XenStore write+read pairs of its own keys —
/// alone (baseline), and the same batch while a fork-bomb guest in the same hypervisor has taken
/// every resource it may and keeps asking for more without end (memory, event channels and
/// XenStore nodes, each refused, in a tight loop). The ratio says how much the bomb costs its
/// neighbour. Stated bound: ≤ 2× on a 2-core host, where the bomb's vCPU thread can take a whole
/// core; limits bound what a domain can hold, not the CPU time it burns (there is no credit
/// scheduler cap yet).
/// </summary>
[MemoryDiagnoser]
public class NeighbourBenchmarks
{
    public const int Reads = 256;
    public const int InFlight = 32;
    public const int Keys = 64;
    private const int DiskBytes = 16 << 20;

    private Hypervisor _hv = null!;
    private Domain _neighbour = null!;
    private Domain? _bomb;
    private BombKernel? _bombKernel;
    private NeighbourKernel _kernel = null!;
    private BlkBack _disk = null!;

    [GlobalSetup(Target = nameof(NeighbourAlone))]
    public void SetupAlone() => StartNeighbour();

    [GlobalSetup(Target = nameof(NeighbourBesideForkBomb))]
    public void SetupBesideBomb()
    {
        StartNeighbour();
        _bombKernel = new BombKernel();
        _bomb = _hv.CreateDomain(new DomainConfig { Name = "bomb", MemoryMiB = 8, MaxMemoryMiB = 10 });
        _bomb.Start(_bombKernel);
        if (!_bombKernel.Exhausted.Wait(TimeSpan.FromSeconds(60)))
        {
            throw new TimeoutException($"the bomb did not reach its limits within 60 s (domain {_bomb.State}: {_bomb.Exit?.Reason})");
        }

        Run(); // a batch beside the bomb proves the neighbour still works before measuring
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _bombKernel?.Stop();
        _kernel.Stop();
        _neighbour.WaitForShutdownAsync().Wait(TimeSpan.FromSeconds(30));
        _bomb?.WaitForShutdownAsync().Wait(TimeSpan.FromSeconds(30));
        _neighbour.Destroy();
        _bomb?.Destroy();
        _disk.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
        _hv.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void NeighbourAlone() => Run();

    [Benchmark]
    public void NeighbourBesideForkBomb() => Run();

    private void StartNeighbour()
    {
        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 128 });
        _neighbour = _hv.CreateDomain(new DomainConfig { Name = "neighbour", MemoryMiB = 16 });
        var bytes = new byte[DiskBytes];
        new Random(42).NextBytes(bytes);
        _disk = _neighbour.AttachDisk("xvda", BlockDevice.InMemory(bytes));
        _kernel = new NeighbourKernel();
        _neighbour.Start(_kernel);
        _kernel.WaitReady(_neighbour, "connect its disk");

        Run();
    }

    private void Run() => _kernel.RunBatch(_neighbour);

    /// <summary>The neighbour: connects blkfront, then runs one batch per <see cref="BatchKernel.Go"/>.</summary>
    private sealed class NeighbourKernel : BatchKernel
    {
        private readonly BlockOperation[] _ops = new BlockOperation[InFlight];
        private readonly byte[][] _buffers = new byte[InFlight][];
        private readonly Random _rng = new(7);
        private GuestRuntime _rt = null!;
        private BlockFrontend _fe = null!;

        protected override void Connect(GuestRuntime rt)
        {
            _rt = rt;
            _fe = BlockFrontend.Connect(rt);
            for (var i = 0; i < InFlight; i++)
            {
                _ops[i] = new BlockOperation();
                _buffers[i] = new byte[4096];
            }
        }

        protected override void Batch()
        {
            var pages = DiskBytes / 4096;
            var sectorsPer4K = 4096 / _fe.SectorSize;
            for (var i = 0; i < Reads; i++)
            {
                var k = i % InFlight;
                if (i >= InFlight)
                {
                    _fe.Wait(_ops[k]);
                }

                _fe.SubmitRead((long)_rng.Next(pages) * sectorsPer4K, _buffers[k], _ops[k]);
            }

            _fe.WaitAll(_ops);
            for (var i = 0; i < Keys; i++)
            {
                var key = $"data/n{i}";
                var value = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (_rt.XenBus.Write(key, value) < 0 || _rt.XenBus.Read(key, out var back) < 0 || back != value)
                {
                    throw new InvalidOperationException($"XenStore key {key} did not read back as written");
                }
            }
        }

        protected override void Disconnect() => _fe.Dispose();
    }

    /// <summary>
    /// The fork bomb: takes memory, event channels and XenStore nodes until each is refused, then
    /// keeps asking for more of each in a loop until told to stop.
    /// </summary>
    private sealed class BombKernel : GuestKernel
    {
        private volatile bool _stop;

        public ManualResetEventSlim Exhausted { get; } = new();

        public long Refusals;

        public void Stop() => _stop = true;

        protected override void Run(GuestRuntime rt)
        {
            var hc = rt.Guest.Hypercalls;
            Span<ulong> frame = stackalloc ulong[1];
            while (hc.IncreaseReservation(frame) == 1)
            {
            }

            while (hc.EvtchnAllocUnbound(0, out _) == 0)
            {
            }

            var nodes = 0;
            while (rt.XenBus.Write($"data/b{nodes / 64}/n{nodes % 64}", "x") >= 0)
            {
                nodes++;
            }

            Exhausted.Set();
            while (!_stop)
            {
                // Every one of these is refused; the bomb never stops asking.
                hc.IncreaseReservation(frame);
                hc.EvtchnAllocUnbound(0, out _);
                rt.XenBus.Write($"data/b{nodes / 64}/n{nodes % 64}", "x");
                Interlocked.Add(ref Refusals, 3);
            }

            rt.Shutdown(Sched.SHUTDOWN_poweroff);
        }
    }
}
