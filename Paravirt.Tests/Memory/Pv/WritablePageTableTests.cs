using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot;
using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// Writable page tables (VMASST_TYPE_writable_pagetables, Xen's ptwr): a PV kernel on the engine
/// stores to its own validated L1 page table through the table's read-only mapping, and the store
/// is emulated with the new entry checked as mmu_update checks it; a refused entry, or a guest
/// without the assist, gets the page fault.
/// </summary>
public sealed class WritablePageTableTests : IDisposable
{
    private const ulong P = PvTestDomain.P, RW = PvTestDomain.RW, US = PvTestDomain.US, PCD = PvTestDomain.PCD;
    private const ulong NX = 1UL << 63;
    private const ulong Marker = 0x1122_3344_5566_7788;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task Mov_Of_A_Valid_Pte_Is_Emulated_And_The_New_Mapping_Works()
    {
        var g = new Guest(_hv);
        var target = g.NewPage(Marker);
        var victim = g.D.NewPage();
        var newPte = g.D.Entry(target, P | RW);
        var oldFrame = g.D.Mfn(victim);
        _hv.Frames.Types.CountOf(oldFrame).Should().Be(1, "the identity map holds the victim page writable");
        var targetRefs = _hv.Frames.ReferenceCount(g.D.Mfn(target));

        await g.RunAsync(a =>
        {
            a.mov(rax, newPte);
            a.mov(__qword_ptr[g.PteVa(victim)], rax);   // #PF on the read-only L1, emulated
            a.mov(rcx, __qword_ptr[g.PteVa(victim)]);
            a.mov(__qword_ptr[g.Out], rcx);              // the entry as stored
            a.mov(rbx, __qword_ptr[victim << 12]);       // through the new mapping
            a.mov(__qword_ptr[g.Out + 8], rbx);
        });

        g.Faulted.Should().BeFalse("the store was emulated, not delivered as a fault");
        g.Finished.Should().BeTrue();
        g.Result(0).Should().Be(newPte | US | PvTestDomain.GuestKernel, "Xen stores a kernel entry user-accessible and marked _PAGE_GUEST_KERNEL");
        g.Result(1).Should().Be(Marker, "the victim address now maps the target page");
        g.D.Read(g.T.L1, (int)victim).Should().Be((newPte | US | PvTestDomain.GuestKernel) | PvTestDomain.A, "the read set the accessed bit");
        _hv.Frames.Types.CountOf(oldFrame).Should().Be(0, "the old entry's writable type was dropped");
        _hv.Frames.Types.CountOf(g.D.Mfn(target)).Should().Be(2, "the identity mapping and the new entry map the target writable");
        _hv.Frames.ReferenceCount(g.D.Mfn(target)).Should().Be(targetRefs + 1, "the new entry holds a general reference");
    }

    [Fact]
    public async Task Xchg_Clears_A_Pte_Returns_The_Old_Entry_And_Releases_Its_Frame()
    {
        var g = new Guest(_hv);
        var victim = g.D.NewPage();
        var frame = g.D.Mfn(victim);
        var old = g.D.Read(g.T.L1, (int)victim);
        var refs = _hv.Frames.ReferenceCount(frame);

        await g.RunAsync(a =>
        {
            a.xor(eax, eax);
            a.mov(rbx, g.PteVa(victim));
            a.xchg(__qword_ptr[rbx], rax);
            a.mov(__qword_ptr[g.Out], rax);
        });

        g.Faulted.Should().BeFalse();
        g.Finished.Should().BeTrue();
        g.Result(0).Should().Be(old, "xchg returns what the entry held");
        g.D.Read(g.T.L1, (int)victim).Should().Be(0);
        _hv.Frames.ReferenceCount(frame).Should().Be(refs - 1, "the cleared entry's general reference is dropped");
        _hv.Frames.Types.CountOf(frame).Should().Be(0, "and its writable type");
        PvMemory.PinTable(g.D.Domain, frame, 1).Should().Be(0, "with no writable mapping left the frame can become a page table");
    }

    [Fact]
    public async Task Lock_Cmpxchg_Succeeds_On_A_Match_And_Fails_Without_Checking_The_New_Entry_Otherwise()
    {
        var g = new Guest(_hv);
        var target = g.NewPage(Marker);
        var victim = g.D.NewPage();
        var old = g.D.Read(g.T.L1, (int)victim);
        var newPte = g.D.Entry(target, P);
        var stored = newPte | US | PvTestDomain.GuestKernel;
        var hostile = g.D.Entry(g.T.L2, P | RW); // would map a page table writable: never checked, the compare fails first

        await g.RunAsync(a =>
        {
            a.mov(rbx, g.PteVa(victim));
            a.mov(rax, old);
            a.mov(rcx, newPte);
            a.@lock.cmpxchg(__qword_ptr[rbx], rcx);
            a.setz(dl);
            a.movzx(edx, dl);
            a.mov(__qword_ptr[g.Out], rdx);
            a.mov(__qword_ptr[g.Out + 8], rax);
            a.mov(rax, 0x1234UL);
            a.mov(rcx, hostile);
            a.@lock.cmpxchg(__qword_ptr[rbx], rcx);
            a.setz(dl);
            a.movzx(edx, dl);
            a.mov(__qword_ptr[g.Out + 16], rdx);
            a.mov(__qword_ptr[g.Out + 24], rax);
            a.mov(rsi, __qword_ptr[victim << 12]);
            a.mov(__qword_ptr[g.Out + 32], rsi);
        });

        g.Faulted.Should().BeFalse();
        g.Finished.Should().BeTrue();
        g.Result(0).Should().Be(1, "ZF: the entry matched rax");
        g.Result(1).Should().Be(old, "rax is unchanged on success");
        g.Result(2).Should().Be(0, "ZF clear: 0x1234 is not the entry");
        g.Result(3).Should().Be(stored, "a failed cmpxchg loads the entry into rax");
        g.Result(4).Should().Be(Marker, "the successful cmpxchg's mapping is in force");
        (g.D.Read(g.T.L1, (int)victim) & ~PvTestDomain.A).Should().Be(stored);
        _hv.Frames.Types.CountOf(g.D.Mfn(g.T.L2)).Should().Be(1, "the hostile entry took nothing");
    }

    public enum Hostile
    {
        PageTableWritable,
        OwnL1Writable,
        CacheAttribute,
        ForeignFrame,
        NoSuchFrame,
    }

    [Theory]
    [InlineData(Hostile.PageTableWritable)]
    [InlineData(Hostile.OwnL1Writable)]
    [InlineData(Hostile.CacheAttribute)]
    [InlineData(Hostile.ForeignFrame)]
    [InlineData(Hostile.NoSuchFrame)]
    public async Task A_Refused_Entry_Delivers_The_Original_Page_Fault_And_Leaves_The_Table_Unchanged(Hostile kind)
    {
        var g = new Guest(_hv);
        var victim = g.D.NewPage();
        var old = g.D.Read(g.T.L1, (int)victim);
        var other = new PvTestDomain(_hv, memoryMiB: 2);
        var pte = kind switch
        {
            Hostile.PageTableWritable => g.D.Entry(g.T.L2, P | RW),
            Hostile.OwnL1Writable => g.D.Entry(g.T.L1, P | RW),
            Hostile.CacheAttribute => g.D.Entry(victim, P | RW | PCD),
            Hostile.ForeignFrame => (other.Mfn(other.NewPage()) << 12) | P,
            _ => ((ulong)_hv.Frames.TotalFrames << 12) | P, // past machine memory: MMIO, which a domU may not map
        };
        var l2Types = _hv.Frames.Types.CountOf(g.D.Mfn(g.T.L2));

        await g.RunAsync(a =>
        {
            a.mov(rax, pte);
            g.ExpectFault(a);
            a.mov(__qword_ptr[g.PteVa(victim)], rax);
        });

        g.Faulted.Should().BeTrue($"a {kind} entry is refused, so the write faults");
        g.Finished.Should().BeFalse();
        g.FaultCr2.Should().Be(g.PteVa(victim), "the guest sees the fault's own cr2");
        g.FaultErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Write, "and its own error code (a kernel-mode write to a present page)");
        g.FaultRip.Should().Be(g.ExpectedFaultRip, "at the faulting store");
        g.D.Read(g.T.L1, (int)victim).Should().Be(old, "the entry is unchanged");
        _hv.Frames.Types.CountOf(g.D.Mfn(g.T.L2)).Should().Be(l2Types);
        _hv.Frames.Types.TypeOf(g.D.Mfn(g.T.L1)).Should().Be(PageType.L1, "the table is still a validated L1");
    }

    [Fact]
    public async Task Without_The_Assist_A_Store_To_A_Page_Table_Is_A_Plain_Page_Fault()
    {
        var g = new Guest(_hv);
        var target = g.NewPage(Marker);
        var victim = g.D.NewPage();
        var old = g.D.Read(g.T.L1, (int)victim);

        await g.RunAsync(
            a =>
            {
                a.mov(rax, g.D.Entry(target, P | RW));
                g.ExpectFault(a);
                a.mov(__qword_ptr[g.PteVa(victim)], rax);
            },
            assist: false);

        g.Faulted.Should().BeTrue("without VMASST_TYPE_writable_pagetables nothing is emulated");
        g.FaultCr2.Should().Be(g.PteVa(victim));
        g.FaultErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Write);
        g.FaultRip.Should().Be(g.ExpectedFaultRip);
        g.D.Read(g.T.L1, (int)victim).Should().Be(old);
    }

    [Fact]
    public async Task Partial_Stores_Merge_Into_The_Entry_And_Locked_Read_Modify_Writes_Are_Emulated()
    {
        var g = new Guest(_hv);
        var victim = g.D.NewPage();
        var second = g.D.NewPage();
        var frame = g.D.Mfn(victim);
        var old = g.D.Read(g.T.L1, (int)victim);
        var oldSecond = g.D.Read(g.T.L1, (int)second);

        await g.RunAsync(a =>
        {
            a.mov(rbx, g.PteVa(victim));
            a.mov(__dword_ptr[rbx + 4], (uint)((old | NX) >> 32)); // a 4-byte store to the upper half: NX
            a.mov(rax, __qword_ptr[rbx]);
            a.mov(__qword_ptr[g.Out], rax);
            a.@lock.and(__byte_ptr[rbx], -3);                        // a locked 1-byte and of ~RW: read-only
            a.mov(rax, __qword_ptr[rbx]);
            a.mov(__qword_ptr[g.Out + 8], rax);
            a.mov(rbx, g.PteVa(second));
            a.@lock.btr(__qword_ptr[rbx], 1);                         // a locked bit reset: read-only
            a.setc(dl);
            a.movzx(edx, dl);
            a.mov(__qword_ptr[g.Out + 16], rdx);
        });

        g.Faulted.Should().BeFalse();
        g.Finished.Should().BeTrue();
        g.Result(0).Should().Be(old | NX, "the upper half was merged with the lower one");
        g.Result(1).Should().Be((old | NX) & ~RW);
        g.Result(2).Should().Be(1, "btr returns the old bit in CF");
        g.D.Read(g.T.L1, (int)second).Should().Be(oldSecond & ~RW);
        _hv.Frames.Types.CountOf(frame).Should().Be(0, "the entry no longer maps its frame writable");
        _hv.Frames.Types.CountOf(g.D.Mfn(second)).Should().Be(0);
    }

    [Theory]
    [InlineData(2, 4)] // inside one entry
    [InlineData(4, 8)] // across two entries
    public async Task A_Store_That_Is_Not_Naturally_Aligned_Is_Refused(int offset, int size)
    {
        var g = new Guest(_hv);
        var victim = g.D.NewPage();
        var old = g.D.Read(g.T.L1, (int)victim);
        var next = g.D.Read(g.T.L1, (int)victim + 1);
        // The bytes already there, so only the fault tells a refusal from an emulated store.
        var same = (UInt128)old | ((UInt128)next << 64);
        var value = (ulong)(same >> (offset * 8));
        var at = g.PteVa(victim) + (ulong)offset;

        await g.RunAsync(a =>
        {
            a.mov(rax, value);
            g.ExpectFault(a);
            if (size == 4)
            {
                a.mov(__dword_ptr[at], eax);
            }
            else
            {
                a.mov(__qword_ptr[at], rax);
            }
        });

        g.Faulted.Should().BeTrue("ptwr_emulated_update allows naturally aligned stores only");
        g.FaultCr2.Should().Be(at);
        g.FaultRip.Should().Be(g.ExpectedFaultRip);
        g.D.Read(g.T.L1, (int)victim).Should().Be(old);
        g.D.Read(g.T.L1, (int)victim + 1).Should().Be(next);
    }

    /// <summary>
    /// A PV kernel on validated tables (<see cref="PvTestDomain.BuildAndEnter"/>: virtual page n maps
    /// pfn n, the page tables read-only) run on the engine with the memory model's hooks. It sets a
    /// #PF handler that records cr2, the error code and rip and shuts down, enables the assist
    /// (unless told not to), runs the test's body, marks <see cref="Finished"/> and shuts down.
    /// </summary>
    private sealed class Guest
    {
        private readonly ulong _code, _stack, _out, _traps;

        public Guest(Hypervisor hv)
        {
            D = new PvTestDomain(hv, memoryMiB: 4);
            T = D.BuildAndEnter();
            _code = D.NewPage();
            _stack = D.NewPage();
            _out = D.NewPage();
            _traps = D.NewPage();
        }

        public PvTestDomain D { get; }

        public PvTestDomain.Tables T { get; }

        /// <summary>The body's results, 8 bytes each.</summary>
        public ulong Out => _out << 12;

        private ulong Shutdown => Out + 0x800;

        private ulong FaultRecord => Out + 0x400;

        public bool Faulted => Read(FaultRecord + 24) == 1;

        public bool Finished => Read(Out + 0x300) == 1;

        public ulong FaultCr2 => Read(FaultRecord);

        public ulong FaultErrorCode => Read(FaultRecord + 8);

        public ulong FaultRip => Read(FaultRecord + 16);

        public ulong ExpectedFaultRip => Read(Out + 0x308);

        public ulong Result(int i) => Read(Out + ((ulong)i * 8));

        /// <summary>The linear address of the L1 entry mapping virtual page <paramref name="pfn"/>, through the table's read-only mapping.</summary>
        public ulong PteVa(ulong pfn) => (T.L1 << 12) + (pfn * 8);

        public ulong NewPage(ulong marker)
        {
            var pfn = D.NewPage();
            D.Domain.Memory.TryWrite(pfn << 12, marker).Should().BeTrue();
            return pfn;
        }

        /// <summary>Records the address of the next instruction as the one expected to fault.</summary>
        public void ExpectFault(Assembler a)
        {
            var at = a.CreateLabel();
            a.lea(rdx, __[at]);
            a.mov(__qword_ptr[Out + 0x308], rdx);
            a.Label(ref at);
        }

        public async Task RunAsync(Action<Assembler> body, bool assist = true)
        {
            D.Domain.Memory.TryWrite(Shutdown, new sched_shutdown { reason = Sched.SHUTDOWN_poweroff }).Should().BeTrue();
            var a = new Assembler(64);
            var handler = a.CreateLabel();
            a.mov(__byte_ptr[_traps << 12], Vectors.PF);
            a.mov(__word_ptr[(_traps << 12) + 2], (ushort)ArchX86.FLAT_KERNEL_CS);
            a.lea(rax, __[handler]);
            a.mov(__qword_ptr[(_traps << 12) + 8], rax);
            K.Hypercall(a, Xen.__HYPERVISOR_set_trap_table, _traps << 12);
            if (assist)
            {
                K.Hypercall(a, Xen.__HYPERVISOR_vm_assist, Xen.VMASST_CMD_enable, Xen.VMASST_TYPE_writable_pagetables);
                a.test(rax, rax);
                a.jnz(handler); // not expected: shows up as a fault at cr2 0
            }

            body(a);
            a.mov(__qword_ptr[Out + 0x300], 1);
            K.Hypercall(a, Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, Shutdown);
            a.ud2();

            a.Label(ref handler);
            a.mov(rax, cr2);                              // emulated: the guest's CR2
            a.mov(__qword_ptr[FaultRecord], rax);
            a.mov(rax, __qword_ptr[rsp + 16]);            // the error code
            a.mov(__qword_ptr[FaultRecord + 8], rax);
            a.mov(rax, __qword_ptr[rsp + 24]);            // the faulting rip
            a.mov(__qword_ptr[FaultRecord + 16], rax);
            a.mov(__qword_ptr[FaultRecord + 24], 1);
            K.Hypercall(a, Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, Shutdown);
            a.ud2();

            using var stream = new MemoryStream();
            a.Assemble(new StreamCodeWriter(stream), _code << 12);
            D.Domain.Memory.TryWrite(_code << 12, stream.ToArray()).Should().BeTrue();

            PvEngine.Start(D.Domain, D.Vcpu, new PvEntry(_code << 12, (_stack + 1) << 12, 0), PvKernelStart.EngineOptions);
            var exit = await D.Domain.ExitWithinAsync();
            exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        }

        private ulong Read(ulong va) => D.Domain.Memory.TryRead(va, out ulong v) ? v : throw new InvalidOperationException($"0x{va:x} unreadable");
    }
}
