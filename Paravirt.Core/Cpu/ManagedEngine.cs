using Paravirt.Core.Domains;
using Paravirt.Core.Time;

namespace Paravirt.Core.Cpu;

/// <summary>
/// Runs managed guests: each vCPU on its own host thread, entering guest code written in C#.
/// The guest sees only its <see cref="IGuestCpu"/>. Upcalls are delivered on the way out of a
/// hypercall (including a wake from <c>SCHEDOP_block</c>) when an event is pending and
/// <c>evtchn_upcall_mask</c> is clear. An exception escaping guest code crashes that domain only.
/// </summary>
internal static class ManagedEngine
{
    public static Thread StartVcpuThread(Domain domain, Vcpu vcpu, Action<IGuestCpu> entry)
    {
        var cpu = new ManagedCpu(domain, vcpu);
        return VcpuThread.Start(domain, vcpu, $"d{domain.Id}v{vcpu.Id}", () =>
        {
            entry(cpu);
            if (domain.IsAlive && vcpu.Id == 0)
            {
                domain.Crash("vCPU 0 returned from the kernel's entry point without SCHEDOP_shutdown");
            }
        }, e => $"unhandled {e.GetType().Name} on vCPU {vcpu.Id}: {e.Message}");
    }
}

/// <summary>Unwinds a vCPU thread out of guest code when its domain stops. Guest code must let it pass.</summary>
internal sealed class VcpuExitException() : Exception("the domain is no longer running");

/// <summary>A managed vCPU as its guest sees it: the hypercall gate and its memory.</summary>
internal sealed class ManagedCpu : IGuestCpu
{
    private readonly Domain _domain;
    private readonly Vcpu _vcpu;
    private readonly Hypercalls.HypercallTable _table;
    private readonly long[] _meterRow;

    public ManagedCpu(Domain domain, Vcpu vcpu)
    {
        _domain = domain;
        _vcpu = vcpu;
        _table = domain.Hypervisor.Hypercalls;
        _meterRow = domain.Meter.HypercallRow(vcpu.Id);
        Memory = new ManagedMemoryView(domain.Memory);
    }

    public int VcpuId => _vcpu.Id;

    public IGuestPhysicalMemory Memory { get; }

    public ulong ReadTsc() => Clock.ReadTsc();

    public long Hypercall(ulong nr, ulong rdi = 0, ulong rsi = 0, ulong rdx = 0, ulong r10 = 0, ulong r8 = 0)
    {
        // The hot path is straight-line: two state reads before and after, a plain increment of this
        // vCPU's own counter, one indirect call, and the upcall check; the rest is out of line.
        if (!IsRunnable)
        {
            EnsureRunnable();
        }

        DomainMeter.CountHypercall(_meterRow, nr);
        var result = _table.Invoke(_vcpu, nr, rdi, rsi, rdx, r10, r8);
        if (!IsRunnable)
        {
            EnsureRunnable();
        }

        if (_vcpu.UpcallDeliverable())
        {
            DeliverUpcalls();
        }

        return result;
    }

    /// <summary>Runs the guest's event callback while an upcall is deliverable, with events masked, as Xen's bounce frame does.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void DeliverUpcalls()
    {
        while (_vcpu.UpcallDeliverable())
        {
            ref var info = ref _vcpu.Info;
            var savedMask = info.evtchn_upcall_mask;
            Volatile.Write(ref info.evtchn_upcall_mask, 1);
            _vcpu.InUpcall = true;
            try
            {
                _domain.Kernel!.EventCallback(this, _vcpu.EventCallback);
            }
            finally
            {
                _vcpu.InUpcall = false;
                if (_vcpu.HasVcpuInfo)
                {
                    // The callback's return is the guest's iret: restore the mask it had.
                    Volatile.Write(ref _vcpu.Info.evtchn_upcall_mask, savedMask);
                }
            }

            EnsureRunnable();
        }
    }

    /// <summary>The hot path's check: Created or Running, and the vCPU up (one read of each).</summary>
    private bool IsRunnable => _domain.State <= DomainState.Running && _vcpu.IsUp;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void EnsureRunnable()
    {
        var state = _domain.State;
        if (state <= DomainState.Running && _vcpu.IsUp)
        {
            return;
        }

        if (state is not (DomainState.Created or DomainState.Running or DomainState.Paused))
        {
            throw new VcpuExitException();
        }

        if (state == DomainState.Paused)
        {
            // Held at the gate: not running (offline in its runstate, as the PV engine parks it) until unpaused.
            _vcpu.SetRunstate(Vcpu.RUNSTATE_offline);
            var alive = _domain.WaitWhilePaused();
            _vcpu.SetRunstate(Vcpu.RUNSTATE_running);
            if (!alive)
            {
                throw new VcpuExitException();
            }
        }

        if (!_vcpu.IsUp)
        {
            // VCPUOP_down: the vCPU stays offline here until VCPUOP_up (or the domain ends).
            _vcpu.WaitWhileDown(() => !_domain.IsAlive);
            EnsureRunnable();
        }
    }
}

/// <summary>A managed guest's loads and stores; a bad address is a <see cref="GuestFaultException"/>.</summary>
internal sealed class ManagedMemoryView(Memory.GuestMemory memory) : IGuestPhysicalMemory
{
    public void Read(ulong gpa, Span<byte> destination)
    {
        if (!memory.TryRead(gpa, destination))
        {
            throw new GuestFaultException(gpa, destination.Length, write: false);
        }
    }

    public void Write(ulong gpa, ReadOnlySpan<byte> source)
    {
        if (!memory.TryWrite(gpa, source))
        {
            throw new GuestFaultException(gpa, source.Length, write: true);
        }
    }

    public unsafe T Read<T>(ulong gpa)
        where T : unmanaged => memory.TryRead(gpa, out T value) ? value : throw new GuestFaultException(gpa, sizeof(T), write: false);

    public unsafe void Write<T>(ulong gpa, in T value)
        where T : unmanaged
    {
        if (!memory.TryWrite(gpa, in value))
        {
            throw new GuestFaultException(gpa, sizeof(T), write: true);
        }
    }

    public uint CompareExchange32(ulong gpa, uint value, uint comparand) =>
        memory.TryCompareExchange32(gpa, value, comparand, out var old) ? old : throw new GuestFaultException(gpa, 4, write: true);

    public ulong CompareExchange64(ulong gpa, ulong value, ulong comparand) =>
        memory.TryCompareExchange64(gpa, value, comparand, out var old) ? old : throw new GuestFaultException(gpa, 8, write: true);

    public ulong Or64(ulong gpa, ulong mask) =>
        memory.TryOr64(gpa, mask, out var old) ? old : throw new GuestFaultException(gpa, 8, write: true);

    public ulong And64(ulong gpa, ulong mask) =>
        memory.TryAnd64(gpa, mask, out var old) ? old : throw new GuestFaultException(gpa, 8, write: true);

    public ulong ReadVolatile(ulong gpa, int size) =>
        memory.TryReadVolatile(gpa, size, out var v) ? v : throw new GuestFaultException(gpa, size, write: false);

    public void WriteVolatile(ulong gpa, int size, ulong value)
    {
        if (!memory.TryWriteVolatile(gpa, size, value))
        {
            throw new GuestFaultException(gpa, size, write: true);
        }
    }
}
