using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>Self-modifying code and writes from outside invalidate decoded blocks.</summary>
public sealed class CodeCacheTests
{
    private const ulong Target = 0x2000;

    [Fact]
    public void A_Store_Into_Decoded_Code_Is_Seen_On_The_Next_Execution()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(eax, 1);          // B8 01 00 00 00
            a.ret();
        }, Target, halt: false);
        m.Load(a =>
        {
            a.call(Target);
            a.mov(r8, rax);
            a.mov(__byte_ptr[Target + 1], 7);   // patch the immediate
            a.call(Target);
        });
        m.RunToHalt();
        m[Gpr.R8].Should().Be(1);
        m[Gpr.Rax].Should().Be(7);
    }

    [Fact]
    public void A_Store_Into_The_Running_Block_Takes_Effect_On_The_Very_Next_Instruction()
    {
        var m = new InterpreterMachine();
        var storeLength = InterpreterMachine.Assemble(a => a.mov(__byte_ptr[0x3000], 9), 0, halt: false).Length;
        m.Load(a =>
        {
            a.mov(__byte_ptr[Target + (ulong)storeLength + 1], 9);   // the immediate of the next instruction
            a.mov(eax, 1);
            a.ret();
        }, Target, halt: false);
        m.Load(a => a.call(Target));
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(9);
        m.Interpreter.BlocksDecoded.Should().BeGreaterThan(2, "the patched block was decoded again");
    }

    [Fact]
    public void A_Host_Write_Is_Seen_After_InvalidateCode()
    {
        var m = new InterpreterMachine();
        m.Load(a => a.mov(eax, 1));
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(1);
        m.Memory.Bytes[(int)InterpreterMachine.CodeBase + 1] = 5;
        m.Interpreter.InvalidateCode(InterpreterMachine.CodeBase + 1, 1);
        m.Restart();
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(5);
    }

    [Fact]
    public void Blocks_That_Hash_Alike_Share_A_Set_Of_Four_And_The_Oldest_Makes_Way()
    {
        var cache = new CodeCache();
        ulong Pa(int j) => (ulong)j << 40; // every term of the set hash is 0 in its low 14 bits: one set
        DecodedBlock Decode(int j)
        {
            cache.Buffer[0] = 0xC3; // ret
            return cache.Decode(Pa(j), 0x1000 * (ulong)j, 1)!;
        }

        var blocks = Enumerable.Range(1, 4).Select(Decode).ToArray();
        for (var j = 1; j <= 4; j++)
        {
            cache.Find(Pa(j), 0x1000 * (ulong)j).Should().BeSameAs(blocks[j - 1], "four blocks of one set are all kept (a direct-mapped table kept only the last)");
        }

        cache.Find(Pa(1), 0x2000).Should().BeNull("the same physical address at another rip is another block");
        var fifth = Decode(5);
        cache.Find(Pa(5), 0x5000).Should().BeSameAs(fifth);
        cache.Find(Pa(1), 0x1000).Should().BeNull("the set was full: its oldest entry made way");
        cache.Find(Pa(2), 0x2000).Should().BeSameAs(blocks[1]);
        var again = Decode(2);
        cache.Find(Pa(2), 0x2000).Should().BeSameAs(again, "a block decoded again replaces its stale copy");
        cache.Find(Pa(3), 0x3000).Should().BeSameAs(blocks[2], "rather than evicting another");
        cache.Find(Pa(4), 0x4000).Should().BeSameAs(blocks[3]);
        cache.Decodes.Should().Be(6);
    }

    [Fact]
    public void A_Loop_Is_Decoded_Once()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            var loop = a.CreateLabel();
            a.mov(ecx, 10_000);
            a.Label(ref loop);
            a.add(rax, rcx);
            a.dec(ecx);
            a.jnz(loop);
        });
        m.RunToHalt();
        m.Interpreter.BlocksDecoded.Should().BeLessThanOrEqualTo(3);
        m[Gpr.Rax].Should().Be(10_000ul * 10_001 / 2);
    }

    [Fact]
    public void An_Instruction_That_Crosses_A_Page_Decodes_From_Both_Pages()
    {
        var m = new InterpreterMachine();
        const ulong at = 0x2FFE;                    // a 10-byte mov rax, imm64 straddles 0x3000
        m.Load(a =>
        {
            a.mov(rax, 0x1122_3344_5566_7788);
            a.ret();
        }, at, halt: false);
        m.Load(a => a.call(at));
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0x1122_3344_5566_7788);

        m.Memory.Bytes[0x3005] = 0x99;              // a byte of the immediate on the second page
        m.Interpreter.InvalidateCode(0x3005, 1);
        m.Restart();
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(0x1122_9944_5566_7788, "immediate byte 5 (0x33) became 0x99");
    }

    [Fact]
    public void After_A_Serializing_Instruction_Unannounced_Writes_Are_Fetched_And_Unchanged_Blocks_Are_Kept()
    {
        var m = new InterpreterMachine();
        m.Load(a =>
        {
            a.mov(eax, 1);          // B8 01 00 00 00
            a.ret();
        }, Target, halt: false);
        m.Load(a => a.call(Target));
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(1);
        var decoded = m.Interpreter.BlocksDecoded;

        // Nothing changed: a serialization costs a compare per block, not a decode.
        m.Interpreter.SerializeCodeFetch();
        m.Restart();
        m.RunToHalt();
        m.Interpreter.BlocksDecoded.Should().Be(decoded, "unchanged blocks are verified and kept");

        // Someone else (another vCPU, the host) patches the function without telling this vCPU:
        // after the next serializing instruction the new bytes run.
        m.Memory.Bytes[(int)Target + 1] = 7;
        m.Interpreter.SerializeCodeFetch();
        m.Restart();
        m.RunToHalt();
        m[Gpr.Rax].Should().Be(7);
        m.Interpreter.BlocksDecoded.Should().Be(decoded + 1, "only the changed block was decoded again");
    }
}
