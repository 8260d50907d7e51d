using Paravirt.Core.Cpu.Interpreter;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Tests.Support;

/// <summary>
/// Walks a PV domain's page tables the way its vCPU will: the interpreter's <see cref="Mmu"/> over a
/// <see cref="DomainMachineBus"/> (the domain's own frames, machine addresses), long mode with CR0.WP
/// set so that a read-only leaf refuses supervisor writes. (The walk sets accessed/dirty bits, as a CPU does.)
/// </summary>
internal sealed class BootWalker
{
    private readonly Mmu _mmu;
    private readonly DomainMachineBus _bus;

    public BootWalker(Hypervisor hv, Domain domain, ulong l4Mfn)
    {
        var cpu = new CpuState
        {
            Cr0 = ControlBits.Cr0PE | ControlBits.Cr0MP | ControlBits.Cr0WP | ControlBits.Cr0PG,
            Cr3 = l4Mfn << 12,
            Cpl = 0,
        };
        _bus = new DomainMachineBus(hv.Frames, domain.Id);
        _mmu = new Mmu(_bus, cpu);
    }

    /// <summary>The machine address <paramref name="va"/> maps to, or null when the walk faults.</summary>
    public ulong? Translate(ulong va, bool write = false)
    {
        var status = _mmu.Translate(va, write ? Access.Write : Access.Read, out var pa, out _);
        return status == TranslateStatus.Ok ? pa : null;
    }

    /// <summary>Reads <paramref name="length"/> bytes at a virtual address, page by page; fails the test on a fault.</summary>
    public byte[] Read(ulong va, int length)
    {
        var bytes = new byte[length];
        for (var done = 0; done < length;)
        {
            var at = va + (ulong)done;
            var n = (int)Math.Min((ulong)(length - done), 0x1000 - (at & 0xfff));
            var pa = Translate(at) ?? throw new InvalidOperationException($"0x{at:x} is not mapped by the boot page tables");
            _bus.TryRead(pa, bytes.AsSpan(done, n)).Should().BeTrue($"machine address 0x{pa:x} (for 0x{at:x}) belongs to the domain");
            done += n;
        }

        return bytes;
    }

    public ulong ReadU64(ulong va) => BitConverter.ToUInt64(Read(va, 8));
}
