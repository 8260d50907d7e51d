using System.Runtime.InteropServices;
using System.Text;
using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu.Pv;
using Paravirt.Core.Domains;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>
/// A classic PV domain with page tables built straight into its frames (what the ELF builder and
/// the memory model will do for real kernels): virtual address X maps pseudo-physical page X
/// (so a guest handle is also a guest-physical address for <c>GuestAccess</c>), present, writable
/// and user (a 64-bit PV kernel runs at ring 3), except <see cref="SharedInfoVa"/>, which maps
/// shared_info. A program assembled with Iced runs at <see cref="CodeVa"/> on the PV engine.
/// </summary>
internal sealed class PvTestKernel
{
    public const ulong CodeVa = 0x10_0000;
    public const ulong DataVa = 0x20_0000;
    public const ulong StackTop = 0x30_0000;
    public const ulong UserStackTop = 0x38_0000;
    public const ulong SharedInfoVa = 0x3F_F000;

    /// <summary>Inside the domain's memory range but in no page table: every access page-faults.</summary>
    public const ulong Unmapped = 0x4000_0000;

    private const ulong Present = 1, Writable = 2, User = 4;

    private readonly List<ulong> _tables = [];

    public PvTestKernel(Hypervisor hv, string name, int memoryMiB = 8, int vcpus = 1)
    {
        Domain = hv.CreateDomain(new DomainConfig { Name = name, MemoryMiB = memoryMiB, AutoTranslated = false, Vcpus = vcpus });
        var nextPfn = Domain.Memory.TryRead(Domain.StartInfoAddress, out start_info si)
            ? si.pt_base >> 12
            : throw new InvalidOperationException("no start_info");
        ulong NewTable()
        {
            var pfn = nextPfn++;
            _tables.Add(pfn);
            Domain.Memory.TryClear(pfn << 12, 4096).Should().BeTrue();
            return pfn;
        }

        var l4 = NewTable();
        var l3 = NewTable();
        var l2 = NewTable();
        WriteEntry(l4, 0, Mfn(l3));
        WriteEntry(l3, 0, Mfn(l2));
        var pages = (ulong)memoryMiB * 256;
        for (ulong pfn = 0; pfn < pages; pfn++)
        {
            if (pfn % 512 == 0)
            {
                WriteEntry(l2, (int)(pfn / 512), Mfn(NewTable()));
            }
        }

        for (ulong pfn = 0; pfn < pages; pfn++)
        {
            var l1 = _tables[3 + (int)(pfn / 512)];
            WriteEntry(l1, (int)(pfn % 512), Mfn(pfn));
        }

        // shared_info at a fixed virtual address, in place of that page's identity mapping.
        var siPfn = SharedInfoVa >> 12;
        WriteEntry(_tables[3 + (int)(siPfn / 512)], (int)(siPfn % 512), Domain.SharedInfo!.Mfn);
        KernelL4 = Mfn(l4);

        // A user-mode L4 with the same mappings (its own frame, as Xen wants guest_table_user to be).
        var user = NewTable();
        WriteEntry(user, 0, Mfn(l3));
        UserL4 = Mfn(user);
        FirstFreePfn = nextPfn;
    }

    public Domain Domain { get; }

    public Vcpu Vcpu => Domain.VcpuList[0];

    public ulong KernelL4 { get; }

    public ulong UserL4 { get; }

    public ulong FirstFreePfn { get; }

    public ulong Mfn(ulong pfn) => Domain.PhysMap.TryLookup(pfn, out var mfn, out _) ? mfn : throw new InvalidOperationException($"pfn {pfn} unmapped");

    /// <summary>Assembles <paramref name="program"/> (64-bit, at <see cref="CodeVa"/>) into the domain's memory.</summary>
    public void Load(Action<Assembler> program) => LoadAt(CodeVa, program);

    /// <summary>Assembles <paramref name="program"/> at <paramref name="va"/>.</summary>
    public void LoadAt(ulong va, Action<Assembler> program)
    {
        var a = new Assembler(64);
        program(a);
        using var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), va);
        Domain.Memory.TryWrite(va, stream.ToArray()).Should().BeTrue();
    }

    public void Write(ulong va, ReadOnlySpan<byte> bytes) => Domain.Memory.TryWrite(va, bytes).Should().BeTrue();

    public void Write<T>(ulong va, T value)
        where T : unmanaged => Domain.Memory.TryWrite(va, in value).Should().BeTrue();

    public ulong ReadU64(ulong va) => Domain.Memory.TryRead(va, out ulong v) ? v : throw new InvalidOperationException($"0x{va:x} unreadable");

    /// <summary>Starts vCPU 0 at <see cref="CodeVa"/> in kernel mode on the kernel stack, rsi = start_info.</summary>
    public void Start(PvEngineOptions? options = null, bool withUserTables = false)
    {
        Vcpu.Pv.KernelBaseMfn = KernelL4;
        Vcpu.Pv.UserBaseMfn = withUserTables ? UserL4 : 0;
        PvEngine.Start(Domain, Vcpu, new PvEntry(CodeVa, StackTop, Domain.StartInfoAddress), options);
    }

    public async Task<DomainExit> RunAsync(PvEngineOptions? options = null, bool withUserTables = false)
    {
        Start(options, withUserTables);
        return await Domain.ExitWithinAsync();
    }

    /// <summary>The console after the domain ended (early console_io output included).</summary>
    public List<string> ConsoleLines()
    {
        var lines = new List<string>();
        while (Domain.Console.TryReadLine(out var line))
        {
            lines.Add(line);
        }

        return lines;
    }

    private void WriteEntry(ulong tablePfn, int index, ulong mfn) =>
        Domain.Memory.TryWrite((tablePfn << 12) + (ulong)index * 8, (mfn << 12) | Present | Writable | User).Should().BeTrue();

    // ---- assembly helpers ----------------------------------------------------------------------

    /// <summary>rax = nr; rdi, rsi, rdx = arguments; syscall.</summary>
    public static void Hypercall(Assembler a, int nr, ulong? rdi = null, ulong? rsi = null, ulong? rdx = null)
    {
        if (rdi is { } d)
        {
            a.mov(AssemblerRegisters.rdi, d);
        }

        if (rsi is { } s)
        {
            a.mov(AssemblerRegisters.rsi, s);
        }

        if (rdx is { } x)
        {
            a.mov(AssemblerRegisters.rdx, x);
        }

        a.mov(eax, nr);
        a.syscall();
    }

    /// <summary>console_io(CONSOLEIO_write) of a string placed at <paramref name="at"/>.</summary>
    public void Print(Assembler a, ulong at, string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        Write(at, bytes);
        Hypercall(a, Xen.__HYPERVISOR_console_io, (ulong)Xen.CONSOLEIO_write, (ulong)bytes.Length, at);
    }

    /// <summary>sched_op(SCHEDOP_shutdown, {reason}) with the struct at <paramref name="at"/>.</summary>
    public void Shutdown(Assembler a, ulong at, uint reason = Sched.SHUTDOWN_poweroff)
    {
        Write(at, new sched_shutdown { reason = reason });
        Hypercall(a, Xen.__HYPERVISOR_sched_op, (ulong)Sched.SCHEDOP_shutdown, at);
        a.ud2(); // not reached
    }

    /// <summary>set_trap_table with the entries given, terminated by a zero entry, the array at <paramref name="at"/>.</summary>
    public void SetTrapTable(Assembler a, ulong at, params (byte Vector, byte Flags, Label Handler)[] traps)
    {
        var size = (ulong)Marshal.SizeOf<trap_info>();
        for (var i = 0; i < traps.Length; i++)
        {
            var entry = at + (ulong)i * size;
            a.mov(__byte_ptr[entry], traps[i].Vector);
            a.mov(__byte_ptr[entry + 1], traps[i].Flags);
            a.mov(__word_ptr[entry + 2], (ushort)ArchX86.FLAT_KERNEL_CS);
            a.lea(rax, __[traps[i].Handler]);
            a.mov(__qword_ptr[entry + 8], rax);
        }

        Write(at + (ulong)traps.Length * size, default(trap_info));
        Hypercall(a, Xen.__HYPERVISOR_set_trap_table, at);
    }

    /// <summary>
    /// The tail of a handler that returns with HYPERVISOR_iret from a bounce frame whose RCX and R11
    /// (and error code, if <paramref name="errorCode"/>) are still at rsp: builds iret_context
    /// { rax, r11, rcx, flags = 0 } under rip/cs/rflags/rsp/ss.
    /// </summary>
    public static void IretFromBounce(Assembler a, bool errorCode)
    {
        a.mov(rcx, __qword_ptr[rsp]);
        a.mov(r11, __qword_ptr[rsp + 8]);
        a.add(rsp, errorCode ? 24 : 16);
        a.push(0);
        a.push(rcx);
        a.push(r11);
        a.push(rax);
        a.mov(eax, Xen.__HYPERVISOR_iret);
        a.syscall();
        a.ud2();
    }
}
