using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;

namespace Paravirt.Cli.Guests;

/// <summary>
/// What a guest itself counts it has done: every hypercall it made (by number), the
/// <c>EVTCHNOP_send</c>s that succeeded, and the block and network bytes its frontends moved. The guest's own
/// bookkeeping, kept in a host object so a host (the demo, a test) can hold it next to the
/// domain's <c>Meter</c> once the domain has ended.
/// </summary>
internal sealed class GuestLedger
{
    private readonly long[] _hypercalls = new long[Core.Domains.DomainMeter.HypercallSlots + 1];
    private long _eventsSent;
    private long _blockRead;
    private long _blockWritten;
    private long _netSent;
    private long _netReceived;
    private long _netFramesSent;
    private long _netFramesReceived;

    public long Hypercalls(int nr) => Interlocked.Read(ref _hypercalls[(uint)nr < Core.Domains.DomainMeter.HypercallSlots ? nr : Core.Domains.DomainMeter.HypercallSlots]);

    public long TotalHypercalls => _hypercalls.Sum(c => Interlocked.Read(ref c));

    /// <summary>EVTCHNOP_send calls that returned 0.</summary>
    public long EventsSent => Interlocked.Read(ref _eventsSent);

    public long BlockBytesRead => Interlocked.Read(ref _blockRead);

    public long BlockBytesWritten => Interlocked.Read(ref _blockWritten);

    /// <summary>Bytes of the frames the guest handed its netfront to send.</summary>
    public long NetBytesSent => Interlocked.Read(ref _netSent);

    /// <summary>Bytes of the frames the guest took from its netfront.</summary>
    public long NetBytesReceived => Interlocked.Read(ref _netReceived);

    public long NetFramesSent => Interlocked.Read(ref _netFramesSent);

    public long NetFramesReceived => Interlocked.Read(ref _netFramesReceived);

    public void CountNetSent(long bytes)
    {
        Interlocked.Add(ref _netSent, bytes);
        Interlocked.Increment(ref _netFramesSent);
    }

    public void CountNetReceived(long bytes)
    {
        Interlocked.Add(ref _netReceived, bytes);
        Interlocked.Increment(ref _netFramesReceived);
    }

    public void CountBlockRead(long bytes) => Interlocked.Add(ref _blockRead, bytes);

    public void CountBlockWritten(long bytes) => Interlocked.Add(ref _blockWritten, bytes);

    internal void CountHypercall(ulong nr) =>
        Interlocked.Increment(ref _hypercalls[nr < Core.Domains.DomainMeter.HypercallSlots ? (int)nr : Core.Domains.DomainMeter.HypercallSlots]);

    internal void CountEventSent() => Interlocked.Increment(ref _eventsSent);
}

/// <summary>
/// Runs a guest kernel on a vCPU that counts into a <see cref="GuestLedger"/> on its way to the real
/// gate, as a kernel's own hypercall tracing would: the count is taken before each call, so a call
/// that never returns (SCHEDOP_shutdown) is counted too. Upcalls reach the inner kernel with the
/// counting vCPU.
/// </summary>
internal sealed class MeteredKernel(ManagedKernel inner, GuestLedger ledger) : ManagedKernel
{
    private CountingCpu? _cpu0;

    public GuestLedger Ledger { get; } = ledger;

    public ManagedKernel Inner { get; } = inner;

    public override void Main(IGuestCpu cpu, ulong startInfo)
    {
        _cpu0 = new CountingCpu(cpu, Ledger);
        Inner.Main(_cpu0, startInfo);
    }

    public override void EventCallback(IGuestCpu cpu, ulong address) =>
        Inner.EventCallback(cpu.VcpuId == 0 && _cpu0 is not null ? _cpu0 : new CountingCpu(cpu, Ledger), address);

    public override void SecondaryEntry(IGuestCpu cpu, ulong rip, ulong rsp) => Inner.SecondaryEntry(new CountingCpu(cpu, Ledger), rip, rsp);

    private sealed class CountingCpu(IGuestCpu cpu, GuestLedger ledger) : IGuestCpu
    {
        public int VcpuId => cpu.VcpuId;

        public IGuestPhysicalMemory Memory => cpu.Memory;

        public ulong ReadTsc() => cpu.ReadTsc();

        public long Hypercall(ulong nr, ulong rdi = 0, ulong rsi = 0, ulong rdx = 0, ulong r10 = 0, ulong r8 = 0)
        {
            ledger.CountHypercall(nr);
            var rc = cpu.Hypercall(nr, rdi, rsi, rdx, r10, r8);
            if (nr == Xen.__HYPERVISOR_event_channel_op && rdi == EventChannel.EVTCHNOP_send && rc == 0)
            {
                ledger.CountEventSent();
            }

            return rc;
        }
    }
}
