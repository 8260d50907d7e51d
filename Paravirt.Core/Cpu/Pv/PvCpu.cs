using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.Logging;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;
using Paravirt.Core.Hypercalls;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Pv;

/// <summary>One entry of the virtual IDT (Xen's <c>trap_info</c> as kept per vCPU).</summary>
internal struct TrapEntry
{
    public ulong Address;
    public ushort Cs;

    /// <summary>Bits 0-1: the DPL <c>int n</c> needs; bit 2 (TI): entering masks events.</summary>
    public byte Flags;

    public readonly int Dpl => Flags & 3;

    public readonly bool DisablesEvents => (Flags & 4) != 0;
}

/// <summary>
/// A 64-bit PV vCPU run on the interpreter as Xen runs it: the guest kernel at CPL 3 with its own
/// kernel/user mode and page-table bases, <c>syscall</c> as the hypercall gate in kernel mode and
/// as the system-call bounce in user mode, exceptions and event upcalls delivered through Xen's
/// bounce frame on the guest kernel stack, and the few privileged instructions Xen emulates.
/// Everything here runs on the vCPU's own thread (hypercall handlers included), between
/// interpreter slices. See docs/pv-cpu.md.
/// </summary>
internal sealed partial class PvCpu : IInterpreterPlatform
{
    // Xen's trap_bounce flags (asm/processor.h).
    private const int TbfException = 1, TbfExceptionErrcode = 2, TbfInterrupt = 8;

    // Exceptions that push an error code (TRAP_HAVE_EC): #DF #TS #NP #SS #GP #PF #AC #CP.
    private const uint TrapHaveEc = (1u << 8) | (1u << 10) | (1u << 11) | (1u << 12) | (1u << 13) | (1u << 14) | (1u << 17) | (1u << 21);

    /// <summary>CR0 as Xen runs a PV guest (PE MP ET NE WP AM PG); the guest sees TS from its own fpu_taskswitch.</summary>
    internal const ulong HostCr0 = 0x8005_0033;

    /// <summary>The hardware CR4 bits a PV guest sees (PV_CR4_GUEST_VISIBLE_MASK of Xen's: PAE MCE OSFXSR OSXMMEXCPT).</summary>
    internal const ulong VisibleCr4 = (1UL << 5) | (1UL << 6) | (1UL << 9) | (1UL << 10);

    private readonly Hypercalls.HypercallTable _table;
    private readonly long[] _meterRow;
    private readonly TrapEntry[] _traps = new TrapEntry[256];
    private readonly List<string> _log = [];
    private readonly long _slice;
    private readonly ILogger _logger;
    private readonly bool _smp;
    private readonly GuestProfile? _profile;
    private long _untilSample = GuestProfile.SampleInterval;
    private readonly HypervisorTrace? _trace;

    public PvCpu(Domain domain, Vcpu vcpu, PvEntry entry, PvEngineOptions options)
    {
        Domain = domain;
        Vcpu = vcpu;
        Options = options;
        _slice = Math.Max(1, options.SliceInstructions);
        _table = domain.Hypervisor.Hypercalls;
        _meterRow = domain.Meter.HypercallRow(vcpu.Id);
        _logger = domain.Hypervisor.Options.Logger;
        _smp = domain.Vcpus.Length > 1;
        _profile = domain.Hypervisor.Options.Profile;
        _trace = domain.Hypervisor.Options.Trace;
        Bus = new PvMachineBus(domain.Hypervisor.Frames, domain.Id);
        State = new CpuState
        {
            Rip = entry.Rip,
            Cpl = 3,
            Cr0 = HostCr0,
            Cr4 = ControlBits.Cr4PAE | ControlBits.Cr4OSFXSR | (1UL << 10),
            Efer = ControlBits.EferLME | ControlBits.EferLMA | ControlBits.EferSCE | ControlBits.EferNXE,
            Rflags = IF | Reserved1,
            Cs = ArchX86.FLAT_KERNEL_CS,
            Ss = ArchX86.FLAT_KERNEL_SS,
        };
        State.Gpr[Gpr.Rsp] = entry.Rsp;
        State.Gpr[Gpr.Rsi] = entry.Rsi;
        KernelSs = ArchX86.FLAT_KERNEL_SS;
        KernelSp = entry.Rsp;
        Cr4 = VisibleCr4;
        Interpreter = new X86Interpreter(State, Bus, this) { Window = Bus.M2pWindow };
        vcpu.Pv.KernelMode = true;
    }

    public Domain Domain { get; }

    public Vcpu Vcpu { get; }

    public PvEngineOptions Options { get; }

    public CpuState State { get; }

    public X86Interpreter Interpreter { get; }

    public PvMachineBus Bus { get; }

    /// <summary>Guest instructions retired so far.</summary>
    public long Instructions { get; private set; }

    /// <summary>The virtual TSS: kernel stack for bounces from user mode (stack_switch).</summary>
    public ulong KernelSs { get; set; }

    public ulong KernelSp { get; set; }

    /// <summary>The guest's CR0.TS (fpu_taskswitch, clts, mov to cr0).</summary>
    public bool TaskSwitched { get; private set; }

    /// <summary>The guest's CR2 (Xen's arch.pv.ctrlreg[2]).</summary>
    public ulong Cr2 { get; private set; }

    /// <summary>The guest's view of CR4 (Xen's arch.pv.ctrlreg[4]).</summary>
    public ulong Cr4 { get; private set; }

    /// <summary>The virtual IOPL in rflags' IOPL bits: PHYSDEVOP_set_iopl, or HYPERVISOR_iret with VMASST_TYPE_architectural_iopl.</summary>
    public ulong Iopl { get; internal set; }

    /// <summary>MSR_MISC_FEATURES_ENABLES' CPUID faulting: <c>cpuid</c> in guest user mode raises #GP.</summary>
    public bool CpuidFaulting { get; private set; }

    /// <summary>Xen's PV CPUID faulting (pv_emul_cpuid): user-mode <c>cpuid</c> is #GP when the guest enabled it.</summary>
    public bool CpuidFaults => CpuidFaulting && !Vcpu.Pv.KernelMode;

    /// <summary>Lines the interpreter or the engine logged (bounded): gaps and crash reasons.</summary>
    public IReadOnlyList<string> Log
    {
        get
        {
            lock (_log)
            {
                return [.. _log];
            }
        }
    }

    // ---- the run loop -------------------------------------------------------------------------

    /// <summary>Runs the vCPU until its domain stops (a <see cref="VcpuExitException"/> ends it).</summary>
    public void Run()
    {
        Vcpu.Pv.UsesTlb = true;
        SyncAddressSpace(force: true);
        while (true)
        {
            if (!IsRunnable)
            {
                Vcpu.Pv.UsesTlb = false;
                EnsureRunnable();
                Vcpu.Pv.UsesTlb = true;
            }

            SyncAddressSpace(force: false);
            if (EventDeliverable())
            {
                DeliverEvent();
                continue;
            }

            var exit = Interpreter.Run(_profile is null ? _slice : Math.Min(_slice, _untilSample));
            Instructions += exit.Instructions;
            if (_profile is not null && (_untilSample -= exit.Instructions) <= 0)
            {
                // The slice was cut to end at the sample point: rip is the instruction it reached.
                _profile.Record(State.Rip, GuestProfile.SampleInterval);
                _untilSample = GuestProfile.SampleInterval;
            }
            OnExit(exit, emulated: false);
        }
    }

    /// <summary>Acts on an interpreter exit; <paramref name="emulated"/> for the exit of an instruction the engine emulated.</summary>
    private void OnExit(CpuExit exit, bool emulated)
    {
        switch (exit.Reason)
        {
            case ExitReason.SliceDone:
                break;
            case ExitReason.Syscall:
                Syscall();
                break;
            case ExitReason.Exception:
                OnException(exit, emulated);
                break;
            case ExitReason.Halt:
                Crash($"hlt executed at CPL 0 at rip 0x{State.Rip:x}, which a PV vCPU never runs at");
                break;
            default:
                Crash($"bus error at machine address 0x{exit.Address:x} (rip 0x{State.Rip:x}): a page-table entry reaches a frame the domain does not own");
                break;
        }
    }

    /// <summary>Created or Running, and up.</summary>
    private bool IsRunnable => Domain.State <= DomainState.Running && Vcpu.IsUp;

    private void EnsureRunnable()
    {
        while (true)
        {
            var state = Domain.State;
            if (state <= DomainState.Running && Vcpu.IsUp)
            {
                return;
            }

            if (state is not (DomainState.Created or DomainState.Running or DomainState.Paused))
            {
                throw new VcpuExitException();
            }

            if (state == DomainState.Paused)
            {
                // A paused vCPU is not runnable: offline in its runstate until the host unpauses it.
                Vcpu.SetRunstate(Vcpu.RUNSTATE_offline);
                var alive = Domain.WaitWhilePaused();
                Vcpu.SetRunstate(Vcpu.RUNSTATE_running);
                if (!alive)
                {
                    throw new VcpuExitException();
                }
            }

            if (!Vcpu.IsUp)
            {
                Vcpu.WaitWhileDown(() => !Domain.IsAlive);
            }
        }
    }

    /// <summary>
    /// Points the MMU at the current base (kernel or user L4) and honours TLB flush requests from
    /// the memory model: every cached translation goes before guest memory is touched again.
    /// </summary>
    private void SyncAddressSpace(bool force)
    {
        var pv = Vcpu.Pv;
        var flush = pv.TakeTlbFlushRequest() | force;
        var cr3 = pv.CurrentBaseMfn << 12;
        if (flush || cr3 != State.Cr3)
        {
            if (cr3 == 0)
            {
                Crash("the vCPU has no page tables (vcpu.Pv.KernelBaseMfn is 0)");
            }

            State.Cr3 = cr3;
            Interpreter.FlushTlb();
        }
    }

    // ---- syscall: hypercalls and guest system calls ---------------------------------------------

    private void Syscall()
    {
        // What the syscall instruction itself does: rcx = return rip, r11 = rflags.
        State.Gpr[Gpr.Rcx] = State.Rip;
        State.Gpr[Gpr.R11] = State.Rflags;
        if (!Vcpu.Pv.KernelMode)
        {
            SyscallFromUser();
            return;
        }

        var nr = State.Gpr[Gpr.Rax];
        DomainMeter.CountHypercall(_meterRow, nr);

        // A hypercall may block, or wait for the other vCPUs' flushes: meanwhile this vCPU's TLB is
        // not in use, and any flush asked of it is taken before it is (iret takes it first thing).
        // A single-vCPU domain has nobody to wait for: its own flushes are taken at the loop's top.
        if (_smp)
        {
            Vcpu.Pv.UsesTlb = false;
        }

        var result = _table.Invoke(Vcpu, nr, State.Gpr[Gpr.Rdi], State.Gpr[Gpr.Rsi], State.Gpr[Gpr.Rdx], State.Gpr[Gpr.R10], State.Gpr[Gpr.R8]);
        CompleteRemoteFlushes();

        if (_trace is not null || (result < 0 && nr != Xen.__HYPERVISOR_iret))
        {
            NoteHypercall(nr, result); // iret "returns" the guest's saved rax, not a result
        }

        State.Gpr[Gpr.Rax] = (ulong)result;
    }

    /// <summary>
    /// Xen's flush_tlb_mask IPIs the other CPUs and waits: a TLB flush a hypercall or an emulated
    /// page-table write asked of another vCPU (MMUEXT_TLB_FLUSH_MULTI, INVLPG_MULTI, UVMF with a
    /// mask, a type change's flush) is complete before this vCPU runs guest code again. Each such
    /// vCPU takes it at its next slice boundary, or has no TLB in use (in a hypercall, blocked,
    /// paused, down). While waiting this vCPU's own TLB is not in use either, so two vCPUs waiting
    /// for each other both go on; its own pending flush is taken afterwards. Called with no lock held.
    /// </summary>
    private void CompleteRemoteFlushes()
    {
        if (!_smp)
        {
            return;
        }

        Vcpu.Pv.UsesTlb = false;
        WaitForRemoteFlushes();
        Vcpu.Pv.UsesTlb = true;
        SyncAddressSpace(force: false);
    }

    private void WaitForRemoteFlushes()
    {
        foreach (var other in Domain.Vcpus)
        {
            if (other == Vcpu || other.Pv.TlbFlushSettled)
            {
                continue;
            }

            var spin = default(SpinWait);
            while (!other.Pv.TlbFlushSettled && Domain.IsAlive)
            {
                spin.SpinOnce();
            }
        }
    }

    /// <summary>The trace line of a hypercall, and a log line for one refused (-ENOSYS as a warning: a gap a porter must know of).</summary>
    private void NoteHypercall(ulong nr, long result)
    {
        // The arguments as the guest passed them (a hypercall may have changed the registers it returns in).
        var (a1, a2, a3, a4, a5) = (State.Gpr[Gpr.Rdi], State.Gpr[Gpr.Rsi], State.Gpr[Gpr.Rdx], State.Gpr[Gpr.R10], State.Gpr[Gpr.R8]);
        _trace?.Hypercall(Vcpu, nr, a1, a2, a3, a4, a5, result);
        if (result == -(long)Errno.ENOSYS && _logger.IsEnabled(LogLevel.Warning))
        {
            _logger.LogWarning("d{Domain}v{Vcpu}: hypercall {Nr} ({Name}) cmd 0x{Cmd:x} answered -ENOSYS", Domain.Id, Vcpu.Id, nr, HypercallTable.XenName((int)Math.Min(nr, int.MaxValue)) ?? "unknown", a1);
        }
        else if (result < 0 && _logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("d{Domain}v{Vcpu}: hypercall {Nr} ({Name}) cmd 0x{Cmd:x} answered {Errno}", Domain.Id, Vcpu.Id, nr, HypercallTable.XenName((int)Math.Min(nr, int.MaxValue)) ?? "unknown", a1, result);
        }
    }

    /// <summary>
    /// <c>syscall</c> in guest user mode: Xen's switch_to_kernel — a bounce to the registered
    /// syscall callback (events masked if it was registered with CALLBACKF_mask_events), then DF
    /// cleared (the PV ABI's fixed SYSCALL_MASK). With no callback it is #UD at the instruction.
    /// </summary>
    private void SyscallFromUser()
    {
        var callback = Vcpu.SyscallCallback;
        if (callback == 0)
        {
            State.Rip -= 2;
            ref readonly var ud = ref _traps[Vectors.UD];
            if (ud.Address == 0)
            {
                Unhandled(Vectors.UD, null, "syscall from user mode with no syscall callback");
            }

            Bounce(ud.Address, TbfException | (ud.DisablesEvents ? TbfInterrupt : 0), 0, Vectors.UD);
            return;
        }

        Bounce(callback, Vcpu.CallbackMasksEvents(Callback.CALLBACKTYPE_syscall) ? TbfInterrupt : 0, 0, SyscallBounce);
        State.Rflags &= ~DF;
        SysretRegisters();
    }

    // ---- exceptions -----------------------------------------------------------------------------

    private void OnException(CpuExit exit, bool emulated)
    {
        var vector = exit.Vector;
        if (exit.SoftwareInterrupt)
        {
            SoftwareInterrupt(vector);
            return;
        }

        switch (vector)
        {
            case Vectors.BP:
                // Linux retries an int3 that a concurrent text_poke removed, counting on the CPU to
                // fetch the instruction afresh: code another vCPU wrote is not in this one's decoded
                // blocks until they are checked against memory again.
                Interpreter.SerializeCodeFetch();
                break;
            case Vectors.UD:
                if (TryForcedEmulation())
                {
                    return;
                }

                break;
            case Vectors.NM:
                // do_device_not_available: the guest's TS is delivered once and cleared.
                State.Cr0 &= ~ControlBits.Cr0TS;
                if (!TaskSwitched)
                {
                    return;
                }

                TaskSwitched = false;
                break;
            case Vectors.PF:
                // A fault inside an emulation is the guest's, never emulated again (pv_ro_page_fault
                // injects the emulator's #PF as it is).
                if (!emulated && TryEmulatePageTableWrite(exit))
                {
                    return;
                }

                PageFault(exit.Address, exit.ErrorCode ?? 0);
                return;
        }

        InjectException(vector, exit.ErrorCode ?? 0);
    }

    /// <summary>
    /// <c>int n</c>: Xen's IDT gates have DPL 0, so <c>int n</c> is #GP((n &lt;&lt; 3) | IDT) unless the
    /// guest's trap-table entry allows it (DPL ≥ 1 from kernel mode, 3 from user mode); <c>int 0x80</c>
    /// goes straight to a registered handler (int80_direct_trap).
    /// </summary>
    private void SoftwareInterrupt(int vector)
    {
        ref readonly var ti = ref _traps[vector];
        var permitted = (vector == 0x80 && ti.Address != 0) || ti.Dpl >= (Vcpu.Pv.KernelMode ? 1 : 3);
        if (!permitted)
        {
            State.Rip -= 2; // a #GP does not move rip past the instruction
            InjectException(Vectors.GP, (uint)(vector << 3) | 2);
            return;
        }

        if (ti.Address == 0)
        {
            Unhandled(vector, null, "int");
        }

        Bounce(ti.Address, TbfException | (ti.DisablesEvents ? TbfInterrupt : 0), 0, vector);
    }

    /// <summary>pv_inject_event for #PF: cr2 to the guest's CR2 and vcpu_info; the U bit says guest user mode, not CPL.</summary>
    private void PageFault(ulong address, uint errorCode)
    {
        SetCr2(address);
        var code = errorCode & ~PageFaultErrorCode.User;
        if (!Vcpu.Pv.KernelMode)
        {
            code |= PageFaultErrorCode.User;
        }

        InjectException(Vectors.PF, code);
    }

    /// <summary>pv_inject_hw_exception: through the guest's trap table, with an error code where the vector has one.</summary>
    private void InjectException(int vector, uint errorCode)
    {
        ref readonly var ti = ref _traps[vector];
        var hasCode = vector < 32 && (TrapHaveEc & (1u << vector)) != 0;
        if (ti.Address == 0)
        {
            Unhandled(vector, hasCode ? errorCode : null, "exception");
        }

        var flags = TbfException | (hasCode ? TbfExceptionErrcode : 0) | (ti.DisablesEvents ? TbfInterrupt : 0);
        Bounce(ti.Address, flags, errorCode, vector);
    }

    /// <summary>Xen's "Unhandled: vec …" then a crash from create_bounce_frame's null bounce address.</summary>
    [DoesNotReturn]
    private void Unhandled(int vector, uint? errorCode, string what)
    {
        var cr2 = vector == Vectors.PF ? $", cr2 0x{Cr2:x}" : "";
        Crash($"unhandled {what} {VectorName(vector)} (vector {vector}) at rip 0x{State.Rip:x}"
            + $"{(errorCode is { } e ? $", error code 0x{e:x}" : "")}{cr2} in guest {(Vcpu.Pv.KernelMode ? "kernel" : "user")} mode: no handler in the trap table");
    }

    // What a bounce delivers, for crash messages only (formatted when the domain crashes, never per bounce).
    private const int EventBounce = -1, SyscallBounce = -2;

    private static string BounceName(int what) => what switch
    {
        EventBounce => "event upcall",
        SyscallBounce => "syscall",
        _ => VectorName(what),
    };

    private static string VectorName(int vector) => vector switch
    {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        _ => $"vector 0x{vector:x}",
    };

    /// <summary>
    /// Xen's forced-emulation prefix: <c>ud2; .ascii "xen"; cpuid</c> runs CPUID from the domain's
    /// policy and steps past all 7 bytes; any other #UD goes to the guest.
    /// </summary>
    private static ReadOnlySpan<byte> ForcedCpuid => [0x0F, 0x0B, (byte)'x', (byte)'e', (byte)'n', 0x0F, 0xA2];

    private bool TryForcedEmulation()
    {
        Span<byte> bytes = stackalloc byte[7];
        if (!Interpreter.TryReadLinear(State.Rip, bytes, out _)
            || !bytes.SequenceEqual(ForcedCpuid))
        {
            return false;
        }

        var r = Cpuid((uint)State.Gpr[Gpr.Rax], (uint)State.Gpr[Gpr.Rcx]);
        State.Gpr[Gpr.Rax] = r.Eax;
        State.Gpr[Gpr.Rbx] = r.Ebx;
        State.Gpr[Gpr.Rcx] = r.Ecx;
        State.Gpr[Gpr.Rdx] = r.Edx;
        State.Rip += 7;
        State.Rflags &= ~RF;
        return true;
    }

    // ---- events ---------------------------------------------------------------------------------

    /// <summary>test_guest_events: an upcall is pending and the guest has not masked it.</summary>
    private bool EventDeliverable()
    {
        if (!Vcpu.HasVcpuInfo)
        {
            return false;
        }

        ref var info = ref Vcpu.Info;
        return Volatile.Read(ref info.evtchn_upcall_pending) != 0 && Volatile.Read(ref info.evtchn_upcall_mask) == 0;
    }

    private void DeliverEvent()
    {
        var callback = Vcpu.EventCallback;
        if (callback == 0)
        {
            Crash($"an event upcall is pending and unmasked at rip 0x{State.Rip:x} but no event callback is registered");
        }

        Bounce(callback, TbfInterrupt, 0, EventBounce);
    }

    // ---- the bounce frame -----------------------------------------------------------------------

    /// <summary>
    /// Xen's create_bounce_frame for a 64-bit PV guest: from user mode switch to kernel mode and
    /// the stack_switch stack, else stay on the current stack (CS's RPL cleared to tell the guest
    /// it interrupted its kernel); 16-byte align; push { RCX, R11, [ERRCODE,] RIP, CS (saved upcall
    /// mask in bits 32-39), RFLAGS (IF = !saved mask), RSP, SS }; mask events for TBF_INTERRUPT;
    /// enter the handler at FLAT_KERNEL_CS/SS with TF, NT, RF, VM and AC clear. The return to the
    /// guest is Xen's sysret path, so rcx = rip and r11 = rflags there. A fault writing the frame,
    /// a stack in Xen's range, or a null handler crashes the domain.
    /// </summary>
    private void Bounce(ulong handler, int flags, uint errorCode, int what)
    {
        var cs = (ulong)State.Cs;
        var ss = (ulong)State.Ss;
        var interruptedRsp = State.Gpr[Gpr.Rsp];
        ulong rsp;
        if (!Vcpu.Pv.KernelMode)
        {
            ToggleGuestMode();
            rsp = KernelSp;
        }
        else
        {
            rsp = interruptedRsp;
            cs &= ~3UL;
        }

        rsp &= ~0xFUL;
        if (rsp > ArchX86.HYPERVISOR_VIRT_START && rsp < ArchX86.HYPERVISOR_VIRT_END + 64)
        {
            Crash($"{BounceName(what)} at rip 0x{State.Rip:x}: the guest kernel stack 0x{rsp:x} lies in Xen's reserved range");
        }

        if (handler == 0)
        {
            Crash($"{BounceName(what)} at rip 0x{State.Rip:x}: the bounce address is null");
        }

        var hasInfo = Vcpu.HasVcpuInfo;
        var savedMask = hasInfo ? Volatile.Read(ref Vcpu.Info.evtchn_upcall_mask) : (byte)1;
        var rflags = (State.Rflags & ~(IF | IOPL)) | (savedMask == 0 ? IF : 0);
        if ((Domain.VmAssist & (1UL << Xen.VMASST_TYPE_architectural_iopl)) != 0)
        {
            rflags |= Iopl;
        }

        var withCode = (flags & TbfExceptionErrcode) != 0;
        Span<ulong> frame = stackalloc ulong[withCode ? 8 : 7];
        var i = 0;
        frame[i++] = State.Gpr[Gpr.Rcx];
        frame[i++] = State.Gpr[Gpr.R11];
        if (withCode)
        {
            frame[i++] = errorCode;
        }

        frame[i++] = State.Rip;
        frame[i++] = (cs & 0xFFFF) | ((ulong)savedMask << 32);
        frame[i++] = rflags;
        frame[i++] = interruptedRsp;
        frame[i] = ss;
        rsp -= (ulong)frame.Length * 8;
        Span<byte> bytes = stackalloc byte[frame.Length * 8];
        for (var k = 0; k < frame.Length; k++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(bytes[(k * 8)..], frame[k]);
        }

        if (!Interpreter.TryWriteLinear(rsp, bytes, out var fault))
        {
            Crash($"page fault at 0x{fault:x} writing the bounce frame of {BounceName(what)} (rip 0x{State.Rip:x}) to the guest kernel stack at 0x{rsp:x}");
        }

        if ((flags & TbfInterrupt) != 0 && hasInfo)
        {
            Volatile.Write(ref Vcpu.Info.evtchn_upcall_mask, 1);
        }

        if (_trace is not null || _logger.IsEnabled(LogLevel.Debug))
        {
            NoteBounce(what, frame[withCode ? 3 : 2], handler, withCode ? errorCode : null);
        }

        State.Rflags &= ~(AC | VM | RF | NT | TF);
        State.Ss = ArchX86.FLAT_KERNEL_SS;
        State.Cs = ArchX86.FLAT_KERNEL_CS;
        State.Gpr[Gpr.Rsp] = rsp;
        State.Rip = handler;
        SysretRegisters();
    }

    private void NoteBounce(int what, ulong rip, ulong handler, uint? errorCode)
    {
        var name = BounceName(what);
        ulong? cr2 = what == Vectors.PF ? Cr2 : null;
        _trace?.Bounce(Vcpu, name, rip, handler, errorCode, cr2);
        if (what is >= 0 and < 32)
        {
            _logger.LogDebug("d{Domain}v{Vcpu}: {What} at rip 0x{Rip:x} error 0x{Code:x} cr2 0x{Cr2:x} bounced to 0x{Handler:x}", Domain.Id, Vcpu.Id, name, rip, errorCode ?? 0, cr2 ?? 0, handler);
        }
    }

    /// <summary>Xen returns to the guest with sysret after a hypercall or a bounce: rcx = rip, r11 = rflags.</summary>
    private void SysretRegisters()
    {
        if ((long)State.Rip >> 47 is 0 or -1)
        {
            State.Gpr[Gpr.Rcx] = State.Rip;
            State.Gpr[Gpr.R11] = (State.Rflags & ~(IOPL | VM)) | IF;
        }
    }

    /// <summary>toggle_guest_mode: flip kernel/user mode, swap the GS bases (swapgs), switch page-table base.</summary>
    private void ToggleGuestMode()
    {
        Vcpu.Pv.KernelMode = !Vcpu.Pv.KernelMode;
        (State.GsBase, State.KernelGsBase) = (State.KernelGsBase, State.GsBase);
        SyncAddressSpace(force: true);
    }

    private void SetCr2(ulong address)
    {
        Cr2 = address;
        if (Vcpu.HasVcpuInfo)
        {
            Vcpu.Info.arch.cr2 = address; // arch_set_cr2
        }
    }

    /// <summary>Crashes the domain with <paramref name="reason"/> and leaves guest code.</summary>
    [DoesNotReturn]
    internal void Crash(string reason)
    {
        AddLog(reason, LogLevel.Error);
        Domain.Crash($"vCPU {Vcpu.Id}: {reason}");
        throw new VcpuExitException();
    }

    /// <summary>
    /// A line for <see cref="Log"/>, the trace and the logger: a gap (an instruction the interpreter
    /// lacks) is a warning; an MSR answered #GP as Xen answers it is information (Linux probes some
    /// with rdmsr_safe on every boot); a crash is an error.
    /// </summary>
    private void AddLog(string line, LogLevel level = LogLevel.Warning)
    {
        _logger.Log(level, "{Line}", line);
        _trace?.Note(Vcpu, line);
        lock (_log)
        {
            if (_log.Count < 256)
            {
                _log.Add(line);
            }
        }
    }

    // ---- IInterpreterPlatform -------------------------------------------------------------------

    public CpuidResult Cpuid(uint leaf, uint subleaf) => PvCpuid.Get(Vcpu, leaf, subleaf);

    /// <summary>The TSC vcpu_time_info is stamped with, so the guest's pvclock arithmetic agrees.</summary>
    public ulong ReadTsc() => Time.Clock.ReadTsc();

    public void LogUnimplemented(string mnemonic) => AddLog($"d{Domain.Id}v{Vcpu.Id}: #UD for unimplemented {mnemonic}");
}
