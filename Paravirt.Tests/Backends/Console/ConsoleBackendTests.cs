using System.Buffers;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Backends.Console;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Console;

/// <summary>The host's end of the PV console ring (what xenconsoled does), seen from a raw guest driver and the host's pipes.</summary>
public sealed class ConsoleBackendTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => hv.Dispose();

    private static byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);

    private static byte[] Pattern(int length)
    {
        var bytes = new byte[length];
        for (var i = 0; i < length; i++)
        {
            bytes[i] = (byte)('a' + (i * 7 % 26));
        }

        return bytes;
    }

    private Domain Run(string name, Action<GuestConsoleRing> body, DomainLimits? limits = null)
    {
        var d = hv.CreateDomain(new DomainConfig { Name = name, MemoryMiB = 4, Limits = limits ?? DomainLimits.Default });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            body(new GuestConsoleRing(new GuestContext(cpu, si)));
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        return d;
    }

    private static async Task StoppedAsync(Domain d)
    {
        var backend = (ConsoleBackend)d.Console.Backend!;
        await backend.Pump.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task The_Builder_Gives_The_Guest_A_Console_Port_Bound_By_Domain0_And_An_Empty_Page()
    {
        evtchn_status status = default;
        uint port = 0;
        var indices = new uint[4];
        var d = Run("ports", c =>
        {
            port = c.Port;
            status = c.Status();
            indices[0] = c.Index(GuestConsoleRing.InCons);
            indices[1] = c.Index(GuestConsoleRing.InProd);
            indices[2] = c.Index(GuestConsoleRing.OutCons);
            indices[3] = c.Index(GuestConsoleRing.OutProd);
        });
        await d.ExitWithinAsync();

        port.Should().NotBe(0u, "start_info.console.domU.evtchn names the console's port");
        port.Should().NotBe(d.StoreEvtchn, "the console has a port of its own");
        status.status.Should().Be((uint)EventChannel.EVTCHNSTAT_interdomain, "the console backend bound the port when the domain was created");
        status.u.interdomain.dom.Should().Be(0, "the backend is domain 0");
        indices.Should().AllBeEquivalentTo(0u, "the console page starts as an empty xencons_interface");
        d.Destroy();
    }

    [Fact]
    public async Task Ring_Output_Reaches_The_Hosts_Output_Pipe_And_Its_Lines()
    {
        var d = Run("ringout", c => c.Write(Ascii("hello from the ring\nsecond\n")));
        var bytes = await ConsolePipe.ReadExactlyAsync(d.Console.Output, 27);
        Encoding.ASCII.GetString(bytes).Should().Be("hello from the ring\nsecond\n");
        await d.ExitWithinAsync();
        d.Console.TryReadLine(out var first).Should().BeTrue();
        first.Should().Be("hello from the ring");
        d.Console.TryReadLine(out var second).Should().BeTrue();
        second.Should().Be("second");
        d.Console.BytesWritten.Should().Be(27);
        d.Destroy();
    }

    [Fact]
    public async Task Early_ConsoleIo_Output_And_Ring_Output_Arrive_In_Order()
    {
        var d = Run("ordered", c =>
        {
            c.ConsoleIo(Ascii("early: console_io\n"));
            c.Write(Ascii("then: the ring\n"));
            c.WaitOutputConsumed(); // the backend has taken it, so it is ahead of what follows
            c.ConsoleIo(Ascii("late: console_io again\n"));
            c.Write(Ascii("last: the ring again\n"));
        });
        await d.ExitWithinAsync();
        d.Destroy();
        var all = Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(d.Console.Output));
        all.Should().Be("early: console_io\nthen: the ring\nlate: console_io again\nlast: the ring again\n");
        var lines = new List<string>();
        while (d.Console.TryReadLine(out var line))
        {
            lines.Add(line);
        }

        lines.Should().Equal("early: console_io", "then: the ring", "late: console_io again", "last: the ring again");
    }

    [Fact]
    public async Task Output_Larger_Than_The_Ring_Arrives_Whole_Through_Notifications()
    {
        var sent = Pattern(40_000);
        var d = Run("bulk", c => c.Write(sent));
        var got = await ConsolePipe.ReadExactlyAsync(d.Console.Output, sent.Length);
        got.Should().Equal(sent, "the guest waits for room, and the backend notifies it after each drain");
        await d.ExitWithinAsync();
        d.Console.DroppedBytes.Should().Be(0);
        d.Console.BytesWritten.Should().Be(sent.Length);
        d.Destroy();
    }

    [Fact]
    public async Task Host_Input_Reaches_The_Guests_In_Ring_With_Backpressure_And_Without_Loss()
    {
        var typed = Pattern(10_000);
        byte[]? received = null;
        var d = hv.CreateDomain(new DomainConfig { Name = "typist", MemoryMiB = 4 });

        // The guest is not running yet: the in ring (1024) and the backend's staging (1024) fill,
        // and the rest waits in the pipe, so the host's flush must wait.
        d.Console.Input.Write(typed);
        var flush = d.Console.Input.FlushAsync(TestContext.Current.CancellationToken);
        flush.IsCompleted.Should().BeFalse("more than InputBufferBytes wait for a guest that does not read");

        d.Start(new DelegateKernel((cpu, si) =>
        {
            received = new GuestConsoleRing(new GuestContext(cpu, si)).Read(typed.Length);
            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        var result = await flush.AsTask().WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        result.IsCompleted.Should().BeFalse("the backend still reads input");
        await d.ExitWithinAsync();
        received.Should().Equal(typed);
        d.Console.InputBytesDelivered.Should().Be(typed.Length);
        d.Destroy();
    }

    [Theory]
    [InlineData("out")]
    [InlineData("in")]
    public async Task A_Guest_With_Garbage_Ring_Indices_Gets_Its_Console_Stopped_And_Everything_Else_Goes_On(string ring)
    {
        var bad = Run("garbage-" + ring, c =>
        {
            c.Write(Ascii("before\n"));
            c.WaitOutputConsumed();
            if (ring == "out")
            {
                c.SetIndex(GuestConsoleRing.OutProd, c.Index(GuestConsoleRing.OutCons) + 100_000);
            }
            else
            {
                c.SetIndex(GuestConsoleRing.InCons, c.Index(GuestConsoleRing.InProd) + 5000);
            }

            c.Notify();
            c.ConsoleIo(Ascii("still here\n"));
        });
        await bad.ExitWithinAsync();
        await StoppedAsync(bad);

        bad.Console.RingError.Should().Contain($"ring's {ring}:").And.Contain("stopped serving");
        bad.Exit!.State.Should().Be(DomainState.Shutdown, "a broken console ring stops the console, not the domain");
        bad.Console.Input.Write(Ascii("x"));
        var flushing = async () => await bad.Console.Input.FlushAsync(TestContext.Current.CancellationToken);
        await flushing.Should().ThrowAsync<InvalidOperationException>().WithMessage("*console ring was stopped*");

        var good = Run("good-" + ring, c => c.Write(Ascii("unaffected\n")));
        Encoding.ASCII.GetString(await ConsolePipe.ReadExactlyAsync(good.Console.Output, 11)).Should().Be("unaffected\n");
        await good.ExitWithinAsync();
        good.Console.RingError.Should().BeNull();

        bad.Destroy();
        Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(bad.Console.Output)).Should().Be("before\nstill here\n", "console_io output goes on");
        good.Destroy();
    }

    [Fact]
    public async Task A_Destroyed_Domains_Output_Completes_After_What_It_Left_In_The_Ring()
    {
        var d = Run("parting", c =>
        {
            // Written without a notification: only the backend's last drain on destroy sees it.
            var prod = c.Index(GuestConsoleRing.OutProd);
            c.Put(prod, Ascii("last words\n"));
            c.SetIndex(GuestConsoleRing.OutProd, prod + 11);
        });
        await d.ExitWithinAsync();
        d.Destroy();
        Encoding.ASCII.GetString(await ConsolePipe.ReadToEndAsync(d.Console.Output)).Should().Be("last words\n");
        d.Console.Input.Write(Ascii("too late"));
        var flushed = await d.Console.Input.FlushAsync(TestContext.Current.CancellationToken);
        flushed.IsCompleted.Should().BeTrue("nobody reads a destroyed domain's input");
        await foreach (var line in d.Console.ReadLinesAsync(TestContext.Current.CancellationToken))
        {
            line.Should().Be("last words");
        }
    }

    [Fact]
    public async Task A_Host_That_Does_Not_Read_Never_Stalls_The_Guest_And_Output_Stays_Bounded()
    {
        const int budget = 4096;
        var sent = Pattern(200_000);
        var d = Run("spew", c => c.Write(sent), DomainLimits.Default with { ConsoleBufferBytes = budget });
        await d.ExitWithinAsync(); // the guest finished all its output with nobody reading
        d.Destroy();
        var kept = await ConsolePipe.ReadToEndAsync(d.Console.Output);
        d.Console.BytesWritten.Should().Be(sent.Length);
        d.Console.DroppedBytes.Should().BePositive();
        (kept.Length + d.Console.DroppedBytes).Should().Be(sent.Length, "every byte is either kept or counted as dropped");
        kept.Length.Should().BeLessThanOrEqualTo(budget + (int)GuestConsoleRing.OutSize, "the pipe holds at most the budget plus one ring's drain");
        kept.Should().Equal(sent.AsSpan(0, kept.Length).ToArray(), "what is kept is the beginning, in order; later output was dropped");
    }

    [Fact]
    public async Task The_Console_Keys_Are_In_XenStore_As_Libxl_Writes_Them()
    {
        uint port = 0;
        ulong ringRef = 0;
        var d = Run("keys", c =>
        {
            port = c.Port;
            ringRef = c.Page >> 12;
        });
        await d.ExitWithinAsync();
        var front = $"/local/domain/{d.Id}/console";
        var back = $"/local/domain/0/backend/console/{d.Id}/0";
        var xs = hv.XenStore;
        xs.Read($"{front}/ring-ref").Should().Be(ringRef.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read($"{front}/port").Should().Be(port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read($"{front}/type").Should().Be("xenconsoled");
        xs.Read($"{front}/output").Should().Be("pty");
        xs.Read($"{front}/tty").Should().Be("");
        xs.Read($"{front}/limit").Should().Be(DomainLimits.Default.ConsoleBufferBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read($"{front}/backend").Should().Be(back);
        xs.Read($"{front}/backend-id").Should().Be("0");
        xs.GetPerms(front).Should().Equal("n0", $"r{d.Id}");
        xs.GetPerms($"{front}/ring-ref").Should().Equal("n0", $"r{d.Id}");
        xs.GetPerms($"{front}/backend-id").Should().Equal($"n{d.Id}", "r0");
        xs.Read($"{back}/frontend").Should().Be(front);
        xs.Read($"{back}/frontend-id").Should().Be(d.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read($"{back}/online").Should().Be("1");
        xs.Read($"{back}/state").Should().Be("1");
        xs.Read($"{back}/protocol").Should().Be("vt100");

        d.Destroy();
        xs.Read(front).Should().BeNull("the domain's directory goes with it");
        xs.Read($"/local/domain/0/backend/console/{d.Id}").Should().BeNull("the backend directory goes too");
    }
}
