namespace Paravirt.Core.Domains;

/// <summary>
/// What Xen keeps per vCPU for a classic (not auto-translated) PV guest that runs its own machine
/// code on its own page tables: the meeting point of the PV memory model
/// (<c>Memory/Pv</c>, <c>mmu_update</c>/<c>mmuext_op</c>) and the PV CPU engine (<c>Cpu/Pv</c>).
/// A managed vCPU leaves <see cref="KernelBaseMfn"/> at 0: it runs unpaged, and its guest handles
/// are guest-physical addresses.
/// </summary>
public sealed class PvVcpuState
{
    private ulong _kernelBase;
    private ulong _userBase;
    private int _kernelMode = 1;
    private int _flushPending;
    private int _usesTlb;

    /// <summary>
    /// The machine frame of the top-level (L4) table used in guest kernel mode (Xen's
    /// <c>guest_table</c>, set by <c>MMUEXT_NEW_BASEPTR</c> and by the domain builder), or 0 while the
    /// vCPU runs unpaged. The memory model holds a pin/type reference on it while it is set.
    /// </summary>
    public ulong KernelBaseMfn
    {
        get => Volatile.Read(ref _kernelBase);
        set => Volatile.Write(ref _kernelBase, value);
    }

    /// <summary>The L4 used in guest user mode (<c>guest_table_user</c>, <c>MMUEXT_NEW_USER_BASEPTR</c>), or 0 for none.</summary>
    public ulong UserBaseMfn
    {
        get => Volatile.Read(ref _userBase);
        set => Volatile.Write(ref _userBase, value);
    }

    /// <summary>True while the guest runs in its kernel mode (Xen's <c>TF_kernel_mode</c>); the engine switches it.</summary>
    public bool KernelMode
    {
        get => Volatile.Read(ref _kernelMode) != 0;
        set => Volatile.Write(ref _kernelMode, value ? 1 : 0);
    }

    /// <summary>True when the vCPU translates guest addresses through its page tables (an interpreted PV vCPU).</summary>
    public bool IsPaged => KernelBaseMfn != 0;

    /// <summary>The L4 the vCPU translates through now: the user table in user mode, else the kernel table.</summary>
    public ulong CurrentBaseMfn => KernelMode || UserBaseMfn == 0 ? KernelBaseMfn : UserBaseMfn;

    /// <summary>
    /// Asks the vCPU to drop every cached translation before it next touches guest memory
    /// (a TLB flush; flushing more than asked is always allowed). The memory model calls it on a
    /// base-pointer change, on <c>MMUEXT_TLB_FLUSH_*</c>/<c>INVLPG_*</c>, on <c>UVMF_*</c> flags, and
    /// whenever a frame's type changes so that an old writable translation must not survive.
    /// </summary>
    public void RequestTlbFlush() => Volatile.Write(ref _flushPending, 1);

    /// <summary>The interpreted PV vCPU running this vCPU (set by <c>PvEngine.Start</c>), or null for a managed vCPU.</summary>
    internal Cpu.Pv.PvCpu? Engine { get; set; }

    /// <summary>
    /// PHYSDEVOP_set_iobitmap: the guest's I/O bitmap (a guest address) and how many ports it covers.
    /// Recorded only: a domU is permitted no ports, so port I/O reads all ones or #GPs by the IOPL alone.
    /// </summary>
    public (ulong Bitmap, uint Ports) IoBitmap { get; internal set; }

    /// <summary>For the engine: true (once) if a flush was requested since the last call.</summary>
    public bool TakeTlbFlushRequest() => Interlocked.Exchange(ref _flushPending, 0) != 0;

    /// <summary>A flush was requested and not yet taken.</summary>
    public bool TlbFlushPending => Volatile.Read(ref _flushPending) != 0;

    /// <summary>
    /// For the engine: whether the vCPU may translate through cached entries now (it runs guest code
    /// or delivers an exception) or not (it is in a hypercall, blocked, paused or down, and takes any
    /// pending flush before it touches guest memory again). Set with a full fence, so a requester
    /// that sets a flush pending and then sees false knows the vCPU will take it before its next use.
    /// </summary>
    public bool UsesTlb
    {
        get => Volatile.Read(ref _usesTlb) != 0;
        set => Interlocked.Exchange(ref _usesTlb, value ? 1 : 0);
    }

    /// <summary>
    /// Xen's flush_tlb_mask waits for the other CPUs: true once a flush requested of this vCPU is
    /// complete as far as any observer can tell: taken, or the vCPU is not using its TLB (it takes
    /// the flush before it does again).
    /// </summary>
    public bool TlbFlushSettled => !TlbFlushPending || !UsesTlb;
}
