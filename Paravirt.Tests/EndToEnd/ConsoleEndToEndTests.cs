using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.EndToEnd;

/// <summary>
/// The PV console end to end: the guest stub's console frontend on the xencons ring, the host's
/// console backend, and the host reading and writing the domain's console as pipes.
/// </summary>
public sealed class ConsoleEndToEndTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => hv.Dispose();

    /// <summary>Writes early output with console_io, says it is ready on the ring, echoes one line of input, and powers off.</summary>
    private sealed class EchoKernel : GuestKernel
    {
        public bool UsedRing { get; private set; }

        protected override void Run(GuestRuntime rt)
        {
            UsedRing = rt.Console.UsesRing;
            rt.Guest.Hypercalls.ConsoleWrite("early\n"u8).Should().Be(0, "CONSOLEIO_write returns 0 when it wrote everything");
            rt.Out.WriteLine("ready");
            rt.Out.Flush();

            var line = new StringBuilder();
            var buffer = new byte[64];
            var deadline = rt.Clock.SystemTimeNs() + 20_000_000_000UL;
            while (!line.ToString().Contains('\n'))
            {
                var n = rt.Console.Read(buffer);
                if (n > 0)
                {
                    line.Append(Encoding.UTF8.GetString(buffer, 0, n));
                }
                else if (!rt.WaitFor(() => rt.Console.InputArrived, deadline))
                {
                    throw new TimeoutException($"no console input within 20 s (got '{line}')");
                }
            }

            rt.Out.WriteLine($"echo: {line.ToString().TrimEnd('\n')}");
            rt.Out.Flush();
        }
    }

    [Fact]
    public async Task A_Guest_Console_Speaks_Through_The_Ring_Both_Ways_After_Its_Early_Output()
    {
        var ct = TestContext.Current.CancellationToken;
        var d = hv.CreateDomain(new DomainConfig { Name = "console-e2e", MemoryMiB = 8 });
        var kernel = new EchoKernel();
        try
        {
            d.Start(kernel);
            var output = new StringBuilder();
            async Task ReadUntilAsync(string marker)
            {
                while (!output.ToString().Contains(marker))
                {
                    ReadResult result;
                    try
                    {
                        result = await d.Console.Output.ReadAsync(ct).AsTask().WaitAsync(GuestRunner.Timeout, ct);
                    }
                    catch (TimeoutException)
                    {
                        throw new TimeoutException($"waiting for '{marker.TrimEnd()}' on the console: the domain is {d.State} ({d.Exit?.Reason}); it printed '{output}'");
                    }

                    output.Append(Encoding.UTF8.GetString(result.Buffer.ToArray()));
                    d.Console.Output.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        break;
                    }
                }

                output.ToString().Should().Contain(marker, "the console printed so far: {0}", output);
            }

            await ReadUntilAsync("ready\n");
            await d.Console.Input.WriteAsync("ping\n"u8.ToArray(), ct);
            var flushed = await d.Console.Input.FlushAsync(ct);
            flushed.IsCanceled.Should().BeFalse();
            await ReadUntilAsync("echo: ping\n");

            var exit = await d.ExitWithinAsync();
            exit.State.Should().Be(DomainState.Shutdown, exit.Reason);
            kernel.UsedRing.Should().BeTrue("the builder gives every guest a console event channel");
            output.ToString().Should().Be("early\nready\necho: ping\n", "console_io output and ring output arrive in order");
            d.Console.InputBytesDelivered.Should().Be(5);
            d.Console.RingError.Should().BeNull();
        }
        finally
        {
            d.Destroy();
        }
    }
}
