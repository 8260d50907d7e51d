using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>A guest that passes the hypervisor nonsense gets an errno; the host and other domains never notice.</summary>
public sealed class HostileGuestTests : IDisposable
{
    private static readonly ulong EntrySize = (ulong)Marshal.SizeOf<multicall_entry>();
    private static readonly ulong ResultOffset = (ulong)Marshal.OffsetOf<multicall_entry>(nameof(multicall_entry.result));

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    private static ulong RamEnd(GuestContext g) => g.ReadStartInfo().nr_pages * (ulong)Paravirt.Core.Memory.MachineMemory.PageSize;

    private static unsafe multicall_entry Entry(ulong op, params ulong[] args)
    {
        var e = new multicall_entry { op = op, result = 0xAAAA };
        for (var i = 0; i < args.Length; i++)
        {
            e.args[i] = args[i];
        }

        return e;
    }

    private void HostStillServesGuests()
    {
        long version = 0;
        var exit = GuestRunner.Run(_hv, g => version = g.Hypercall(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
        exit.State.Should().Be(DomainState.Shutdown);
        version.Should().Be((4L << 16) | 17);
        _hv.Domains.Should().BeEmpty();
        _hv.FreeFrames.Should().Be(_hv.TotalFrames, "every frame came back");
    }

    [Fact]
    public void Xen_Version_Sub_Ops_Given_Wild_Pointers_Return_EFAULT()
    {
        int[] subOps =
        [
            XenVersion.XENVER_extraversion, XenVersion.XENVER_compile_info, XenVersion.XENVER_capabilities,
            XenVersion.XENVER_changeset, XenVersion.XENVER_platform_parameters, XenVersion.XENVER_get_features,
            XenVersion.XENVER_guest_handle, XenVersion.XENVER_commandline, XenVersion.XENVER_build_id,
        ];
        var results = new List<(int SubOp, ulong Pointer, long Rc)>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            var end = RamEnd(g);
            ulong[] wild =
            [
                end,                        // the first byte past RAM
                end - 2,                    // straddles the end of RAM
                1UL << 47,                  // a canonical-looking kernel address, far from RAM
                0xFFFF_8000_0000_0000UL,    // the hypervisor's half of a real PV address space
                Paravirt.Core.Memory.PhysMap.MaxGfn << 12,      // the highest frame a physmap may hold
                ulong.MaxValue - 1,         // wraps around the address space
                ulong.MaxValue,
            ];
            foreach (var op in subOps)
            {
                foreach (var p in wild)
                {
                    results.Add((op, p, g.Hypercall(Xen.__HYPERVISOR_xen_version, (ulong)op, p)));
                }
            }
        });

        exit.State.Should().Be(DomainState.Shutdown, "a bad pointer is the guest's error, not a crash");
        results.Should().HaveCount(subOps.Length * 7);
        results.Should().OnlyContain(r => r.Rc == -(long)Errno.EFAULT, "every wild pointer is -EFAULT; offenders: {0}",
            string.Join(", ", results.Where(r => r.Rc != -(long)Errno.EFAULT).Select(r => $"sub-op {r.SubOp} at {r.Pointer:x} -> {r.Rc}")));
        HostStillServesGuests();
    }

    [Fact]
    public void Console_Write_Of_A_Huge_Count_Over_Unmapped_Memory_Returns_EFAULT()
    {
        long beyond = 0, wrapping = 0, runsOffTheEnd = 0;
        var exit = GuestRunner.Run(_hv, g =>
        {
            var end = RamEnd(g);
            beyond = g.Hypercall(Xen.__HYPERVISOR_console_io, (ulong)Xen.CONSOLEIO_write, 0xFFFF_FFFF, end);
            wrapping = g.Hypercall(Xen.__HYPERVISOR_console_io, (ulong)Xen.CONSOLEIO_write, 0xFFFF_FFFF, ulong.MaxValue - 10);

            // Starts in mapped memory and runs on past the end of RAM.
            g.Cpu.Memory.Write(end - 6, "tail\n\0"u8);
            runsOffTheEnd = g.Hypercall(Xen.__HYPERVISOR_console_io, (ulong)Xen.CONSOLEIO_write, 0xFFFF_FFFF, end - 4096);
        });

        exit.State.Should().Be(DomainState.Shutdown);
        beyond.Should().Be(-(long)Errno.EFAULT);
        wrapping.Should().Be(-(long)Errno.EFAULT);
        runsOffTheEnd.Should().Be(-(long)Errno.EFAULT);
        HostStillServesGuests();
    }

    [Theory]
    [InlineData(63UL)]
    [InlineData(64UL)]
    [InlineData(1000UL)]
    [InlineData(0x8000_0000_0000_0000UL)]
    [InlineData(ulong.MaxValue)]
    public void Unknown_Hypercall_Number_Returns_ENOSYS(ulong nr)
    {
        long rc = 0;
        var exit = GuestRunner.Run(_hv, g => rc = g.Cpu.Hypercall(nr, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue));
        rc.Should().Be(-(long)Errno.ENOSYS);
        exit.State.Should().Be(DomainState.Shutdown);
    }

    [Theory]
    [InlineData(1025UL)]
    [InlineData(0x7FFF_FFFFUL)]
    [InlineData(0xFFFF_FFFFUL)]
    public void Multicall_With_More_Entries_Than_The_Limit_Returns_EINVAL_And_Runs_None(ulong nrCalls)
    {
        DomainLimits.Default.MaxMulticallEntries.Should().Be(1024, "the cases above are written against the default limit");
        long rc = 0;
        ulong firstResult = 0;
        GuestRunner.Run(_hv, g =>
        {
            var list = g.Scratch + 0x1000;
            g.Cpu.Memory.Write(list, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, nrCalls);
            firstResult = g.Cpu.Memory.Read<multicall_entry>(list).result;
        });
        rc.Should().Be(-(long)Errno.EINVAL);
        firstResult.Should().Be(0xAAAAUL, "no entry ran");
    }

    [Fact]
    public void Multicall_Limit_Follows_The_Domain_Limits()
    {
        long over = 0, at = 0;
        GuestRunner.Run(_hv, g =>
        {
            var list = g.Scratch + 0x1000;
            for (var i = 0UL; i < 5; i++)
            {
                g.Cpu.Memory.Write(list + (i * EntrySize), Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            }

            over = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 5);
            at = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 4);
        }, new DomainConfig { Name = "small-batches", MemoryMiB = 4, Limits = DomainLimits.Default with { MaxMulticallEntries = 4 } });
        over.Should().Be(-(long)Errno.EINVAL);
        at.Should().Be(0);
    }

    [Fact]
    public void A_Multicall_Entry_That_Overwrites_Its_Own_List_Runs_Each_Entry_From_Its_Copy()
    {
        long rc = -1;
        var after = new multicall_entry[3];
        var exit = GuestRunner.Run(_hv, g =>
        {
            var list = g.Scratch + 0x1000;

            // Entry 0 asks for the capabilities string (1024 bytes) to be written over the list itself:
            // its own op and args, and all of entries 1 and 2 (which become op 0, unimplemented).
            g.Cpu.Memory.Write(list, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_capabilities, list));
            g.Cpu.Memory.Write(list + EntrySize, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            g.Cpu.Memory.Write(list + (2 * EntrySize), Entry(Xen.__HYPERVISOR_multicall, list, 3));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 3);
            for (var i = 0; i < 3; i++)
            {
                after[i] = g.Cpu.Memory.Read<multicall_entry>(list + ((ulong)i * EntrySize));
            }
        });

        exit.State.Should().Be(DomainState.Shutdown);
        rc.Should().Be(0);
        after[0].op.Should().Be(BitConverter.ToUInt64("xen-3.0-"u8), "the string landed on the list");
        after[0].result.Should().Be(0UL, "the result is written after the call, over the string");
        ((long)after[1].result).Should().Be(-(long)Errno.ENOSYS, "entry 1 was read after entry 0 zeroed it");
        ((long)after[2].result).Should().Be(-(long)Errno.ENOSYS);
        HostStillServesGuests();
    }

    [Fact]
    public void A_Full_Multicall_Whose_Every_Entry_Is_A_Multicall_Of_Itself_Terminates()
    {
        var max = (ulong)DomainLimits.Default.MaxMulticallEntries;
        long rc = -1;
        var results = new List<long>();
        var exit = GuestRunner.Run(_hv, g =>
        {
            var list = g.Scratch + 0x1000;
            for (var i = 0UL; i < max; i++)
            {
                g.Cpu.Memory.Write(list + (i * EntrySize), Entry(Xen.__HYPERVISOR_multicall, list, max));
            }

            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, max);
            for (var i = 0UL; i < max; i++)
            {
                results.Add((long)g.Cpu.Memory.Read<ulong>(list + (i * EntrySize) + ResultOffset));
            }
        });

        exit.State.Should().Be(DomainState.Shutdown);
        rc.Should().Be(0);
        results.Should().HaveCount((int)max).And.OnlyContain(r => r == -(long)Errno.EINVAL, "a multicall may not nest");
        HostStillServesGuests();
    }

    [Fact]
    public void A_Multicall_List_Running_Off_The_End_Of_Ram_Runs_The_Mapped_Entries_Then_Returns_EFAULT()
    {
        long rc = 0;
        var results = new ulong[2];
        var exit = GuestRunner.Run(_hv, g =>
        {
            var list = RamEnd(g) - (2 * EntrySize);
            g.Cpu.Memory.Write(list, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_version));
            g.Cpu.Memory.Write(list + EntrySize, Entry(Xen.__HYPERVISOR_xen_version, XenVersion.XENVER_pagesize));
            rc = g.Hypercall(Xen.__HYPERVISOR_multicall, list, 1000);
            results[0] = g.Cpu.Memory.Read<multicall_entry>(list).result;
            results[1] = g.Cpu.Memory.Read<multicall_entry>(list + EntrySize).result;
        });

        exit.State.Should().Be(DomainState.Shutdown);
        rc.Should().Be(-(long)Errno.EFAULT);
        results.Should().Equal((4UL << 16) | 17, 4096UL);
    }

    [Fact]
    public async Task A_Guest_Cannot_Reach_Another_Domains_Frames_And_Faulting_Crashes_Only_Itself()
    {
        const ulong secret = 0x5EC2_E7D0_4A11_0BADUL;
        using var victimReady = new SemaphoreSlim(0);
        using var victimMayExit = new ManualResetEventSlim();
        var victimMfns = new List<ulong>();

        var victim = _hv.CreateDomain(new DomainConfig { Name = "victim", MemoryMiB = 4 });
        victim.Start(new DelegateKernel((cpu, startInfo) =>
        {
            var si = cpu.Memory.Read<start_info>(startInfo);
            var page = si.pt_base + 0x1000;
            for (var off = 0UL; off < 4096; off += 8)
            {
                cpu.Memory.Write(page + off, secret);
            }

            // Machine numbers the victim knows about itself: where its secret, its xenstore
            // page and its shared_info live in machine memory.
            victimMfns.Add(cpu.Memory.Read<ulong>(si.mfn_list + ((page >> 12) * 8)));
            victimMfns.Add(si.store_mfn);
            victimMfns.Add(si.console.domU.mfn);
            victimMfns.Add(si.shared_info >> 12);
            victimReady.Release();
            victimMayExit.Wait(GuestRunner.Timeout);
            DomainLifecycleTests.ShutdownFrom(cpu, startInfo, Sched.SHUTDOWN_poweroff);
        }));
        (await victimReady.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken))
            .Should().BeTrue("the victim should have written its secret within the timeout");

        var sawSecret = new List<string>();
        var faultedAt = new List<ulong>();
        ulong ramEnd = 0;
        var attacker = _hv.CreateDomain(new DomainConfig { Name = "attacker", MemoryMiB = 4 });
        attacker.Start(new DelegateKernel((cpu, startInfo) =>
        {
            var si = cpu.Memory.Read<start_info>(startInfo);
            ramEnd = si.nr_pages * 4096;
            var page = new byte[4096];

            // Everything the attacker can address as RAM is its own.
            for (var gpa = 0UL; gpa < ramEnd; gpa += 4096)
            {
                cpu.Memory.Read(gpa, page);
                if (MemoryMarshal.Cast<byte, ulong>(page).Contains(secret))
                {
                    sawSecret.Add($"own gpa {gpa:x}");
                }
            }

            // Machine numbers used as guest-physical addresses reach only the attacker's physmap.
            foreach (var mfn in victimMfns)
            {
                try
                {
                    cpu.Memory.Read(mfn << 12, page);
                    if (MemoryMarshal.Cast<byte, ulong>(page).Contains(secret))
                    {
                        sawSecret.Add($"victim mfn {mfn:x} as gpa");
                    }
                }
                catch (GuestFaultException e)
                {
                    faultedAt.Add(e.Address);
                }
            }

            // A read past the end of its RAM, unhandled: a page fault with no fixup.
            cpu.Memory.Read<ulong>(ramEnd);
            sawSecret.Add("the read past the end of RAM did not fault");
        }));

        try
        {
            await attacker.ExitWithinAsync();
            attacker.State.Should().Be(DomainState.Crashed);
            attacker.Exit!.Reason.Should().Contain(nameof(GuestFaultException)).And.Contain($"0x{ramEnd:x}", "the crash names the faulting address");
            sawSecret.Should().BeEmpty("no guest-physical address of the attacker reaches the victim's memory");
            faultedAt.Should().OnlyContain(a => a >= ramEnd, "only addresses beyond the attacker's RAM fault");

            victim.State.Should().Be(DomainState.Running, "the attacker's crash does not touch the victim");
            victimMayExit.Set();
            await victim.ExitWithinAsync();
            victim.Exit!.State.Should().Be(DomainState.Shutdown);
            victim.Exit.ShutdownCode.Should().Be(Sched.SHUTDOWN_poweroff);
        }
        finally
        {
            victimMayExit.Set(); // even when an assertion above failed, so the victim is not left waiting
        }

        attacker.Destroy();
        victim.Destroy();
        _hv.FreeFrames.Should().Be(_hv.TotalFrames);
    }
}
