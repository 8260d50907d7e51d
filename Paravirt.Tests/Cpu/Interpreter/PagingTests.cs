using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>
/// The 4-level walk: permissions, faults and their error codes, accessed/dirty bits, large pages,
/// and the TLB's behaviour on CR3 writes and <c>invlpg</c>, on page tables built by hand in flat memory.
/// </summary>
public sealed class PagingTests
{
    private const ulong P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, G = 0x100, XD = 1UL << 63;
    private const ulong Code = InterpreterMachine.CodeBase;
    private const ulong Stack = InterpreterMachine.StackTop;

    // Linear addresses the tests map, far from the identity-mapped low 2 MiB.
    private const ulong Page = 0x7F00_0000_0000;

    /// <summary>Page tables in the top 256 KiB of the machine's memory, one page per table, handed out in order.</summary>
    private sealed class Tables
    {
        private readonly InterpreterMachine _m;
        private ulong _next = 0xC_0000;

        public Tables(InterpreterMachine m)
        {
            _m = m;
            Root = Allocate();
        }

        public ulong Root { get; }

        private ulong Allocate()
        {
            var t = _next;
            _next += 0x1000;
            _m.Memory.Bytes.Slice((int)t, 4096).Clear();
            return t;
        }

        /// <summary>The address of the entry mapping <paramref name="la"/> at <paramref name="level"/> (4 = PML4), creating tables above it with P|RW|US.</summary>
        public ulong Entry(ulong la, int level)
        {
            var table = Root;
            for (var l = 4; l > level; l--)
            {
                var address = table + (((la >> (12 + (9 * (l - 1)))) & 511) * 8);
                var e = _m.ReadU64(address);
                if ((e & P) == 0)
                {
                    e = Allocate() | P | RW | US;
                    _m.WriteU64(address, e);
                }

                table = e & 0x000F_FFFF_FFFF_F000;
            }

            return table + (((la >> (12 + (9 * (level - 1)))) & 511) * 8);
        }

        public void Map(ulong la, ulong pa, ulong flags) => _m.WriteU64(Entry(la, 1), pa | flags);
    }

    /// <summary>A machine with paging on (CR0.WP, EFER.NXE) and the whole 1 MiB (page tables included) identity-mapped with P|RW|US.</summary>
    private static (InterpreterMachine M, Tables T) Paged(ulong lowFlags = P | RW | US)
    {
        var m = new InterpreterMachine();
        var t = new Tables(m);
        for (ulong pa = 0; pa < 0x10_0000; pa += 0x1000)
        {
            t.Map(pa, pa, lowFlags);
        }

        m.Cpu.Cr3 = t.Root;
        m.Cpu.Cr0 |= ControlBits.Cr0PG | ControlBits.Cr0WP;
        m.Cpu.Efer |= ControlBits.EferNXE;
        return (m, t);
    }

    private static CpuExit Fault(InterpreterMachine m, Action<Assembler> code)
    {
        m.Load(code);
        m.Restart();
        return m.Run();
    }

    [Fact]
    public void A_Mapped_Page_Translates_And_Sets_Accessed_Then_Dirty()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P | RW);
        m.WriteU64(0x5_0010, 42);
        m.Load(a =>
        {
            a.mov(rbx, Page);
            a.mov(rax, __qword_ptr[rbx + 0x10]);
        });
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(42);
        var leaf = t.Entry(Page, 1);
        (m.ReadU64(leaf) & (A | D)).Should().Be(A, "a read sets A, not D");
        for (var level = 4; level >= 2; level--)
        {
            (m.ReadU64(t.Entry(Page, level)) & A).Should().Be(A, $"level {level} was walked");
        }

        m.Load(a =>
        {
            a.mov(rbx, Page);
            a.mov(__qword_ptr[rbx + 0x18], 7);
        });
        m.Restart();
        m.RunToHalt();
        (m.ReadU64(leaf) & (A | D)).Should().Be(A | D, "a write sets D, even through a TLB entry filled by a read");
        m.ReadU64(0x5_0018).Should().Be(7);
    }

    [Fact]
    public void Not_Present_Faults_With_CR2_And_The_Access_Kind()
    {
        var (m, _) = Paged();
        var exit = Fault(m, a =>
        {
            a.mov(rbx, Page + 0x123);
            a.mov(__qword_ptr[rbx], rax);
        });
        (exit.Reason, exit.Vector, exit.ErrorCode, exit.Address).Should().Be((ExitReason.Exception, Vectors.PF, PageFaultErrorCode.Write, Page + 0x123));
        m.Cpu.Cr2.Should().Be(Page + 0x123);
        exit.Instructions.Should().Be(1);
        m.Cpu.Rip.Should().Be(Code + 10, "rip stays at the faulting store (after the 10-byte mov)");

        exit = Fault(m, a =>
        {
            a.mov(rbx, Page + 0x456);
            a.mov(rax, __qword_ptr[rbx]);
        });
        (exit.ErrorCode, exit.Address).Should().Be((0u, Page + 0x456));
    }

    [Fact]
    public void Write_To_A_Read_Only_Page_Faults_With_WP_And_Is_Allowed_Without_It_At_Cpl0()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P);
        Action<Assembler> store = a =>
        {
            a.mov(rbx, Page);
            a.mov(__qword_ptr[rbx], 1);
        };
        var exit = Fault(m, store);
        exit.ErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Write);
        m.ReadU64(0x5_0000).Should().Be(0);

        // A read-modify-write checks for writing before it reads anything.
        exit = Fault(m, a =>
        {
            a.mov(rbx, Page);
            a.add(__qword_ptr[rbx], 1);
        });
        exit.ErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Write);

        m.Cpu.Cr0 &= ~ControlBits.Cr0WP;
        m.Interpreter.FlushTlb();
        m.Load(store);
        m.Restart();
        m.RunToHalt();
        m.ReadU64(0x5_0000).Should().Be(1, "supervisor writes ignore R/W when CR0.WP is clear");
    }

    [Fact]
    public void User_Access_To_A_Supervisor_Page_Faults_With_U_Set()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P | RW);        // supervisor only
        t.Map(Page + 0x1000, 0x5_1000, P | RW | US);
        m.Cpu.Cpl = 3;
        var exit = Fault(m, a =>
        {
            a.mov(rbx, Page + 0x1000);
            a.mov(__qword_ptr[rbx], 5);        // fine: user page
            a.mov(rbx, Page);
            a.mov(rax, __qword_ptr[rbx]);      // fault
        });
        exit.ErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.User);
        exit.Address.Should().Be(Page);
        m.ReadU64(0x5_1000).Should().Be(5);

        // A supervisor bit at any level denies the user, even if the leaf allows it.
        var pdpte = t.Entry(Page + 0x1000, 3);
        m.WriteU64(pdpte, m.ReadU64(pdpte) & ~US);
        m.Interpreter.FlushTlb();
        exit = Fault(m, a =>
        {
            a.mov(rbx, Page + 0x1000);
            a.mov(__qword_ptr[rbx], 6);
        });
        exit.ErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.User | PageFaultErrorCode.Write);
    }

    [Fact]
    public void Fetch_From_A_No_Execute_Page_Faults_With_I_D_Set()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P | RW | XD);
        m.Memory.Bytes[0x5_0000] = 0x90;
        var exit = Fault(m, a =>
        {
            a.mov(rax, Page);
            a.jmp(rax);
        });
        (exit.Vector, exit.ErrorCode, exit.Address).Should().Be((Vectors.PF, PageFaultErrorCode.Present | PageFaultErrorCode.InstructionFetch, Page));
        m.Cpu.Rip.Should().Be(Page, "the fault is on the fetch at the target");
        exit.Instructions.Should().Be(2, "mov and jmp retired");
    }

    [Fact]
    public void A_Reserved_Bit_Faults_With_RSVD()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P | RW | XD);
        m.Cpu.Efer &= ~ControlBits.EferNXE;    // XD is reserved without NXE
        var exit = Fault(m, a =>
        {
            a.mov(rbx, Page);
            a.mov(rax, __qword_ptr[rbx]);
        });
        exit.ErrorCode.Should().Be(PageFaultErrorCode.Present | PageFaultErrorCode.Reserved);
    }

    [Fact]
    public void Non_Canonical_Addresses_Raise_GP0()
    {
        var (m, _) = Paged();
        var exit = Fault(m, a =>
        {
            a.mov(rbx, 0x0000_8000_0000_0000);
            a.mov(rax, __qword_ptr[rbx]);
        });
        (exit.Vector, exit.ErrorCode).Should().Be((Vectors.GP, 0u));
    }

    [Fact]
    public void Two_MiB_Pages_Map_Through_A_PS_Directory_Entry()
    {
        var (m, t) = Paged();
        m.WriteU64(t.Entry(Page, 2), 0 | P | RW | PS);   // 2 MiB page at physical 0
        m.WriteU64(0x5_1238, 0xABCD);
        m.Load(a =>
        {
            a.mov(rbx, Page + 0x5_1238);
            a.mov(rax, __qword_ptr[rbx]);
        });
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0xABCD);
        (m.ReadU64(t.Entry(Page, 2)) & A).Should().Be(A);
    }

    [Fact]
    public void The_Tlb_Keeps_A_Stale_Translation_Until_Invlpg_Or_A_CR3_Write()
    {
        var (m, t) = Paged();
        var leaf = t.Entry(Page, 1);
        m.WriteU64(0x5_0000, 1);
        m.WriteU64(0x5_1000, 2);
        m.WriteU64(0x5_2000, 3);
        m.WriteU64(leaf, 0x5_0000 | P | RW);
        Action<Assembler> read = a =>
        {
            a.mov(rbx, Page);
            a.mov(rax, __qword_ptr[rbx]);
        };
        ulong ReadThroughPage()
        {
            m.Load(read);
            m.Restart();
            m.RunToHalt();
            return m[Gpr.Rax];
        }

        ReadThroughPage().Should().Be(1);
        m.WriteU64(leaf, 0x5_1000 | P | RW);
        ReadThroughPage().Should().Be(1, "the guest changed the PTE without flushing: x86 may (and this TLB does) keep the old one");

        m.Load(a =>
        {
            a.mov(rbx, Page);
            a.invlpg(__[rbx]);
            a.mov(rax, __qword_ptr[rbx]);
        });
        m.Restart();
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(2, "invlpg dropped the entry");

        m.WriteU64(leaf, 0x5_2000 | P | RW);
        m.Load(a =>
        {
            a.mov(rax, cr3);
            a.mov(cr3, rax);
            a.mov(rbx, Page);
            a.mov(rax, __qword_ptr[rbx]);
        });
        m.Restart();
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(3, "a CR3 write flushes non-global entries");
    }

    [Fact]
    public void Global_Pages_Survive_A_CR3_Write_But_Not_Invlpg()
    {
        var (m, t) = Paged();
        m.Cpu.Cr4 |= ControlBits.Cr4PGE;
        var leaf = t.Entry(Page, 1);
        m.WriteU64(0x5_0000, 1);
        m.WriteU64(0x5_1000, 2);
        m.WriteU64(leaf, 0x5_0000 | P | RW | G);
        m.Load(a =>
        {
            a.mov(rbx, Page);
            a.mov(r8, __qword_ptr[rbx]);
            a.mov(__qword_ptr[rcx], rdx);     // rcx = the leaf's address: retarget the page to 0x51000
            a.mov(rax, cr3);
            a.mov(cr3, rax);
            a.mov(r9, __qword_ptr[rbx]);      // still the old (global) translation
            a.invlpg(__[rbx]);
            a.mov(r10, __qword_ptr[rbx]);
        });
        m.Restart();
        m[Gpr.Rcx] = leaf;
        m[Gpr.Rdx] = 0x5_1000 | P | RW | G;
        m.RunToHalt();
        (m[Gpr.R8], m[Gpr.R9], m[Gpr.R10]).Should().Be((1ul, 1ul, 2ul));
    }

    [Fact]
    public void Page_Crossing_Store_Faults_Before_Writing_Either_Half()
    {
        var (m, t) = Paged();
        t.Map(Page, 0x5_0000, P | RW);            // the next page is not mapped
        var exit = Fault(m, a =>
        {
            a.mov(rbx, Page + 0xFFC);
            a.mov(rax, -1);
            a.mov(__qword_ptr[rbx], rax);
        });
        (exit.ErrorCode, exit.Address).Should().Be((PageFaultErrorCode.Write, Page + 0x1000));
        m.ReadU64(0x5_0FF8).Should().Be(0, "nothing was written to the first page");
    }
}
