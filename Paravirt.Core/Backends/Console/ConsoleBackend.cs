using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Console;

/// <summary>
/// The host's end of a domain's PV console (<c>xencons_interface</c>, xen/io/console.h), as
/// xenconsoled serves it: the page is pinned and the guest's console port (allocated by the builder
/// for domain 0) bound; whenever the guest notifies, the <c>out</c> ring is drained into the
/// domain's <see cref="Paravirt.Core.Console.DomainConsole"/> and the guest notified (a writer
/// waiting for room goes on); host input waiting in <see cref="Paravirt.Core.Console.DomainConsole.Input"/>
/// is moved into the <c>in</c> ring as far as it has room, and the guest notified.
/// Indices are the guest's to write: a ring whose producer is more than the ring's size ahead of
/// its consumer is a protocol error; the backend then stops serving that console (reported in
/// <see cref="Paravirt.Core.Console.DomainConsole.RingError"/>), and the domain, the host and
/// every other domain go on.
/// </summary>
internal sealed class ConsoleBackend : IDisposable
{
    /// <summary>The backend's <c>protocol</c> key (libxl's LIBXL_XENCONSOLE_PROTOCOL).</summary>
    private const string Protocol = "vt100";

    private readonly Domain domain;
    private readonly Paravirt.Core.Console.DomainConsole console;
    private readonly PinnedPage page;
    private readonly HostEventChannel channel;
    private readonly ByteRing output;
    private readonly ByteRing input;
    private readonly PipeReader inputReader;
    private readonly byte[] outBuffer;
    private readonly byte[] staging;
    private readonly Lock gate = new();
    private readonly CancellationTokenSource stop = new();
    private int stagingStart;
    private int stagingEnd;
    private bool inputDone;
    private string? failure;
    private bool disposed;
    private Task pump = Task.CompletedTask;

    private ConsoleBackend(Domain domain, PinnedPage page, HostEventChannel channel)
    {
        this.domain = domain;
        console = domain.Console;
        this.page = page;
        this.channel = channel;
        var memory = page.AsMemory();
        output = ByteRing.ConsoleOut(memory);
        input = ByteRing.ConsoleIn(memory);
        inputReader = console.InputReader;
        outBuffer = new byte[output.Size];
        staging = new byte[input.Size];
    }

    /// <summary>The pump's task (tests: it ends when the console is stopped or disposed).</summary>
    internal Task Pump => pump;

    /// <summary>/local/domain/<paramref name="domid"/>/console: the primary PV console's frontend directory.</summary>
    public static string FrontendPath(ushort domid) => string.Create(CultureInfo.InvariantCulture, $"/local/domain/{domid}/console");

    /// <summary>/local/domain/0/backend/console/<paramref name="domid"/>/0: its backend directory.</summary>
    public static string BackendPath(ushort domid) => string.Create(CultureInfo.InvariantCulture, $"/local/domain/0/backend/console/{domid}/0");

    /// <summary>
    /// Writes the console's XenStore keys, pins the console frame, binds the guest's console port and
    /// starts serving; the domain's console owns the backend from then on (stopped on destroy).
    /// </summary>
    public static ConsoleBackend Start(Domain domain, ulong consoleFrame, ulong consoleMfn, uint guestPort)
    {
        WriteKeys(domain, consoleFrame, guestPort);
        var page = PinnedPage.TryPin(domain.Hypervisor.Frames, consoleMfn, domain.Id)
            ?? throw new InvalidOperationException($"domain {domain.Id}: its console frame {consoleMfn:x} is not its own");
        HostEventChannel channel;
        try
        {
            channel = domain.Hypervisor.Host.BindInterdomain(domain, guestPort);
        }
        catch
        {
            page.Dispose();
            throw;
        }

        var backend = new ConsoleBackend(domain, page, channel);
        domain.Console.AttachBackend(backend);
        backend.pump = Task.Run(backend.RunAsync);
        return backend;
    }

    /// <summary>
    /// What libxl__device_console_add writes for console 0 with xenconsoled as its backend
    /// (libxl_console.c, libxl__device_generic_add): the frontend directory
    /// /local/domain/N/console, read-only to the guest, with backend, limit, type, output, tty,
    /// port and ring-ref, plus backend-id that the guest owns; and the backend directory with
    /// frontend, frontend-id, online, state (Initialising) and protocol. xenconsoled writes the
    /// name of its pty into tty; this backend has no pty, so tty stays empty. libxl's limit is
    /// LIBXL_XENCONSOLE_LIMIT (1048576), which xenconsoled takes as its buffer's cap; we write the
    /// cap this backend really uses, <see cref="DomainLimits.ConsoleBufferBytes"/>.
    /// </summary>
    private static void WriteKeys(Domain domain, ulong consoleFrame, uint guestPort)
    {
        var id = domain.Id;
        var self = id.ToString(CultureInfo.InvariantCulture);
        var front = FrontendPath(id);
        var back = BackendPath(id);
        string[] roFront = ["n0", "r" + self];
        string[] rwFront = ["n" + self, "r0"];
        var keys = new (string Key, string Value)[]
        {
            ("limit", domain.Limits.ConsoleBufferBytes.ToString(CultureInfo.InvariantCulture)),
            ("type", "xenconsoled"),
            ("output", "pty"),
            ("tty", ""),
            ("port", guestPort.ToString(CultureInfo.InvariantCulture)),
            ("ring-ref", consoleFrame.ToString(CultureInfo.InvariantCulture)),
        };
        domain.Hypervisor.XenStore.Transaction(tx =>
        {
            tx.Mkdir(front);
            tx.SetPerms(front, roFront);
            tx.Write($"{front}/backend", back);
            tx.Write($"{front}/backend-id", "0");
            tx.SetPerms($"{front}/backend-id", rwFront);
            foreach (var (key, value) in keys)
            {
                tx.Write($"{front}/{key}", value);
                tx.SetPerms($"{front}/{key}", roFront);
            }

            tx.Mkdir(back);
            tx.SetPerms(back, roFront);
            tx.Write($"{back}/frontend", front);
            tx.Write($"{back}/frontend-id", self);
            tx.Write($"{back}/online", "1");
            tx.Write($"{back}/state", "1");
            tx.Write($"{back}/protocol", Protocol);
        });
    }

    private async Task RunAsync()
    {
        Task<bool>? guestWait = null;
        Task<ReadResult>? inputWait = null;
        var ct = stop.Token;
        try
        {
            while (true)
            {
                bool notify;
                lock (gate)
                {
                    if (disposed)
                    {
                        return;
                    }

                    notify = Service();
                }

                if (notify)
                {
                    Notify();
                }

                if (failure is not null)
                {
                    break;
                }

                // Take more host input only once what was taken is in the ring: at most one ring's
                // worth is held here, the rest waits in the pipe (and the host's flush waits).
                if (inputWait is null && stagingStart == stagingEnd && !inputDone)
                {
                    var read = inputReader.ReadAsync(ct);
                    inputWait = read.IsCompleted ? Task.FromResult(read.Result) : read.AsTask();
                }

                if (inputWait is { IsCompleted: true })
                {
                    TakeInput(await inputWait.ConfigureAwait(false));
                    inputWait = null;
                    continue;
                }

                guestWait ??= channel.WaitAsync(ct).AsTask();
                var done = await Task.WhenAny(guestWait, (Task?)inputWait ?? guestWait).ConfigureAwait(false);
                if (done == guestWait)
                {
                    if (!await guestWait.ConfigureAwait(false))
                    {
                        return; // our end was closed
                    }

                    guestWait = null;
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return;
        }

        // Stopped for a protocol error: let go of the input pipe (a read in progress is cancelled
        // first, so the pipe is not completed under it), then tell the host.
        if (inputWait is not null)
        {
            inputReader.CancelPendingRead();
            try
            {
                var pending = await inputWait.ConfigureAwait(false);
                inputReader.AdvanceTo(pending.Buffer.Start);
            }
            catch (OperationCanceledException)
            {
            }
        }

        console.ReportRingError(failure);
    }

    /// <summary>Moves what can move: output out of <c>out</c>, staged input into <c>in</c>. True if either ring moved.</summary>
    private bool Service()
    {
        var moved = false;
        // Bounded: a guest that keeps producing while we drain gets at most a few rings' worth per
        // round; it notified, so the next round comes.
        for (var round = 0; round < 4; round++)
        {
            var n = output.Read(outBuffer);
            if (n < 0)
            {
                Fail("out: the guest's producer index is more than the ring's 2048 bytes ahead of the consumer index");
                return false;
            }

            if (n == 0)
            {
                break;
            }

            console.Write(outBuffer.AsSpan(0, n));
            moved = true;
        }

        if (stagingStart < stagingEnd)
        {
            var n = input.Write(staging.AsSpan(stagingStart, stagingEnd - stagingStart));
            if (n < 0)
            {
                Fail("in: the guest's consumer index is not within the ring's 1024 bytes behind the producer index");
                return false;
            }

            stagingStart += n;
            if (n > 0)
            {
                console.CountInputDelivered(n);
                moved = true;
            }
        }
        else if (input.Available < 0)
        {
            Fail("in: the guest's consumer index is not within the ring's 1024 bytes behind the producer index");
            return false;
        }

        return moved;
    }

    /// <summary>Copies up to a ring's worth of host input into the staging buffer and consumes it from the pipe.</summary>
    private void TakeInput(ReadResult result)
    {
        var buffer = result.Buffer;
        var n = (int)Math.Min(buffer.Length, staging.Length);
        buffer.Slice(0, n).CopyTo(staging);
        stagingStart = 0;
        stagingEnd = n;
        inputReader.AdvanceTo(buffer.GetPosition(n));
        if (result.IsCompleted && n == buffer.Length)
        {
            inputDone = true; // the host completed Input: nothing more will come
        }
    }

    private void Notify()
    {
        try
        {
            channel.Notify();
        }
        catch (XenException)
        {
            // The guest's end is gone (it is being destroyed); nothing to tell.
        }
    }

    private void Fail(string reason) =>
        failure = $"domain {domain.Id}: the console ring's {reason}; the console backend stopped serving it";

    /// <summary>Stops serving (bounded wait for the pump), drains output the guest left in the ring, unbinds and unpins.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
        }

        stop.Cancel();
        try
        {
            pump.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
            // A pump that failed has stopped serving already; tearing down goes on.
        }

        lock (gate)
        {
            // Output written just before the guest ended, whose notification the pump did not see.
            if (failure is null)
            {
                for (var round = 0; round < 4; round++)
                {
                    var n = output.Read(outBuffer);
                    if (n <= 0)
                    {
                        break;
                    }

                    console.Write(outBuffer.AsSpan(0, n));
                }
            }

            channel.Dispose();
            page.Dispose();
        }

        stop.Dispose();
        try
        {
            domain.Hypervisor.XenStore.Rm(string.Create(CultureInfo.InvariantCulture, $"/local/domain/0/backend/console/{domain.Id}"));
        }
        catch (XenStore.XenStoreException)
        {
            // Already gone.
        }
    }
}
