using Iced.Intel;
using Paravirt.Core.Cpu.Interpreter;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Interpreter;

/// <summary>
/// The fast path is an optimisation, never a second semantics: random programs of the shapes it
/// pre-digests (and their neighbours it must leave alone: AH–BH, 16-bit registers, read-modify-write
/// memory) run once with it and once through the general handlers only, from the same state, and
/// must end with the same registers, flags, memory and exit.
/// </summary>
public sealed class FastPathTests
{
    private static readonly AssemblerRegister64[] R64 = [rax, rcx, rdx, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15];
    private static readonly AssemblerRegister32[] R32 = [eax, ecx, edx, edi, ebp, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d];
    private static readonly AssemblerRegister32[] R32Legacy = [eax, ecx, edx, edi, ebp];
    private static readonly AssemblerRegister16[] R16 = [ax, cx, dx, di, bp, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w];

    // With a REX prefix the low bytes of every register; without one AH–BH (never mixed in one instruction).
    private static readonly AssemblerRegister8[] R8Rex = [al, cl, dl, dil, bpl, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b];
    private static readonly AssemblerRegister8[] R8Legacy = [al, cl, dl, ah, ch, dh];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Random_Programs_End_In_The_Same_State_With_And_Without_The_Fast_Path(int seed)
    {
        var random = new Random(20261207 + seed);
        for (var program = 0; program < 400; program++)
        {
            var programSeed = random.Next();
            var code = InterpreterMachine.Assemble(a => Emit(a, new Random(programSeed)), InterpreterMachine.CodeBase);
            var fast = new InterpreterMachine();
            var general = new InterpreterMachine();
            general.Interpreter.FastPath = false;
            var state = new Random(programSeed ^ 0x5A5A);
            var registers = new ulong[16];
            for (var r = 0; r < 16; r++)
            {
                registers[r] = state.Next(3) switch
                {
                    0 => (ulong)state.NextInt64(),
                    1 => (ulong)state.Next(256),
                    _ => ulong.MaxValue - (ulong)state.Next(256),
                };
            }

            registers[Gpr.Rbx] = InterpreterMachine.DataBase;
            registers[Gpr.Rsi] = (ulong)state.Next(32);
            var flags = (ulong)state.Next() & FlagBits.Status;
            var data = new byte[4096];
            state.NextBytes(data);
            foreach (var m in new[] { fast, general })
            {
                code.CopyTo(m.Memory.Bytes[(int)InterpreterMachine.CodeBase..]);
                data.CopyTo(m.Memory.Bytes[(int)InterpreterMachine.DataBase..]);
                m.Interpreter.InvalidateCode(0, 1 << 20);
                m.Restart(flags);
                for (var r = 0; r < 16; r++)
                {
                    m.Cpu.Gpr[r] = r == Gpr.Rsp ? InterpreterMachine.StackTop : registers[r];
                }
            }

            var fastExit = fast.Run(10_000);
            var generalExit = general.Run(10_000);
            var what = $"program {program} (seed {programSeed})";
            fastExit.Should().Be(generalExit, what);
            fast.Cpu.Rip.Should().Be(general.Cpu.Rip, what);
            fast.Cpu.Rflags.Should().Be(general.Cpu.Rflags, what);
            for (var r = 0; r < 16; r++)
            {
                fast.Cpu.Gpr[r].Should().Be(general.Cpu.Gpr[r], $"{what}: register {r}");
            }

            fast.Memory.Bytes[(int)InterpreterMachine.DataBase..(int)(InterpreterMachine.DataBase + 4096)].ToArray()
                .Should().Equal(general.Memory.Bytes[(int)InterpreterMachine.DataBase..(int)(InterpreterMachine.DataBase + 4096)].ToArray(), what);
            fast.Memory.Bytes[(int)(InterpreterMachine.StackTop - 4096)..(int)(InterpreterMachine.StackTop + 256)].ToArray()
                .Should().Equal(general.Memory.Bytes[(int)(InterpreterMachine.StackTop - 4096)..(int)(InterpreterMachine.StackTop + 256)].ToArray(), what);
        }
    }

    [Fact]
    public void The_General_Path_Really_Is_Taken_When_The_Fast_Path_Is_Off()
    {
        // A guard on the test above: if turning the fast path off changed nothing, agreement would prove nothing.
        var fast = new InterpreterMachine();
        var general = new InterpreterMachine();
        general.Interpreter.FastPath = false;
        fast.Interpreter.FastPath.Should().BeTrue();
        foreach (var m in new[] { fast, general })
        {
            m.Load(a =>
            {
                a.mov(ecx, 100_000);
                var loop = a.CreateLabel();
                a.Label(ref loop);
                a.add(rax, rcx);
                a.dec(ecx);
                a.jnz(loop);
            });
            m.RunToHalt(10_000_000);
        }

        fast[Gpr.Rax].Should().Be(general[Gpr.Rax]).And.Be(5_000_050_000UL);
    }

    private static void Emit(Assembler a, Random random)
    {
        var count = random.Next(10, 40);
        for (var i = 0; i < count; i++)
        {
            if (random.Next(12) == 0)
            {
                // A forward conditional branch over one or two instructions.
                var skip = a.CreateLabel();
                EmitJcc(a, random.Next(16), skip);
                EmitOne(a, random);
                if (random.Next(2) == 0)
                {
                    EmitOne(a, random);
                }

                a.Label(ref skip);
                continue;
            }

            if (random.Next(30) == 0)
            {
                // A call to a small function that returns.
                var function = a.CreateLabel();
                var after = a.CreateLabel();
                a.call(function);
                a.jmp(after);
                a.Label(ref function);
                EmitOne(a, random);
                a.ret();
                a.Label(ref after);
                continue;
            }

            if (random.Next(30) == 0)
            {
                // Indirect transfers: call reg, call [mem], jmp reg.
                var function = a.CreateLabel();
                var after = a.CreateLabel();
                var target = R64[random.Next(R64.Length)];
                switch (random.Next(3))
                {
                    case 0:
                        a.lea(target, __[function]);
                        a.call(target);
                        break;
                    case 1:
                        a.lea(target, __[function]);
                        a.mov(__qword_ptr[rbx + (rsi * 8) + 8], target);
                        a.call(__qword_ptr[rbx + (rsi * 8) + 8]);
                        break;
                    default:
                        a.lea(target, __[after]);
                        a.jmp(target);
                        break;
                }

                a.jmp(after);
                a.Label(ref function);
                EmitOne(a, random);
                a.ret();
                a.Label(ref after);
                continue;
            }

            EmitOne(a, random);
        }
    }

    private static AssemblerMemoryOperand Slot(Random random) => rbx + (rsi * 8) + (random.Next(64) * 4);

    private static void EmitOne(Assembler a, Random random)
    {
        var q = R64[random.Next(R64.Length)];
        var q2 = R64[random.Next(R64.Length)];
        var d = R32[random.Next(R32.Length)];
        var d2 = R32[random.Next(R32.Length)];
        var w = R16[random.Next(R16.Length)];
        var legacy = random.Next(3) == 0;
        var pool = legacy ? R8Legacy : R8Rex;
        var b = pool[random.Next(pool.Length)];
        var b2 = pool[random.Next(pool.Length)];
        var widened = legacy ? R32Legacy[random.Next(R32Legacy.Length)] : d; // a destination AH–BH can be extended into
        var imm = random.Next(4) switch
        {
            0 => random.Next(-128, 128),
            1 => random.Next(),
            2 => -random.Next(),
            _ => random.Next(4),
        };
        var op = random.Next(9);
        switch (random.Next(38))
        {
            case 0: Alu(a, op, q, q2); break;
            case 1: Alu(a, op, d, d2); break;
            case 2: Alu(a, op, b, b2); break;
            case 3: Alu(a, op, q, imm); break;
            case 4: Alu(a, op, d, imm); break;
            case 5: Alu(a, op, b, (byte)imm); break;
            case 6: AluLoad(a, op, q, __qword_ptr[Slot(random)]); break;
            case 7: AluLoad(a, op, d, __dword_ptr[Slot(random)]); break;
            case 8: AluLoad(a, op, b, __byte_ptr[Slot(random)]); break;
            case 9:
                if (random.Next(2) == 0)
                {
                    a.cmp(__qword_ptr[Slot(random)], q);
                }
                else
                {
                    a.test(__dword_ptr[Slot(random)], d);
                }

                break;
            case 10:
                switch (random.Next(4))
                {
                    case 0: a.cmp(__byte_ptr[Slot(random)], (byte)imm); break;
                    case 1: a.test(__byte_ptr[Slot(random)], (byte)imm); break;
                    case 2: a.cmp(__qword_ptr[Slot(random)], imm); break;
                    default: a.cmp(__word_ptr[Slot(random)], (short)imm); break;
                }

                break;
            case 11: a.add(__qword_ptr[Slot(random)], q); break; // read-modify-write: the general path
            case 12:
                switch (random.Next(4))
                {
                    case 0: a.inc(q); break;
                    case 1: a.dec(d); break;
                    case 2: a.neg(q); break;
                    default: a.not(d); break;
                }

                break;
            case 13:
                switch (random.Next(3))
                {
                    case 0: a.inc(b); break;
                    case 1: a.neg(b); break;
                    default: a.not(w); break;
                }

                break;
            case 14:
                switch (random.Next(5))
                {
                    case 0: a.mov(q, q2); break;
                    case 1: a.mov(d, d2); break;
                    case 2: a.mov(b, b2); break;
                    case 3: a.mov(q, (ulong)random.NextInt64()); break;
                    default: a.mov(d, (uint)imm); break;
                }

                break;
            case 15:
                switch (random.Next(4))
                {
                    case 0: a.mov(q, __qword_ptr[Slot(random)]); break;
                    case 1: a.mov(d, __dword_ptr[Slot(random)]); break;
                    case 2: a.mov(b, __byte_ptr[Slot(random)]); break;
                    default: a.mov(w, __word_ptr[Slot(random)]); break;
                }

                break;
            case 16:
                switch (random.Next(6))
                {
                    case 0: a.mov(__qword_ptr[Slot(random)], q); break;
                    case 1: a.mov(__dword_ptr[Slot(random)], d); break;
                    case 2: a.mov(__byte_ptr[Slot(random)], b); break;
                    case 3: a.mov(__qword_ptr[Slot(random)], imm); break;
                    case 4: a.mov(__byte_ptr[Slot(random)], (byte)imm); break;
                    default: a.mov(__word_ptr[Slot(random)], (short)imm); break;
                }

                break;
            case 17:
                switch (random.Next(6))
                {
                    case 0: a.movzx(widened, b); break;
                    case 1: if (legacy) { a.movsx(widened, b); } else { a.movzx(q, b); } break;
                    case 2: a.movzx(d, w); break;
                    case 3: if (legacy) { a.movzx(widened, b); } else { a.movsx(q, b); } break;
                    case 4: a.movsx(d, w); break;
                    default: a.movsxd(q, d2); break;
                }

                break;
            case 18:
                switch (random.Next(5))
                {
                    case 0: a.movzx(d, __byte_ptr[Slot(random)]); break;
                    case 1: a.movzx(q, __word_ptr[Slot(random)]); break;
                    case 2: a.movsx(q, __byte_ptr[Slot(random)]); break;
                    case 3: a.movsx(d, __word_ptr[Slot(random)]); break;
                    default: a.movsxd(q, __dword_ptr[Slot(random)]); break;
                }

                break;
            case 19:
                switch (random.Next(4))
                {
                    case 0: a.lea(q, __[q2 + (rsi * 8) + imm]); break;
                    case 1: a.lea(d, __[q2 + (q * 4) + 16]); break;
                    case 2: a.lea(q, __[q2 + imm]); break;
                    default: a.lea(q, __[rbx + (q2 * 2)]); break;
                }

                break;
            case 20:
            case 21:
                Shift(a, random.Next(6), random.Next(3), q, d, b, (byte)random.Next(72));
                break;
            case 22:
                Shift(a, random.Next(6), random.Next(3), q, d, b, 1);
                break;
            case 32:
                switch (random.Next(4))
                {
                    case 0: a.shl(q, cl); break;
                    case 1: a.shr(d, cl); break;
                    case 2: a.sar(b, cl); break;
                    default: a.ror(w, cl); break;
                }

                break;
            case 23:
                switch (random.Next(5))
                {
                    case 0: a.imul(q, q2); break;
                    case 1: a.imul(d, d2); break;
                    case 2: a.imul(q, q2, imm); break;
                    case 3: a.imul(d, d2, imm); break;
                    default: a.imul(q, __qword_ptr[Slot(random)]); break;
                }

                break;
            case 24:
                a.push(q);
                a.pop(q2);
                break;
            case 25:
                a.push(q);
                EmitOne(a, random);
                a.pop(q);
                break;
            case 26:
                Setcc(a, random.Next(16), b);
                break;
            case 27:
                Cmov(a, random.Next(16), random.Next(2) == 0, q, q2, d, d2);
                break;
            case 28:
                a.nop();
                break;
            case 30:
                // The general path reads the flags a fast-path operation left.
                a.pushfq();
                a.pop(q);
                break;
            case 31:
                if (random.Next(8) == 0)
                {
                    // A load beyond memory ends the run with a fault: the flags must be those of the instructions before it.
                    a.mov(q, __qword_ptr[rbx + 0x20_0000]);
                }
                else
                {
                    a.adc(q, __qword_ptr[Slot(random)]);
                }

                break;
            case 29:
                var w2 = R16[random.Next(R16.Length)];
                switch (random.Next(7))
                {
                    case 0: a.add(w, (short)imm); break;
                    case 1: a.cmp(w, w2); break;
                    case 2: a.shr(w, (byte)random.Next(20)); break;
                    case 3: a.mov(w, w2); break;
                    case 4: a.mov(__word_ptr[Slot(random)], w); break;
                    case 5: a.sub(w, __word_ptr[Slot(random)]); break;
                    default: a.movzx(d, w2); break;
                }

                break;
            default:
                Alu(a, op, q, q2);
                break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister64 x, AssemblerRegister64 y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister32 x, AssemblerRegister32 y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister8 x, AssemblerRegister8 y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister64 x, int y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister32 x, int y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void Alu(Assembler a, int op, AssemblerRegister8 x, byte y)
    {
        switch (op)
        {
            case 0: a.add(x, y); break;
            case 1: a.or(x, y); break;
            case 2: a.adc(x, y); break;
            case 3: a.sbb(x, y); break;
            case 4: a.and(x, y); break;
            case 5: a.sub(x, y); break;
            case 6: a.xor(x, y); break;
            case 7: a.cmp(x, y); break;
            default: a.test(x, y); break;
        }
    }

    private static void AluLoad(Assembler a, int op, AssemblerRegister64 x, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case 0: a.add(x, m); break;
            case 1: a.or(x, m); break;
            case 2: a.adc(x, m); break;
            case 3: a.sbb(x, m); break;
            case 4: a.and(x, m); break;
            case 5: a.sub(x, m); break;
            case 6: a.xor(x, m); break;
            default: a.cmp(x, m); break;
        }
    }

    private static void AluLoad(Assembler a, int op, AssemblerRegister32 x, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case 0: a.add(x, m); break;
            case 1: a.or(x, m); break;
            case 2: a.adc(x, m); break;
            case 3: a.sbb(x, m); break;
            case 4: a.and(x, m); break;
            case 5: a.sub(x, m); break;
            case 6: a.xor(x, m); break;
            default: a.cmp(x, m); break;
        }
    }

    private static void AluLoad(Assembler a, int op, AssemblerRegister8 x, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case 0: a.add(x, m); break;
            case 1: a.or(x, m); break;
            case 2: a.adc(x, m); break;
            case 3: a.sbb(x, m); break;
            case 4: a.and(x, m); break;
            case 5: a.sub(x, m); break;
            case 6: a.xor(x, m); break;
            default: a.cmp(x, m); break;
        }
    }

    private static void Shift(Assembler a, int op, int size, AssemblerRegister64 q, AssemblerRegister32 d, AssemblerRegister8 b, byte count)
    {
        switch ((op, size))
        {
            case (0, 0): a.shl(q, count); break;
            case (1, 0): a.shr(q, count); break;
            case (2, 0): a.sar(q, count); break;
            case (3, 0): a.rol(q, count); break;
            case (4, 0): a.ror(q, count); break;
            case (5, 0): a.rcl(q, count); break;
            case (0, 1): a.shl(d, count); break;
            case (1, 1): a.shr(d, count); break;
            case (2, 1): a.sar(d, count); break;
            case (3, 1): a.rol(d, count); break;
            case (4, 1): a.ror(d, count); break;
            case (5, 1): a.rcr(d, count); break;
            case (0, _): a.shl(b, count); break;
            case (1, _): a.shr(b, count); break;
            case (2, _): a.sar(b, count); break;
            case (3, _): a.rol(b, count); break;
            case (4, _): a.ror(b, count); break;
            default: a.rcl(b, count); break;
        }
    }

    private static void EmitJcc(Assembler a, int condition, Label target)
    {
        switch (condition)
        {
            case 0: a.jo(target); break;
            case 1: a.jno(target); break;
            case 2: a.jb(target); break;
            case 3: a.jae(target); break;
            case 4: a.je(target); break;
            case 5: a.jne(target); break;
            case 6: a.jbe(target); break;
            case 7: a.ja(target); break;
            case 8: a.js(target); break;
            case 9: a.jns(target); break;
            case 10: a.jp(target); break;
            case 11: a.jnp(target); break;
            case 12: a.jl(target); break;
            case 13: a.jge(target); break;
            case 14: a.jle(target); break;
            default: a.jg(target); break;
        }
    }

    private static void Setcc(Assembler a, int condition, AssemblerRegister8 r)
    {
        switch (condition)
        {
            case 0: a.seto(r); break;
            case 1: a.setno(r); break;
            case 2: a.setb(r); break;
            case 3: a.setae(r); break;
            case 4: a.sete(r); break;
            case 5: a.setne(r); break;
            case 6: a.setbe(r); break;
            case 7: a.seta(r); break;
            case 8: a.sets(r); break;
            case 9: a.setns(r); break;
            case 10: a.setp(r); break;
            case 11: a.setnp(r); break;
            case 12: a.setl(r); break;
            case 13: a.setge(r); break;
            case 14: a.setle(r); break;
            default: a.setg(r); break;
        }
    }

    private static void Cmov(Assembler a, int condition, bool wide, AssemblerRegister64 q, AssemblerRegister64 q2, AssemblerRegister32 d, AssemblerRegister32 d2)
    {
        switch (condition)
        {
            case 0: if (wide) { a.cmovo(q, q2); } else { a.cmovo(d, d2); } break;
            case 1: if (wide) { a.cmovno(q, q2); } else { a.cmovno(d, d2); } break;
            case 2: if (wide) { a.cmovb(q, q2); } else { a.cmovb(d, d2); } break;
            case 3: if (wide) { a.cmovae(q, q2); } else { a.cmovae(d, d2); } break;
            case 4: if (wide) { a.cmove(q, q2); } else { a.cmove(d, d2); } break;
            case 5: if (wide) { a.cmovne(q, q2); } else { a.cmovne(d, d2); } break;
            case 6: if (wide) { a.cmovbe(q, q2); } else { a.cmovbe(d, d2); } break;
            case 7: if (wide) { a.cmova(q, q2); } else { a.cmova(d, d2); } break;
            case 8: if (wide) { a.cmovs(q, q2); } else { a.cmovs(d, d2); } break;
            case 9: if (wide) { a.cmovns(q, q2); } else { a.cmovns(d, d2); } break;
            case 10: if (wide) { a.cmovp(q, q2); } else { a.cmovp(d, d2); } break;
            case 11: if (wide) { a.cmovnp(q, q2); } else { a.cmovnp(d, d2); } break;
            case 12: if (wide) { a.cmovl(q, q2); } else { a.cmovl(d, d2); } break;
            case 13: if (wide) { a.cmovge(q, q2); } else { a.cmovge(d, d2); } break;
            case 14: if (wide) { a.cmovle(q, q2); } else { a.cmovle(d, d2); } break;
            default: if (wide) { a.cmovg(q, q2); } else { a.cmovg(d, d2); } break;
        }
    }
}
