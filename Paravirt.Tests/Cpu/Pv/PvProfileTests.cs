using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using static Iced.Intel.AssemblerRegisters;
using K = Paravirt.Tests.Cpu.Pv.PvTestKernel;

namespace Paravirt.Tests.Cpu.Pv;

/// <summary>
/// The guest profile samples every <see cref="GuestProfile.SampleInterval"/> instructions at the
/// instruction reached, so code that makes hypercalls does not collect the instructions of the
/// code before it (which crediting whole slices to the rip they ended at did).
/// </summary>
public sealed class PvProfileTests : IDisposable
{
    private const ulong Busy = K.CodeVa + 0x1000; // a loop of 200 instructions without hypercalls
    private const ulong Scratch = K.DataVa + 0x800;
    private const string Map = """
        0000000000100000 T caller_with_hypercall
        0000000000101000 T busy_loop
        0000000000102000 T after
        """;

    private readonly GuestProfile _profile = new();
    private readonly Hypervisor _hv;

    public PvProfileTests() => _hv = new Hypervisor(new HypervisorOptions { MemoryMiB = 64, Profile = _profile });

    public void Dispose() => _hv.Dispose();

    [Fact]
    public async Task Samples_Fall_Where_The_Instructions_Run_Not_Where_The_Hypercalls_Are()
    {
        var k = new K(_hv, "profiled");
        k.LoadAt(Busy, a =>
        {
            var again = a.CreateLabel();
            a.mov(ecx, 100);
            a.Label(ref again);
            a.dec(ecx);
            a.jnz(again);
            a.ret();
        });
        k.Load(a =>
        {
            var loop = a.CreateLabel();
            a.mov(r12d, 20_000);
            a.Label(ref loop);
            a.mov(rbx, Busy);
            a.call(rbx);
            K.Hypercall(a, Xen.__HYPERVISOR_xen_version, rdi: 0, rsi: 0); // XENVER_version: returns at once
            a.dec(r12d);
            a.jnz(loop);
            k.Shutdown(a, Scratch);
        });

        var exit = await k.RunAsync();

        exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
        var functions = _profile.ByFunction(GuestSymbols.Parse(new StringReader(Map))).ToDictionary(f => f.Where, f => f.Instructions);
        var busy = functions.GetValueOrDefault("busy_loop");
        var caller = functions.GetValueOrDefault("caller_with_hypercall");
        _profile.Instructions.Should().BeGreaterThan(300 * GuestProfile.SampleInterval, "20,000 rounds of about 210 instructions are some 420 samples");
        // Per round: 202 instructions in busy_loop, 8 in the caller (mov, call, 3 argument moves, syscall, dec, jnz).
        ((double)busy / (busy + caller)).Should().BeInRange(0.90, 0.99, $"busy_loop runs 202 of every 210 instructions (samples: busy {busy}, caller {caller})");
        k.Domain.Destroy();
    }
}
