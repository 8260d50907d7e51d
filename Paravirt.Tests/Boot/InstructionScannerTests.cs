using Iced.Intel;
using Paravirt.Core.Abi;
using Paravirt.Core.Boot.Elf;
using Paravirt.Tests.Support;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Tests.Boot;

/// <summary>The sensitive-instruction scanner: exact counts on code assembled here with Iced, and PV GRUB.</summary>
public sealed class InstructionScannerTests
{
    private const ulong Text = 0xffffffff80001000;

    private static ScanReport ScanCode(Action<Assembler> emit, ulong? page = null)
    {
        var b = new TinyElf().Load(Text, TinyElf.Code(Text, emit));
        if (page is { } p)
        {
            b.XenNumber(ElfNote.XEN_ELFNOTE_HYPERCALL_PAGE, p);
        }

        return InstructionScanner.Scan(ElfFile.Parse(b.Build()));
    }

    [Fact]
    public void Counts_Each_Class_Exactly_On_Assembled_Code()
    {
        var report = ScanCode(a =>
        {
            a.cli(); a.cli(); a.sti();                                          // InterruptFlag 3
            a.hlt();                                                            // Halt 1
            a.@in(al, dx); a.@out(dx, al); a.insb(); a.outsd();                 // PortIo 4
            a.lgdt(__[rax]); a.lidt(__[rax]); a.lldt(ax); a.ltr(ax);            // DescriptorTableLoad 4
            a.mov(cr3, rax); a.mov(rax, cr0); a.clts(); a.lmsw(ax);             // ControlRegister 4
            a.mov(dr7, rax); a.mov(rax, dr6);                                   // DebugRegister 2
            a.rdmsr(); a.wrmsr();                                               // Msr 2
            a.invlpg(__[rax]); a.invpcid(rax, __[rbx]);                         // TlbInvalidate 2
            a.wbinvd(); a.invd();                                               // CacheInvalidate 2
            a.swapgs();                                                         // Swapgs 1
            a.sysretq(); a.sysexitq();                                          // SysretSysexit 2
            a.xsetbv();                                                         // OtherPrivileged 1
            a.sgdt(__[rax]); a.sidt(__[rax]); a.sldt(ax); a.str(ax);            // DescriptorTableStore 4
            a.smsw(ax);                                                         // Smsw 1
            a.pushfq(); a.popfq();                                              // PushfPopf 2
            a.lar(eax, ebx); a.lsl(eax, ebx); a.verr(ax); a.verw(ax);           // SegmentCheck 4
            a.mov(ax, ds); a.mov(ds, ax); a.push(fs); a.pop(gs);                // SegmentRegister 4
            a.iretq();                                                          // Iret 1
            a.db(0xff, 0x18); a.db(0xff, 0x28); a.db(0xcb);                     // FarTransfer 3: call far [rax], jmp far [rax], retf
            a.int3(); a.@int(0x80); a.int1();                                   // SoftwareInterrupt 3
            a.cpuid();                                                          // Cpuid 1
            a.rdtsc(); a.rdtscp(); a.rdpmc();                                   // Counters 3
            a.syscall();                                                        // Syscall 1
            a.vmcall(); a.vmmcall();                                            // VmCall 2
            a.mov(rax, rbx); a.add(rax, 8); a.call(Text); a.ret();              // not sensitive: 4
        });

        var expected = new Dictionary<InstructionClass, long>
        {
            [InstructionClass.InterruptFlag] = 3,
            [InstructionClass.Halt] = 1,
            [InstructionClass.PortIo] = 4,
            [InstructionClass.DescriptorTableLoad] = 4,
            [InstructionClass.ControlRegister] = 4,
            [InstructionClass.DebugRegister] = 2,
            [InstructionClass.Msr] = 2,
            [InstructionClass.TlbInvalidate] = 2,
            [InstructionClass.CacheInvalidate] = 2,
            [InstructionClass.Swapgs] = 1,
            [InstructionClass.SysretSysexit] = 2,
            [InstructionClass.OtherPrivileged] = 1,
            [InstructionClass.DescriptorTableStore] = 4,
            [InstructionClass.Smsw] = 1,
            [InstructionClass.PushfPopf] = 2,
            [InstructionClass.SegmentCheck] = 4,
            [InstructionClass.SegmentRegister] = 4,
            [InstructionClass.Iret] = 1,
            [InstructionClass.FarTransfer] = 3,
            [InstructionClass.SoftwareInterrupt] = 3,
            [InstructionClass.Cpuid] = 1,
            [InstructionClass.Counters] = 3,
            [InstructionClass.Syscall] = 1,
            [InstructionClass.VmCall] = 2,
        };
        InstructionClasses.All.ToDictionary(c => c, report.Count).Should().Equal(expected);
        report.Instructions.Should().Be(expected.Values.Sum() + 4);
        report.InvalidInstructions.Should().Be(0);
        report.Source.Should().Be("PT_LOAD segments with PF_X");
        report.Regions.Should().ContainSingle().Which.Region.VirtualAddress.Should().Be(Text);
        report.Forms(InstructionClass.ControlRegister).Should().BeEquivalentTo(new Dictionary<string, long>
        {
            ["mov to cr"] = 1,
            ["mov from cr"] = 1,
            ["clts"] = 1,
            ["lmsw"] = 1,
        });
        report.Forms(InstructionClass.SegmentRegister).Should().BeEquivalentTo(new Dictionary<string, long>
        {
            ["mov from sreg"] = 1,
            ["mov to sreg"] = 1,
            ["push fs"] = 1,
            ["pop gs"] = 1,
        });
        report.Count(SensitivityKind.Privileged).Should().Be(28);
        report.Count(SensitivityKind.SensitiveUnprivileged).Should().Be(22);
        report.Count(SensitivityKind.Configurable).Should().Be(4);
        report.Count(SensitivityKind.HypervisorEntry).Should().Be(3);
    }

    [Fact]
    public void Ordinary_Code_Has_No_Sensitive_Instructions()
    {
        var report = ScanCode(a =>
        {
            a.push(rbp); a.mov(rbp, rsp); a.mov(eax, __dword_ptr[rdi + 8]); a.imul(eax, esi);
            a.lea(rax, __[rax + rax * 2]); a.pop(rbp); a.ret();
        });

        InstructionClasses.All.Sum(report.Count).Should().Be(0);
        report.Instructions.Should().Be(7);
        report.Hypercalls.Should().BeEmpty();
    }

    [Fact]
    public void Calls_Into_The_Hypercall_Page_Are_Tabulated_Per_Hypercall()
    {
        const ulong page = 0xffffffff80400000;
        var report = ScanCode(
            a =>
            {
                a.call(page + (32 * Xen.__HYPERVISOR_sched_op));
                a.call(page + (32 * Xen.__HYPERVISOR_sched_op));
                a.call(page + (32 * Xen.__HYPERVISOR_event_channel_op));
                a.jmp(page + (32 * Xen.__HYPERVISOR_xen_version));  // a tail call
                a.call(page + 4096);                                  // just past the page: not a hypercall
                a.call(page - 32);                                    // just before it: not one either
            },
            page);

        report.HypercallPage.Should().Be(page);
        report.Hypercalls.Should().Equal(
            new HypercallSites(Xen.__HYPERVISOR_xen_version, "xen_version", 1, 0, 0),
            new HypercallSites(Xen.__HYPERVISOR_sched_op, "sched_op", 2, 0, 0),
            new HypercallSites(Xen.__HYPERVISOR_event_channel_op, "event_channel_op", 1, 0, 0));
    }

    [Fact]
    public void Without_A_Hypercall_Page_Note_No_Call_Counts_As_A_Page_Call()
    {
        var report = ScanCode(a => a.call(0xffffffff80400000 + (32 * 29)));

        report.HypercallPage.Should().BeNull();
        report.Hypercalls.Should().BeEmpty();
    }

    [Fact]
    public void Direct_Syscall_Hypercalls_Take_Their_Number_From_A_Preceding_Constant_In_Rax()
    {
        var report = ScanCode(a =>
        {
            var skip = a.CreateLabel();
            a.mov(eax, Xen.__HYPERVISOR_sched_op); a.syscall();
            a.mov(rax, Xen.__HYPERVISOR_mmu_update); a.mov(rdi, rsi); a.syscall();  // rdi does not clobber rax
            a.xor(eax, eax); a.syscall();                                           // 0: set_trap_table
            a.mov(eax, Xen.__HYPERVISOR_grant_table_op); a.mov(eax, ebx); a.syscall(); // rax overwritten: unknown
            a.mov(eax, Xen.__HYPERVISOR_memory_op); a.jne(skip); a.Label(ref skip); a.syscall(); // a branch between: unknown
            a.syscall();                                                            // nothing before: unknown
            a.mov(eax, Xen.__HYPERVISOR_vcpu_op); a.vmcall();
        });

        report.Hypercalls.Should().Equal(
            new HypercallSites(Xen.__HYPERVISOR_set_trap_table, "set_trap_table", 0, 1, 0),
            new HypercallSites(Xen.__HYPERVISOR_mmu_update, "mmu_update", 0, 1, 0),
            new HypercallSites(Xen.__HYPERVISOR_vcpu_op, "vcpu_op", 0, 0, 1),
            new HypercallSites(Xen.__HYPERVISOR_sched_op, "sched_op", 0, 1, 0));
        report.SyscallsWithUnknownNumber.Should().Be(3);
        report.VmcallsWithUnknownNumber.Should().Be(0);
        report.Count(InstructionClass.Syscall).Should().Be(6);
    }

    [Fact]
    public void Sections_Are_Scanned_When_No_Segment_Is_Executable()
    {
        var code = TinyElf.Code(0, a => { a.cli(); a.hlt(); a.ret(); });
        var image = new TinyElf { Type = 1 }
            .Section(".text", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC | TinyElf.SHF_EXECINSTR, code)
            .Section(".data", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC, [0xfa, 0xfa, 0xfa])
            .Build();

        var report = InstructionScanner.Scan(ElfFile.Parse(image));

        report.Source.Should().Be("sections with SHF_EXECINSTR");
        report.Regions.Should().ContainSingle().Which.Region.Name.Should().Be("section 1 .text");
        report.Count(InstructionClass.InterruptFlag).Should().Be(1, "the cli bytes in .data are not code");
        report.Count(InstructionClass.Halt).Should().Be(1);
    }

    [Fact]
    public void A_Segment_Embedding_Elf_Objects_Is_Split_Into_Their_Code_Sections_And_The_Rest()
    {
        // Like GRUB's module area: a header, then a relocatable object with .text and .data.
        var module = new TinyElf { Type = 1 }
            .Section(".text", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC | TinyElf.SHF_EXECINSTR, TinyElf.Code(0, a => { a.cli(); a.sti(); a.ret(); }))
            .Section(".data", TinyElf.SHT_PROGBITS, TinyElf.SHF_ALLOC, [0xf4, 0xf4, 0xf4, 0xf4])
            .Build();
        byte[] header = [0xfa, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90]; // a cli outside any object
        var segment = header.Concat(module).ToArray();
        var report = InstructionScanner.Scan(ElfFile.Parse(new TinyElf().Load(0x400000, segment).Build()));

        report.Regions.Select(r => r.Region.Name).Should().Equal("segment 0 objects", "segment 0 rest");
        var objects = report.Regions[0];
        objects.Count(InstructionClass.InterruptFlag).Should().Be(2);
        objects.Count(InstructionClass.Halt).Should().Be(0, "the hlt bytes are the object's .data");
        objects.Instructions.Should().Be(3);
        objects.Region.Pieces.Should().Be(1);
        report.Regions[1].Count(InstructionClass.InterruptFlag).Should().Be(1);
        report.Regions[1].Region.Size.Should().Be(8, "the rest is the header before the object");
    }

    [Fact]
    public void A_File_With_Nothing_Executable_Scans_Nothing()
    {
        var report = InstructionScanner.Scan(ElfFile.Parse(new TinyElf().Load(0x1000, [0xfa], TinyElf.PF_R).Build()));

        report.Source.Should().Be("nothing executable");
        report.Regions.Should().BeEmpty();
        report.Instructions.Should().Be(0);
    }

    // Checked with binutils: `objdump -D -b binary -m i386:x86-64 --start-address=0x1000 --stop-address=0xfaef`
    // shows GRUB's six hypercall stubs at 0x11c9..0x1208, each `mov $nr,%rax; syscall; ret` with nr
    // 0x1d, 0x20, 0x0e, 0x1a, 0x14, 0x01; the module area holds three more update_va_mapping and one
    // mmuext_op (`mov $0xe,%rax; syscall` at 0x15e0f3, 0x15e142, 0x15e2e4; `mov $0x1a,%rax` at 0x15e175).
    [Fact]
    public void Debian_PV_Grub_Makes_Direct_Syscall_Hypercalls_And_No_Page_Calls()
    {
        var elf = ElfFile.Open(RealKernel.Path());
        var report = InstructionScanner.Scan(elf);

        report.HypercallPage.Should().BeNull();
        report.Hypercalls.Should().OnlyContain(h => h.PageCalls == 0 && h.Vmcalls == 0);
        report.Hypercalls.Select(h => (h.Name, h.Syscalls)).Should().Equal(
            ("mmu_update", 1L), ("update_va_mapping", 4L), ("grant_table_op", 1L), ("mmuext_op", 2L), ("sched_op", 1L), ("event_channel_op", 1L));
        report.Regions.Select(r => r.Region.Name).Should().Equal("segment 0", "segment 2 objects", "segment 2 rest");
        report.Regions[0].Region.Size.Should().Be(0xeaef);
        report.Regions[0].Count(InstructionClass.Syscall).Should().Be(6);
        report.Regions[1].InvalidInstructions.Should().Be(0, "the modules' .text sections are compiler output, decoded from their start");
    }
}
