using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.XenBus;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest;

/// <summary>Slices 7 and 8: the console frontend and the managed-guest entry point.</summary>
public sealed class GuestConsoleAndRuntimeTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Without_A_Console_Event_Channel_Output_Goes_Through_Console_Io()
    {
        var d = StubRunner.Create(hv);
        var console = d.Console;
        bool usesRing = true;
        await StubRunner.StartAsync(d, g =>
        {
            var c = ConsoleFrontend.Connect(g);
            usesRing = c.UsesRing;
            c.Write("via console_io\n").Should().Be(15);
        });

        usesRing.Should().BeFalse("the builder leaves console.domU.evtchn 0 today");
        console.TryReadLine(out var line).Should().BeTrue();
        line.Should().Be("via console_io");
    }

    [Fact]
    public async Task With_A_Console_Event_Channel_Output_And_Input_Use_The_Ring_Page()
    {
        string outBytes = "", input = "";
        uint outProd = 0, inCons = 0;
        bool notifiedOnWrite = false, notifiedOnRead = false;
        await StubRunner.RunAsync(hv, g =>
        {
            // Stand-in for the backend's port: an IPI to ourselves, so each notify comes back to the
            // console's own handler (InputArrived).
            g.Hypercalls.EvtchnBindIpi(0, out var port).Should().Be(0);
            var page = g.Pages.PfnOf(g.Info.ConsoleFrame)!.Value << 12;
            var c = new ConsoleFrontend(g, page, port);
            c.UsesRing.Should().BeTrue();
            c.Write("hello ring\n").Should().Be(11);
            var bytes = new byte[11];
            g.Memory.Read(page + 1024, bytes); // xencons_interface.out
            outBytes = Encoding.ASCII.GetString(bytes);
            outProd = g.Memory.Read<uint>(page + 1024 + 2048 + 12);
            notifiedOnWrite = g.WaitFor(() => c.InputArrived, g.Clock.SystemTimeNs() + 5_000_000_000);

            // The backend's side of input: bytes into in[], then in_prod.
            g.Memory.Write(page, "typed"u8);
            g.Memory.WriteVolatile(page + 1024 + 2048 + 4, 4, 5);
            var buffer = new byte[16];
            var n = c.Read(buffer);
            input = Encoding.ASCII.GetString(buffer, 0, n);
            inCons = g.Memory.Read<uint>(page + 1024 + 2048);
            notifiedOnRead = g.WaitFor(() => c.InputArrived, g.Clock.SystemTimeNs() + 5_000_000_000);
        });

        outBytes.Should().Be("hello ring\n");
        outProd.Should().Be(11);
        input.Should().Be("typed");
        inCons.Should().Be(5);
        notifiedOnWrite.Should().BeTrue("the frontend notifies after output");
        notifiedOnRead.Should().BeTrue("and after consuming input");
    }

    private sealed class HelloKernel : GuestKernel
    {
        public string Devices { get; private set; } = "";

        protected override void Run(GuestRuntime rt)
        {
            rt.Out.WriteLine($"hello from domain {rt.XenBus.DomainId}");
            Devices = string.Join(",", rt.Devices.Select(d => d.NodeName));
            var fired = false;
            rt.Clock.AddTimer(rt.Clock.SystemTimeNs() + 1_000_000, () => fired = true);
            rt.WaitFor(() => fired);
            rt.Grants!.GrantAccess(0, rt.Guest.Pages.Allocate(), true, out _).Should().Be(0);
            rt.Shutdown(Sched.SHUTDOWN_reboot);
        }
    }

    [Fact]
    public async Task A_GuestKernel_Boots_Everything_Runs_The_Program_And_Shuts_Down_With_Its_Reason()
    {
        var d = hv.CreateDomain(StubRunner.Config());
        await using var dev = XenBusBackendDevice.Create(hv, d.Id, "vfoo", 0, new XenBusBackendOptions { Connect = (_, _) => Task.CompletedTask });
        var kernel = new HelloKernel();
        try
        {
            d.Start(kernel);
            var exit = await d.ExitWithinAsync();
            exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
            exit.ShutdownCode.Should().Be((uint)Sched.SHUTDOWN_reboot);
            d.Console.TryReadLine(out var line).Should().BeTrue();
            line.Should().Be($"hello from domain {d.Id}");
            kernel.Devices.Should().Be("device/vfoo/0");
        }
        finally
        {
            d.Destroy();
        }
    }

    private sealed class FailingKernel : GuestKernel
    {
        protected override void Run(GuestRuntime rt) => throw new InvalidOperationException("the program gave up");
    }

    [Fact]
    public async Task An_Exception_Escaping_The_Program_Crashes_The_Domain()
    {
        var d = hv.CreateDomain(StubRunner.Config());
        try
        {
            d.Start(new FailingKernel());
            var exit = await d.ExitWithinAsync();
            exit.State.Should().Be(DomainState.Crashed);
            exit.Reason.Should().Contain("the program gave up");
        }
        finally
        {
            d.Destroy();
        }
    }
}
