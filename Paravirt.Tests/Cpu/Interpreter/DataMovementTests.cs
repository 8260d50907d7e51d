using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;
using static Paravirt.Core.Cpu.Interpreter.FlagBits;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>Moves, exchanges, bit operations, conditions, the stack and control flow.</summary>
public sealed class DataMovementTests
{
    private const ulong Data = InterpreterMachine.DataBase;

    [Fact]
    public void Mov_Forms_Follow_The_Register_Width_Rules()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(rax, 0x1122_3344_5566_7788);
            a.mov(rbx, rax);
            a.mov(ebx, 0x99);          // zero-extends
            a.mov(rcx, rax);
            a.mov(cx, 0xABCD);         // merges
            a.mov(rdx, rax);
            a.mov(dh, 0xEE);           // bits 8..15
            a.mov(rsi, rax);
            a.mov(sil, 0x01);          // REX byte register
            a.mov(__qword_ptr[Data], rax);
            a.mov(edi, __dword_ptr[Data + 4]);
            a.movzx(r8, __byte_ptr[Data + 7]);
            a.movsx(r9, __word_ptr[Data + 6]);
            a.mov(r10d, 0x8000_0000);
            a.movsxd(r10, r10d);
            a.lea(r11, __[rax + rbx * 4 + 0x10]);
            a.lea(r12d, __[rax + 1]);  // 32-bit result of a 64-bit address
            a.mov(__dword_ptr[Data + 16], 0x1234_5678);
            a.mov(r13, __qword_ptr[Data + 16]);
        });
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(0x99);
        m[Gpr.Rcx].Should().Be(0x1122_3344_5566_ABCD);
        m[Gpr.Rdx].Should().Be(0x1122_3344_5566_EE88);
        m[Gpr.Rsi].Should().Be(0x1122_3344_5566_7701);
        m[Gpr.Rdi].Should().Be(0x1122_3344);
        m[Gpr.R8].Should().Be(0x11);
        m[Gpr.R9].Should().Be(0x1122);
        m[Gpr.R10].Should().Be(0xFFFF_FFFF_8000_0000);
        m[Gpr.R11].Should().Be(0x1122_3344_5566_7788 + (0x99 * 4) + 0x10);
        m[Gpr.R12].Should().Be(0x5566_7789);
        m[Gpr.R13].Should().Be(0x1234_5678, "the upper dword of Data + 16 was zero");
    }

    [Fact]
    public void Base_Index_Scale_Displacement_Addresses_Load_And_Store()
    {
        var m = new InterpreterMachine();
        m.WriteU64(Data + 0x100 + (3 * 8) + 0x10, 0x1234);
        m.Load(a =>
        {
            a.mov(rbx, Data + 0x100);
            a.mov(rcx, 3);
            a.mov(rax, __qword_ptr[rbx + rcx * 8 + 0x10]);     // Data + 0x128
            a.mov(__dword_ptr[rbx + rcx * 4 - 0x20], eax);      // Data + 0xEC
            a.mov(edx, __dword_ptr[rcx * 2 + (long)(Data + 0x200)]);
            a.mov(rsi, -8);
            a.mov(rdi, __qword_ptr[rbx + rsi + 0x30]);          // Data + 0x128 via a negative index
        });
        m.WriteU64(Data + 0x206, 0x5555_6666);
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0x1234);
        m.ReadU64(Data + 0xEC).Should().Be(0x1234);
        m[Gpr.Rdx].Should().Be(0x5555_6666);
        m[Gpr.Rdi].Should().Be(0x1234);
    }

    [Fact]
    public void Rip_Relative_Operands_Use_The_Instruction_Address()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var label = a.CreateLabel();
            a.mov(rax, __qword_ptr[label]);
            a.lea(rbx, __[label]);
            a.hlt();
            a.Label(ref label);
            a.dq(0xCAFE_F00D_1234_5678);
        });
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0xCAFE_F00D_1234_5678);
        m[Gpr.Rbx].Should().BeInRange(InterpreterMachine.CodeBase, InterpreterMachine.CodeBase + 32);
    }

    [Fact]
    public void Fs_And_Gs_Overrides_Add_The_Segment_Base()
    {
        var m = new InterpreterMachine();
        m.Cpu.FsBase = Data;
        m.Cpu.GsBase = Data + 0x100;
        m.WriteU64(Data + 8, 111);
        m.WriteU64(Data + 0x108, 222);
        m.Load(a =>
        {
            a.mov(rax, __qword_ptr.fs[8]);
            a.mov(rbx, __qword_ptr.gs[8]);
            a.mov(rcx, __qword_ptr[Data + 8]);
        });
        m.RunToHalt();
        (m[Gpr.Rax], m[Gpr.Rbx], m[Gpr.Rcx]).Should().Be((111ul, 222ul, 111ul));
    }

    [Fact]
    public void Xchg_Cmpxchg_Xadd_Bswap()
    {
        var m = new InterpreterMachine();
        m.WriteU64(Data, 10);
        m.Load(a =>
        {
            a.mov(rbx, 20);
            a.xchg(__qword_ptr[Data], rbx);          // rbx = 10, [Data] = 20
            a.mov(rax, 20);
            a.mov(rcx, 30);
            a.@lock.cmpxchg(__qword_ptr[Data], rcx);  // equal: [Data] = 30, ZF = 1
            a.setz(r8b);
            a.mov(rax, 99);
            a.cmpxchg(__qword_ptr[Data], rcx);        // not equal: rax = 30, ZF = 0
            a.setz(r9b);
            a.mov(rdx, 5);
            a.@lock.xadd(__qword_ptr[Data], rdx);     // [Data] = 35, rdx = 30
            a.mov(esi, 0x1122_3344);
            a.bswap(esi);
            a.mov(rdi, 0x0102_0304_0506_0708);
            a.bswap(rdi);
        });
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(10);
        m[Gpr.R8].Should().Be(1);
        m[Gpr.R9].Should().Be(0);
        m[Gpr.Rax].Should().Be(30);
        m[Gpr.Rdx].Should().Be(30);
        m.ReadU64(Data).Should().Be(35);
        m[Gpr.Rsi].Should().Be(0x4433_2211);
        m[Gpr.Rdi].Should().Be(0x0807_0605_0403_0201);
    }

    [Fact]
    public void Cmpxchg8b_And_16b_Compare_The_Register_Pairs()
    {
        var m = new InterpreterMachine();
        m.WriteU64(Data, 0x1111);
        m.WriteU64(Data + 8, 0x2222);
        m.Load(a =>
        {
            a.mov(rax, 0x1111);
            a.mov(rdx, 0x2222);
            a.mov(rbx, 0x3333);
            a.mov(rcx, 0x4444);
            a.@lock.cmpxchg16b(__xmmword_ptr[Data]);
            a.setz(r8b);
            a.@lock.cmpxchg16b(__xmmword_ptr[Data]);  // now differs: rdx:rax = memory
            a.setz(r9b);
        });
        m.RunToHalt();
        (m[Gpr.R8], m[Gpr.R9]).Should().Be((1ul, 0ul));
        (m[Gpr.Rax], m[Gpr.Rdx]).Should().Be((0x3333ul, 0x4444ul));
        (m.ReadU64(Data), m.ReadU64(Data + 8)).Should().Be((0x3333ul, 0x4444ul));

        var misaligned = new InterpreterMachine();
        misaligned.Load(a => a.cmpxchg16b(__xmmword_ptr[Data + 8]));
        var exit = misaligned.Run();
        (exit.Vector, exit.ErrorCode).Should().Be((Vectors.GP, 0u), "cmpxchg16b needs a 16-byte aligned operand");
    }

    [Fact]
    public void Bit_Test_And_Scan_Instructions()
    {
        var m = new InterpreterMachine();
        m.WriteU64(Data, 0);
        m.Load(a =>
        {
            a.mov(rax, 0b1010);
            a.bt(rax, 1);
            a.setc(r8b);                    // 1
            a.bts(rax, 0);                  // rax = 1011, CF = 0
            a.setc(r9b);
            a.btr(rax, 3);                  // rax = 0011, CF = 1
            a.setc(r10b);
            a.btc(rax, 63);                 // rax = 8000...0003
            a.mov(rcx, 70);                 // a register offset reaches past the qword: bit 6 of Data + 8
            a.bts(__qword_ptr[Data], rcx);
            a.mov(rcx, -1);                 // bit 63 of Data - 8
            a.bts(__qword_ptr[Data + 16], rcx);
            a.mov(rbx, 0x80);
            a.bsf(r11, rbx);                // 7
            a.bsr(r12, rbx);                // 7
            a.mov(r13, 0x5555);
            a.xor(edx, edx);
            a.bsf(r13, rdx);                // source 0: ZF = 1, r13 unchanged
            a.setz(r14b);
            a.tzcnt(esi, edx);              // 32, CF = 1
            a.lzcnt(rdi, rbx);              // 56
            a.popcnt(r15, rax);             // 3
        });
        m.RunToHalt();
        (m[Gpr.R8], m[Gpr.R9], m[Gpr.R10]).Should().Be((1ul, 0ul, 1ul));
        m[Gpr.Rax].Should().Be(0x8000_0000_0000_0003);
        m.ReadU64(Data + 8).Should().Be((1ul << 6) | (1ul << 63), "bit 70 of Data and bit -1 of Data + 16 both live in the qword at Data + 8");
        m.ReadU64(Data).Should().Be(0);
        (m[Gpr.R11], m[Gpr.R12], m[Gpr.R13], m[Gpr.R14]).Should().Be((7ul, 7ul, 0x5555ul, 1ul));
        (m[Gpr.Rsi], m[Gpr.Rdi], m[Gpr.R15]).Should().Be((32ul, 56ul, 3ul));
        (m.Cpu.Rflags & ZF).Should().Be(0, "popcnt of a non-zero value clears ZF");
    }

    [Fact]
    public void Setcc_And_Cmovcc_Follow_The_Condition_Table()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(eax, 1);
            a.cmp(eax, 2);        // 1 - 2: CF = 1, SF = 1, OF = 0, ZF = 0
            a.setb(bl);           // 1
            a.setl(bh);           // 1 (SF != OF)
            a.seta(cl);           // 0
            a.setg(ch);           // 0
            a.setle(dl);          // 1
            a.setnz(dh);          // 1
            a.mov(r8, -1);
            a.mov(r9, 0x55);
            a.cmovae(r8d, r9d);   // false, but a 32-bit destination is still zero-extended
            a.mov(r10, 1);
            a.cmovb(r10, r9);     // true
        });
        m.RunToHalt();
        (m[Gpr.Rbx] & 0xFFFF).Should().Be(0x0101);
        (m[Gpr.Rcx] & 0xFFFF).Should().Be(0x0000);
        (m[Gpr.Rdx] & 0xFFFF).Should().Be(0x0101);
        m[Gpr.R8].Should().Be(0xFFFF_FFFF);
        m[Gpr.R10].Should().Be(0x55);
    }

    [Fact]
    public void Sign_Extension_Of_The_Accumulator()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(rax, 0x1234_5680);
            a.cbw();              // ax = 0xFF80
            a.mov(rbx, rax);
            a.cwde();             // eax = 0xFFFFFF80
            a.mov(rcx, rax);
            a.cdqe();             // rax = -128
            a.mov(rsi, rax);
            a.cqo();              // rdx = -1
            a.mov(rdi, rdx);
            a.mov(eax, 0x7FFF_FFFF);
            a.cdq();              // edx = 0
        });
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(0x1234_FF80);
        m[Gpr.Rcx].Should().Be(0xFFFF_FF80);
        m[Gpr.Rsi].Should().Be(unchecked((ulong)-128L));
        m[Gpr.Rdi].Should().Be(ulong.MaxValue);
        m[Gpr.Rdx].Should().Be(0);
    }

    [Fact]
    public void A_Loop_With_Calls_Computes_A_Sum()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var loop = a.CreateLabel();
            var add = a.CreateLabel();
            var done = a.CreateLabel();
            a.xor(eax, eax);
            a.mov(ecx, 100);
            a.Label(ref loop);
            a.call(add);
            a.dec(ecx);
            a.jnz(loop);
            a.jmp(done);
            a.Label(ref add);
            a.push(rbp);
            a.mov(rbp, rsp);
            a.add(rax, rcx);
            a.leave();
            a.ret();
            a.Label(ref done);
        });
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(5050);
        m[Gpr.Rsp].Should().Be(InterpreterMachine.StackTop);
    }

    [Fact]
    public void Jmp_And_Call_Through_A_Table_In_Memory_Reach_The_Entry_They_Index()
    {
        // A compiler's switch: jmp qword [base + index*8]; and an indirect call through a slot.
        // Iced types these memory operands as QwordOffset, not UInt64 (PV GRUB's first #UD).
        const ulong Table = 0x8000;
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var zero = a.CreateLabel();
            var one = a.CreateLabel();
            var joined = a.CreateLabel();
            var fn = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(r8, Table);
            a.lea(rax, __[zero]);
            a.mov(__[r8], rax);
            a.lea(rax, __[one]);
            a.mov(__[r8 + 8], rax);
            a.lea(rax, __[fn]);
            a.mov(__[r8 + 16], rax);
            a.mov(ecx, 1);
            a.jmp(__qword_ptr[r8 + rcx * 8]);
            a.Label(ref zero);
            a.mov(ebx, 111);
            a.jmp(joined);
            a.Label(ref one);
            a.mov(ebx, 222);
            a.Label(ref joined);
            a.call(__qword_ptr[r8 + 16]);
            a.jmp(end);
            a.Label(ref fn);
            a.add(ebx, 1000);
            a.ret();
            a.Label(ref end);
        });
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(1222, "the jump took table entry 1, then the call ran the function in entry 2");
        m.Platform.Unimplemented.Should().BeEmpty();
    }

    [Fact]
    public void Push_Pop_Enter_Leave_And_Ret_Imm_Move_The_Stack()
    {
        var m = new InterpreterMachine();
        const ulong top = InterpreterMachine.StackTop;
        m.Load(a =>
        {
            var f = a.CreateLabel();
            var after = a.CreateLabel();
            a.mov(rbp, 0xB0B0);
            a.push(0x1234);                // sign-extended imm: 8 bytes
            a.push(-1);
            a.pop(rbx);                    // -1
            a.pop(rcx);                    // 0x1234
            a.mov(rsi, rsp);               // top
            a.enter(0x20, 0);
            a.mov(rdi, rsp);               // top - 8 - 0x20
            a.mov(r8, rbp);                // top - 8
            a.leave();
            a.mov(r9, rbp);                // 0xB0B0
            a.push(7);
            a.push(8);
            a.call(f);
            a.jmp(after);
            a.Label(ref f);
            a.ret(16);                      // pops the return address and the two pushes
            a.Label(ref after);
            a.mov(r10, rsp);
            a.push(rsp);                    // pushes the value before the decrement
            a.pop(r11);
            a.push(__qword_ptr[rsp - 8]);   // the slot below: the old push of rsp
            a.pop(r12);
        });
        m.RunToHalt();
        (m[Gpr.Rbx], m[Gpr.Rcx]).Should().Be((ulong.MaxValue, 0x1234ul));
        m[Gpr.Rsi].Should().Be(top);
        m[Gpr.Rdi].Should().Be(top - 8 - 0x20);
        m[Gpr.R8].Should().Be(top - 8);
        m[Gpr.R9].Should().Be(0xB0B0);
        m[Gpr.R10].Should().Be(top);
        m[Gpr.R11].Should().Be(top);
        m[Gpr.R12].Should().Be(top);
        m[Gpr.Rsp].Should().Be(top);
    }

    [Fact]
    public void Rep_String_Instructions_Honour_Rcx_And_DF()
    {
        var m = new InterpreterMachine();
        var source = Enumerable.Range(0, 300).Select(i => (byte)(i * 7)).ToArray();
        source.CopyTo(m.Memory.Bytes[(int)Data..]);
        m.Load(a =>
        {
            a.cld();
            a.mov(rsi, Data);
            a.mov(rdi, Data + 0x1000);
            a.mov(rcx, 300);
            a.rep.movsb();                        // forward copy
            a.mov(r8, rsi);
            a.mov(rdi, Data + 0x2000);
            a.mov(eax, 0xAB);
            a.mov(ecx, 10);
            a.rep.stosq();                        // 80 bytes of ...00AB
            a.std();
            a.mov(rsi, Data + 0x1000 + 299);
            a.mov(rdi, Data + 0x3000 + 299);
            a.mov(ecx, 300);
            a.rep.movsb();                        // backward copy
            a.cld();
            a.mov(rsi, Data);
            a.mov(rdi, Data + 0x1000);
            a.mov(ecx, 300);
            a.repe.cmpsb();                       // all equal: rcx = 0, ZF = 1
            a.mov(r9, rcx);
            a.setz(r10b);
            a.mov(rdi, Data);
            a.mov(al, unchecked((byte)(100 * 7)));
            a.mov(ecx, 300);
            a.repne.scasb();                      // stops after element 100
            a.mov(r11, rcx);
            a.mov(r12, rdi);
            a.mov(rsi, Data + 8);
            a.lodsd();
            a.mov(r13, rax);
        });
        m.RunToHalt();
        m.Memory.Bytes.Slice((int)Data + 0x1000, 300).ToArray().Should().Equal(source);
        m.Memory.Bytes.Slice((int)Data + 0x3000, 300).ToArray().Should().Equal(source);
        m[Gpr.R8].Should().Be(Data + 300);
        Enumerable.Range(0, 10).Select(i => m.ReadU64(Data + 0x2000 + (ulong)(i * 8))).Should().AllBeEquivalentTo(0xABul);
        m.ReadU64(Data + 0x2000 + 80).Should().Be(0);
        (m[Gpr.R9], m[Gpr.R10]).Should().Be((0ul, 1ul));
        m[Gpr.R11].Should().Be(300ul - 101);
        m[Gpr.R12].Should().Be(Data + 101);
        m[Gpr.R13].Should().Be(BitConverter.ToUInt32(source, 8));
    }

    [Fact]
    public void Overlapping_Rep_Movsb_Replicates_Bytes_As_Hardware_Does()
    {
        var m = new InterpreterMachine();
        m.Memory.Bytes[(int)Data] = 0x5A;
        m.Load(a =>
        {
            a.mov(rsi, Data);
            a.mov(rdi, Data + 1);
            a.mov(ecx, 64);
            a.rep.movsb();
        });
        m.RunToHalt();
        m.Memory.Bytes.Slice((int)Data, 65).ToArray().Should().AllBeEquivalentTo((byte)0x5A);
    }

    [Fact]
    public void A_Long_Rep_Is_Preemptible_And_Resumes()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(rdi, Data);
            a.mov(ecx, 100_000);
            a.mov(al, 0x11);
            a.rep.stosb();
        });
        var exit = m.Run(4);
        exit.Reason.Should().Be(ExitReason.SliceDone);
        m[Gpr.Rcx].Should().BeGreaterThan(0).And.BeLessThan(100_000, "one chunk ran");
        m.Cpu.Rip.Should().NotBe(InterpreterMachine.CodeBase, "rip stays on the rep instruction");
        m.RunToHalt();
        m[Gpr.Rcx].Should().Be(0);
        m.Memory.Bytes.Slice((int)Data, 100_000).ToArray().Should().AllBeEquivalentTo((byte)0x11);
        m.Memory.Bytes[(int)Data + 100_000].Should().Be(0);
    }

    [Fact]
    public void Accesses_That_Cross_A_Page_Are_Split()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(rax, 0x0807_0605_0403_0201);
            a.mov(__qword_ptr[Data + 0xFFD], rax);
            a.mov(rbx, __qword_ptr[Data + 0xFFD]);
            a.add(__dword_ptr[Data + 0xFFE], 1);
        });
        m.RunToHalt();
        m[Gpr.Rbx].Should().Be(0x0807_0605_0403_0201);
        m.ReadU64(Data + 0xFFD).Should().Be(0x0807_0605_0403_0301);
    }
}
