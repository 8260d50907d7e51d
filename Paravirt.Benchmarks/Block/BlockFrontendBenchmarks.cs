using BenchmarkDotNet.Attributes;
using Microsoft.Win32.SafeHandles;
using Paravirt.Benchmarks.Support;
using Paravirt.Core.Backends.Block;
using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Benchmarks.Block;

/// <summary>
/// The block path end to end: a running managed guest's blkfront (guest stub) → event channel →
/// blkback → <see cref="FileBlockDevice"/> → a 64 MiB file, against <see cref="RandomAccess"/> on
/// the same file in the same process. The guest waits on a host semaphore between invocations
/// (as the ping-pong pair does), runs the batch, and reports it done.
/// <list type="bullet">
/// <item><see cref="BlkfrontRandomRead4K"/> vs <see cref="RandomAccessRandomRead4K"/>: 4 KiB reads at
/// the same random page offsets, 32 in flight on both sides. Target ≤ 1.4×.</item>
/// <item><see cref="BlkfrontRoundTrip64MiB"/> vs <see cref="RandomAccessRoundTrip64MiB"/>: write then
/// read 64 MiB in 1 MiB calls. Reported as MiB/s (128 MiB moved per invocation).</item>
/// </list>
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class BlockFrontendBenchmarks
{
    public const int Reads = 1024;
    public const int InFlight = 32;
    public const int FileBytes = 64 << 20;
    private const int Chunk = 1 << 20;

    private readonly long[] _offsets = new long[Reads];
    private string _dir = null!;
    private string _path = null!;
    private Hypervisor _hv = null!;
    private Domain _dom = null!;
    private BlkBack _disk = null!;
    private BlockKernel _kernel = null!;
    private SafeFileHandle _handle = null!;
    private byte[][] _buffers = null!;
    private byte[] _chunk = null!;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("paravirt-blk-bench-").FullName;
        _path = Path.Combine(_dir, "disk.img");
        var rng = new Random(42);
        using (var f = File.Create(_path))
        {
            var block = new byte[Chunk];
            for (var i = 0; i < FileBytes / Chunk; i++)
            {
                rng.NextBytes(block);
                f.Write(block);
            }
        }

        for (var i = 0; i < Reads; i++)
        {
            _offsets[i] = (long)rng.Next(FileBytes / 4096) * 4096;
        }

        _buffers = new byte[InFlight][];
        for (var i = 0; i < InFlight; i++)
        {
            _buffers[i] = new byte[4096];
        }

        _chunk = new byte[Chunk];
        rng.NextBytes(_chunk);
        _handle = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, FileOptions.Asynchronous);

        _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64 });
        _dom = _hv.CreateDomain(new DomainConfig { Name = "blk-bench", MemoryMiB = 16 });
        _disk = _dom.AttachDisk("xvda", BlockDevice.OpenFile(_path, writable: true));
        _kernel = new BlockKernel(_offsets);
        _dom.Start(_kernel);
        _kernel.WaitReady(_dom, "connect its disk");

        Run(BlockKernel.Job.RandomRead); // one warm batch proves the path works before measuring
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _kernel.Stop();
        _dom.WaitForShutdownAsync().Wait(TimeSpan.FromSeconds(30));
        _dom.Destroy();
        _disk.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(30));
        _hv.Dispose();
        _handle.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private void Run(BlockKernel.Job job)
    {
        _kernel.Next = job;
        _kernel.RunBatch(_dom);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Reads)]
    [BenchmarkCategory("random-read")]
    public async Task RandomAccessRandomRead4K()
    {
        var workers = new Task[InFlight];
        for (var w = 0; w < InFlight; w++)
        {
            workers[w] = Worker(w);
        }

        await Task.WhenAll(workers);

        async Task Worker(int w)
        {
            for (var i = w; i < Reads; i += InFlight)
            {
                await RandomAccess.ReadAsync(_handle, _buffers[w], _offsets[i]);
            }
        }
    }

    [Benchmark(OperationsPerInvoke = Reads)]
    [BenchmarkCategory("random-read")]
    public void BlkfrontRandomRead4K() => Run(BlockKernel.Job.RandomRead);

    [Benchmark(Baseline = true)]
    [BenchmarkCategory("roundtrip")]
    public void RandomAccessRoundTrip64MiB()
    {
        for (long off = 0; off < FileBytes; off += Chunk)
        {
            RandomAccess.Write(_handle, _chunk, off);
        }

        for (long off = 0; off < FileBytes; off += Chunk)
        {
            RandomAccess.Read(_handle, _chunk, off);
        }
    }

    [Benchmark]
    [BenchmarkCategory("roundtrip")]
    public void BlkfrontRoundTrip64MiB() => Run(BlockKernel.Job.RoundTrip);

    /// <summary>The guest: connects blkfront, then runs one batch of <see cref="Next"/> per <see cref="BatchKernel.Go"/>.</summary>
    private sealed class BlockKernel(long[] offsets) : BatchKernel
    {
        private readonly BlockOperation[] _ops = new BlockOperation[InFlight];
        private readonly byte[][] _buffers = new byte[InFlight][];
        private readonly byte[] _chunk = new byte[Chunk];
        private BlockFrontend _fe = null!;

        public enum Job
        {
            RandomRead,
            RoundTrip,
        }

        public volatile Job Next;

        protected override void Connect(GuestRuntime rt)
        {
            _fe = BlockFrontend.Connect(rt);
            for (var i = 0; i < InFlight; i++)
            {
                _ops[i] = new BlockOperation();
                _buffers[i] = new byte[4096];
            }

            new Random(7).NextBytes(_chunk);
        }

        protected override void Batch()
        {
            var fe = _fe;
            if (Next == Job.RandomRead)
            {
                // 32 in flight: keep each slot busy, resubmitting as each completes.
                var sectorsPer4K = 4096 / fe.SectorSize;
                for (var i = 0; i < offsets.Length; i++)
                {
                    var k = i % InFlight;
                    if (i >= InFlight)
                    {
                        fe.Wait(_ops[k]);
                    }

                    fe.SubmitRead(offsets[i] / 4096 * sectorsPer4K, _buffers[k], _ops[k]);
                }

                fe.WaitAll(_ops);
            }
            else
            {
                for (long off = 0; off < FileBytes; off += Chunk)
                {
                    fe.Write(off / fe.SectorSize, _chunk);
                }

                for (long off = 0; off < FileBytes; off += Chunk)
                {
                    fe.Read(off / fe.SectorSize, _chunk);
                }
            }
        }

        protected override void Disconnect() => _fe.Close();
    }
}
