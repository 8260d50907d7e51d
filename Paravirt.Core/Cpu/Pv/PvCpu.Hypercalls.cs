using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Hypercalls;
using Paravirt.Core.Memory;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Core.Cpu.Pv;

// The CPU-side PV hypercalls' work on this vCPU (Hypercalls/PvCpuOps.cs decodes and calls here):
// iret, set_trap_table, stack_switch, set_segment_base, set_gdt, update_descriptor. They run on the
// vCPU's own thread between slices, so they change the registers directly.
internal sealed partial class PvCpu
{
    /// <summary>Xen's FIRST_RESERVED_GDT_ENTRY (14 pages of 512): a guest GDT holds at most this many entries.</summary>
    public const int FirstReservedGdtEntry = 14 * 512;

    // Segment-descriptor bits (high word): S, DPL, P, type, L.
    private const uint SegS = 1u << 12, SegP = 1u << 15, SegDpl = 3u << 13, SegType = 0xF00;

    private readonly ulong[] _gdtFrames = new ulong[16];

    /// <summary>Entries of the guest's GDT (set_gdt); 0 for none.</summary>
    public int GdtEntries { get; private set; }

    /// <summary>The frames of the guest's GDT (the first ⌈entries / 512⌉ count).</summary>
    public ReadOnlySpan<ulong> GdtFrames => _gdtFrames.AsSpan(0, (GdtEntries + 511) / 512);

    /// <summary>The virtual IDT entry for <paramref name="vector"/> (set_trap_table).</summary>
    public TrapEntry Trap(int vector) => _traps[vector];

    /// <summary>
    /// do_iret: pops <c>struct iret_context</c> from the guest kernel stack, returns to user mode
    /// (switching page tables and GS) when its CS has RPL 3, restores rflags with IF forced on and
    /// the upcall mask from its IF, rcx and r11 unless VGCF_in_syscall (then they are the sysret
    /// pair), and answers the saved rax. A fault reading the frame, or user mode without user page
    /// tables, crashes the domain.
    /// </summary>
    internal long Iret()
    {
        SyncAddressSpace(force: false); // a flush asked while the hypercall began is taken before the frame is read
        Span<byte> bytes = stackalloc byte[Marshal.SizeOf<iret_context>()];
        var rsp = State.Gpr[Gpr.Rsp];
        if (!Interpreter.TryReadLinear(rsp, bytes, out var fault))
        {
            Crash($"fault at 0x{fault:x} while reading the IRET context from the guest stack at 0x{rsp:x}");
        }

        var c = MemoryMarshal.Read<iret_context>(bytes);
        if ((c.cs & 3) == 3)
        {
            if (Vcpu.Pv.UserBaseMfn == 0)
            {
                Crash($"iret to user mode (cs 0x{c.cs:x}, rip 0x{c.rip:x}) with no user page tables");
            }

            if (Vcpu.Pv.KernelMode)
            {
                ToggleGuestMode();
            }
        }

        if ((Domain.VmAssist & (1UL << Xen.VMASST_TYPE_architectural_iopl)) != 0)
        {
            Iopl = c.rflags & IOPL;
        }

        State.Rip = c.rip;
        State.Cs = (ushort)(c.cs | 3);
        State.Rflags = (c.rflags & ~(IOPL | VM)) | IF | Reserved1;
        State.Gpr[Gpr.Rsp] = c.rsp;
        State.Ss = (ushort)(c.ss | 3);
        if ((c.flags & ArchX86.VGCF_in_syscall) == 0)
        {
            State.Gpr[Gpr.R11] = c.r11;
            State.Gpr[Gpr.Rcx] = c.rcx;
        }
        else
        {
            SysretRegisters();
        }

        if (Vcpu.HasVcpuInfo)
        {
            Volatile.Write(ref Vcpu.Info.evtchn_upcall_mask, (byte)((c.rflags & IF) == 0 ? 1 : 0));
        }

        return (long)c.rax;
    }

    /// <summary>do_set_trap_table: entries until one with address 0; a null handle clears the table.</summary>
    internal long SetTrapTable(ulong handle)
    {
        if (handle == 0)
        {
            Array.Clear(_traps);
            return 0;
        }

        var size = (ulong)Marshal.SizeOf<trap_info>();
        for (var address = handle; ; address += size)
        {
            if (!Vcpu.TryCopyFrom(address, out trap_info t))
            {
                return -(long)Errno.EFAULT;
            }

            if (t.address == 0)
            {
                return 0;
            }

            if (!CallbackOp.IsCanonical(t.address))
            {
                return -(long)Errno.EINVAL;
            }

            _traps[t.vector] = new TrapEntry { Address = t.address, Cs = FixupSelector(t.cs), Flags = t.flags };
        }
    }

    /// <summary>__fixup_guest_selector for a 64-bit PV guest: an RPL below 3 becomes 3.</summary>
    private static ushort FixupSelector(ushort selector) => (selector & 3) >= 3 ? selector : (ushort)((selector & ~3) | 3);

    /// <summary>do_stack_switch: the kernel stack bounces from user mode land on.</summary>
    internal long StackSwitch(ulong ss, ulong sp)
    {
        KernelSs = FixupSelector((ushort)ss);
        KernelSp = sp;
        return 0;
    }

    /// <summary>
    /// do_set_segment_base, called from guest kernel mode: FS, the user GS (inactive now), the kernel
    /// GS (active now); canonical bases only. GS_USER_SEL loads the user GS selector; a non-null one
    /// gets RPL 3 and, the GDT not being interpreted, a flat base of 0.
    /// </summary>
    internal long SetSegmentBase(uint which, ulong value)
    {
        var canonical = CallbackOp.IsCanonical(value);
        switch (which)
        {
            case ArchX86.SEGBASE_FS:
                if (!canonical)
                {
                    return -(long)Errno.EINVAL;
                }

                State.FsBase = value;
                return 0;
            case ArchX86.SEGBASE_GS_USER:
                if (!canonical)
                {
                    return -(long)Errno.EINVAL;
                }

                SetInactiveGs(value);
                return 0;
            case ArchX86.SEGBASE_GS_KERNEL:
                if (!canonical)
                {
                    return -(long)Errno.EINVAL;
                }

                SetActiveGs(value);
                return 0;
            case ArchX86.SEGBASE_GS_USER_SEL:
                {
                    var selector = (ushort)value;
                    if (selector > 3)
                    {
                        selector |= 3;
                    }

                    State.Gs = selector;
                    SetInactiveGs(0);
                    return 0;
                }

            default:
                return -(long)Errno.EINVAL;
        }
    }

    // Hypercalls come from kernel mode, where GS_BASE is the kernel's and the shadow is the user's.
    private void SetActiveGs(ulong value) => State.GsBase = value;

    private void SetInactiveGs(ulong value) => State.KernelGsBase = value;

    /// <summary>
    /// do_set_gdt: at most FIRST_RESERVED_GDT_ENTRY entries; every frame the domain's own and every
    /// descriptor in it acceptable to check_descriptor; then recorded. (The seg_desc page type that
    /// Xen takes on each frame belongs to the PV memory model.)
    /// </summary>
    internal long SetGdt(ulong frameList, ulong entries)
    {
        if (entries > FirstReservedGdtEntry)
        {
            return -(long)Errno.EINVAL;
        }

        var count = (int)((entries + 511) / 512);
        Span<ulong> frames = stackalloc ulong[16];
        if (count > 0 && !Vcpu.TryCopyFrom(frameList, MemoryMarshal.AsBytes(frames[..count])))
        {
            return -(long)Errno.EFAULT;
        }

        var table = Domain.Hypervisor.Frames;
        Span<byte> page = stackalloc byte[MachineMemory.PageSize];
        for (var i = 0; i < count; i++)
        {
            if (!table.IsValid(frames[i]) || table.OwnerOf(frames[i]) != Domain.Id || !Bus.TryRead(frames[i] << 12, page))
            {
                return -(long)Errno.EINVAL;
            }

            var descriptors = MemoryMarshal.Cast<byte, ulong>(page);
            for (var d = 0; d < descriptors.Length; d++)
            {
                if (!CheckDescriptor(descriptors[d], out _))
                {
                    return -(long)Errno.EINVAL;
                }
            }
        }

        frames[..count].CopyTo(_gdtFrames);
        _gdtFrames.AsSpan(count).Clear();
        GdtEntries = (int)entries;
        Interpreter.FlushTlb();
        return 0;
    }

    /// <summary>
    /// do_update_descriptor: an 8-byte aligned machine address in a frame of the domain whose type
    /// allows it (held through <see cref="PvEngineOptions.HoldDescriptorFrame"/> for the write), and a descriptor
    /// check_descriptor accepts (stored with its DPL fixed up).
    /// </summary>
    internal long UpdateDescriptor(ulong machineAddress, ulong descriptor)
    {
        if ((machineAddress & 7) != 0 || !CheckDescriptor(descriptor, out var fixedUp))
        {
            return -(long)Errno.EINVAL;
        }

        var mfn = machineAddress >> 12;
        var table = Domain.Hypervisor.Frames;
        if (!table.IsValid(mfn) || table.OwnerOf(mfn) != Domain.Id
            || Options.HoldDescriptorFrame is not { } hold || Options.ReleaseDescriptorFrame is not { } release || !hold(Domain, mfn))
        {
            return -(long)Errno.EINVAL;
        }

        // The type held keeps the frame from being validated as a page table during the write.
        var written = Bus.TryWrite(machineAddress, 8, fixedUp);
        release(Domain, mfn);
        if (!written)
        {
            return -(long)Errno.EINVAL;
        }

        Interpreter.InvalidateCode(machineAddress, 8);
        return 0;
    }

    /// <summary>
    /// check_descriptor for a 64-bit PV guest: not present, code/data (DPL raised to 3) and the
    /// type-0 second half of a gate pass; a call gate must target a guest or FLAT_KERNEL_CS
    /// selector and gets DPL 0 with its DPL kept in the selector's RPL; anything else fails.
    /// </summary>
    internal static bool CheckDescriptor(ulong raw, out ulong fixedUp)
    {
        fixedUp = raw;
        var a = (uint)raw;
        var b = (uint)(raw >> 32);
        if ((b & SegP) == 0)
        {
            return true;
        }

        var dpl = (b >> 13) & 3;
        if (dpl < 3)
        {
            dpl = 3;
        }

        b = (b & ~SegDpl) | (dpl << 13);
        if ((b & SegS) != 0)
        {
            fixedUp = ((ulong)b << 32) | a;
            return true;
        }

        if ((b & SegType) == 0)
        {
            return true;
        }

        if ((b & SegType) != 0xC00)
        {
            return false;
        }

        var cs = a >> 16;
        if (!((cs >> 3) < FirstReservedGdtEntry || cs == ArchX86.FLAT_KERNEL_CS || (cs & 4) != 0))
        {
            return false;
        }

        b &= ~SegDpl;
        cs = (cs & ~3u) | dpl;
        a = (a & 0xFFFF) | (cs << 16);
        if ((b & 0xFF) != 0)
        {
            return false;
        }

        fixedUp = ((ulong)b << 32) | a;
        return true;
    }
}
