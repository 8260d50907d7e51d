using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// A classic PV domain (not started) whose vCPU 0 issues hypercalls straight through the table,
/// with helpers to build page tables in its memory the way a PV kernel does: tables are written
/// while they are plain pages, then pinned. Requests go in two scratch pages at the first free
/// pfn; tables and data pages are handed out after them.
/// </summary>
internal sealed class PvTestDomain
{
    public const ulong P = 1, RW = 2, US = 4, PWT = 8, PCD = 0x10, A = 0x20, D = 0x40, PSE = 0x80, G = 0x100;
    public const ulong GuestKernel = 1UL << 52;

    private ulong _nextPfn;

    public PvTestDomain(Hypervisor hv, string? name = null, int memoryMiB = 4, int vcpus = 1, bool translated = false)
    {
        Hv = hv;
        Domain = hv.CreateDomain(new DomainConfig { Name = name ?? $"pv-{Guid.NewGuid():N}", MemoryMiB = memoryMiB, Vcpus = vcpus, AutoTranslated = translated });
        Vcpu = Domain.Vcpus[0];
        Domain.Memory.TryRead(Domain.StartInfoAddress, out start_info si).Should().BeTrue();
        FirstFreePfn = si.pt_base >> 12;
        _nextPfn = FirstFreePfn + 2;
    }

    public Hypervisor Hv { get; }

    public Domain Domain { get; }

    public Vcpu Vcpu { get; }

    public ulong FirstFreePfn { get; }

    /// <summary>A scratch page for request arrays (identity-mapped once <see cref="BuildIdentity"/> ran).</summary>
    public ulong Buffer => FirstFreePfn << 12;

    /// <summary>A second scratch page (done counters, bitmaps, results).</summary>
    public ulong Buffer2 => (FirstFreePfn + 1) << 12;

    public ulong Mfn(ulong pfn)
    {
        Domain.PhysMap.TryLookup(pfn, out var mfn, out _).Should().BeTrue($"pfn {pfn:x} is RAM");
        return mfn;
    }

    /// <summary>A fresh page's pfn (zeroed by the builder); below 512, so <see cref="BuildIdentity"/> maps it writable.</summary>
    public ulong NewPage() => _nextPfn++;

    /// <summary>A fresh page above the identity-mapped 2 MiB (no mapping of it exists).</summary>
    public ulong NewUnmappedPage() => _nextHighPfn++;

    private ulong _nextHighPfn = 600;

    public long Call(int nr, ulong a1 = 0, ulong a2 = 0, ulong a3 = 0, ulong a4 = 0, ulong a5 = 0) =>
        Hv.Hypercalls.Invoke(Vcpu, (ulong)nr, a1, a2, a3, a4, a5);

    /// <summary>Writes an entry of a page that is not a page table yet (as the kernel does before pinning).</summary>
    public void Write(ulong pfn, int index, ulong value) =>
        Domain.Memory.TryWrite((pfn << 12) + ((ulong)index * 8), value).Should().BeTrue("the page is still a plain page");

    public ulong Read(ulong pfn, int index)
    {
        Domain.Memory.TryRead((pfn << 12) + ((ulong)index * 8), out ulong value).Should().BeTrue();
        return value;
    }

    /// <summary>An entry mapping page <paramref name="pfn"/> with <paramref name="flags"/>.</summary>
    public ulong Entry(ulong pfn, ulong flags) => (Mfn(pfn) << 12) | flags;

    /// <summary>mmu_update with the requests at <see cref="Buffer"/> and the done count at <see cref="Buffer2"/>.</summary>
    public long MmuUpdate(params (ulong Ptr, ulong Val)[] requests) => MmuUpdateWithDone(out _, requests);

    public long MmuUpdateWithDone(out uint done, params (ulong Ptr, ulong Val)[] requests)
    {
        for (var i = 0; i < requests.Length; i++)
        {
            Domain.Memory.TryWrite(Buffer + ((ulong)i * 16), new mmu_update { ptr = requests[i].Ptr, val = requests[i].Val }).Should().BeTrue();
        }

        Domain.Memory.TryWrite(Buffer2, 0u).Should().BeTrue();
        var rc = Call(Xen.__HYPERVISOR_mmu_update, Buffer, (ulong)requests.Length, Buffer2, Xen.DOMID_SELF);
        Domain.Memory.TryRead(Buffer2, out done).Should().BeTrue();
        return rc;
    }

    /// <summary>The machine address of entry <paramref name="index"/> of page <paramref name="pfn"/>, for mmu_update.</summary>
    public ulong PtePtr(ulong pfn, int index, int cmd = Xen.MMU_NORMAL_PT_UPDATE) => (Mfn(pfn) << 12) + ((ulong)index * 8) + (ulong)cmd;

    public long MmuExt(int cmd, ulong arg1 = 0, ulong arg2 = 0) => MmuExtBatch(out _, (cmd, arg1, arg2));

    public long MmuExtBatch(out uint done, params (int Cmd, ulong Arg1, ulong Arg2)[] ops)
    {
        for (var i = 0; i < ops.Length; i++)
        {
            var op = new mmuext_op { cmd = (uint)ops[i].Cmd };
            op.arg1.mfn = ops[i].Arg1;
            op.arg2.src_mfn = ops[i].Arg2;
            Domain.Memory.TryWrite(Buffer + ((ulong)i * 24), op).Should().BeTrue();
        }

        Domain.Memory.TryWrite(Buffer2, 0u).Should().BeTrue();
        var rc = Call(Xen.__HYPERVISOR_mmuext_op, Buffer, (ulong)ops.Length, Buffer2, Xen.DOMID_SELF);
        Domain.Memory.TryRead(Buffer2, out done).Should().BeTrue();
        return rc;
    }

    /// <summary>The four tables of an identity map of the first 2 MiB (pfn n at virtual n &lt;&lt; 12).</summary>
    public sealed record Tables(ulong L4, ulong L3, ulong L2, ulong L1);

    /// <summary>
    /// Builds L4 → L3 → L2 → L1 mapping virtual page n to pfn n for the first 512 pages: the page
    /// tables themselves read-only, everything else read-write (as a PV kernel maps its own memory).
    /// Nothing is pinned yet.
    /// </summary>
    public Tables BuildIdentity()
    {
        var t = new Tables(NewPage(), NewPage(), NewPage(), NewPage());
        Write(t.L4, 0, Entry(t.L3, P | RW));
        Write(t.L3, 0, Entry(t.L2, P | RW));
        Write(t.L2, 0, Entry(t.L1, P | RW));
        var tables = new HashSet<ulong> { t.L4, t.L3, t.L2, t.L1 };
        for (var pfn = 0UL; pfn < 512; pfn++)
        {
            Write(t.L1, (int)pfn, Entry(pfn, tables.Contains(pfn) ? P : P | RW));
        }

        return t;
    }

    /// <summary>Builds the identity map, pins its L4 and makes it vCPU 0's kernel base: from here guest handles are virtual addresses.</summary>
    public Tables BuildAndEnter()
    {
        var t = BuildIdentity();
        MmuExt(Xen.MMUEXT_PIN_L4_TABLE, Mfn(t.L4)).Should().Be(0);
        MmuExt(Xen.MMUEXT_NEW_BASEPTR, Mfn(t.L4)).Should().Be(0);
        Vcpu.Pv.IsPaged.Should().BeTrue();
        return t;
    }

    // ---- two vCPUs on the PV engine (identity-mapped machine code, after BuildAndEnter) ----

    /// <summary>
    /// Writes a VCPUOP_initialise context to page <paramref name="contextPfn"/>: guest kernel mode,
    /// online, entering <paramref name="rip"/> on the stack page <paramref name="stackPfn"/>, on the L4 <paramref name="l4Pfn"/>.
    /// </summary>
    public void WriteSecondaryContext(ulong contextPfn, ulong rip, ulong stackPfn, ulong l4Pfn)
    {
        var top = (stackPfn << 12) + 0x1000;
        var context = new vcpu_guest_context
        {
            flags = ArchX86.VGCF_in_kernel | ArchX86.VGCF_online,
            kernel_ss = ArchX86.FLAT_KERNEL_SS,
            kernel_sp = top,
        };
        context.user_regs.rip = rip;
        context.user_regs.rsp = top;
        context.user_regs.cs = ArchX86.FLAT_KERNEL_CS;
        context.user_regs.ss = ArchX86.FLAT_KERNEL_SS;
        context.user_regs.rflags = 0x202;
        unsafe
        {
            context.ctrlreg[3] = Mfn(l4Pfn) << 12;
        }

        Domain.Memory.TryWrite(contextPfn << 12, context).Should().BeTrue();
    }

    /// <summary>Assembles <paramref name="program"/> at page <paramref name="pfn"/> (its virtual address is the same).</summary>
    public void LoadCode(ulong pfn, Action<Assembler> program) =>
        Domain.Memory.TryWrite(pfn << 12, Cpu.Interpreter.InterpreterMachine.Assemble(program, pfn << 12, halt: false)).Should().BeTrue();

    /// <summary>vcpu_op(VCPUOP_initialise, 1, context): with VGCF_online vCPU 1 starts on the engine.</summary>
    public static void BringUpVcpu1(Assembler a, ulong contextVa)
    {
        a.mov(AssemblerRegisters.edi, VcpuOp.VCPUOP_initialise);
        a.mov(AssemblerRegisters.esi, 1);
        a.mov(AssemblerRegisters.rdx, contextVa);
        a.mov(AssemblerRegisters.eax, Xen.__HYPERVISOR_vcpu_op);
        a.syscall();
    }

    /// <summary>Spins until the qword at <paramref name="flag"/> is 1 (another vCPU sets it).</summary>
    public static void WaitFor(Assembler a, ulong flag)
    {
        var wait = a.CreateLabel();
        a.Label(ref wait);
        a.cmp(AssemblerRegisters.__qword_ptr[flag], 1);
        a.jne(wait);
    }

    /// <summary>Sets the qword at <paramref name="flag"/> to 1 and spins with pause for good (a secondary vCPU's end).</summary>
    public static void SignalAndSpin(Assembler a, ulong flag)
    {
        var spin = a.CreateLabel();
        a.mov(AssemblerRegisters.__qword_ptr[flag], 1);
        a.Label(ref spin);
        a.pause();
        a.jmp(spin);
    }

    /// <summary>sched_op(SCHEDOP_shutdown, poweroff) with the argument written at <paramref name="at"/>.</summary>
    public void PowerOff(Assembler a, ulong at)
    {
        Domain.Memory.TryWrite(at, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff }).Should().BeTrue();
        a.mov(AssemblerRegisters.edi, Sched.SCHEDOP_shutdown);
        a.mov(AssemblerRegisters.rsi, at);
        a.mov(AssemblerRegisters.eax, Xen.__HYPERVISOR_sched_op);
        a.syscall();
        a.ud2();
    }

    /// <summary>Starts vCPU 0 on the PV engine at page <paramref name="codePfn"/> with the memory model's hooks, and waits (bounded) for the end.</summary>
    public Task<DomainExit> RunEngineAsync(ulong codePfn, ulong stackPfn)
    {
        PvEngine.Start(Domain, Vcpu, new PvEntry(codePfn << 12, (stackPfn << 12) + 0x1000, Domain.StartInfoAddress), PvKernelStart.EngineOptions);
        return Support.DomainTestExtensions.ExitWithinAsync(Domain);
    }
}
