using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends.Console;

/// <summary>
/// A guest's PV console driver as raw test code (what Linux's hvc_xen does): the page at
/// start_info.console.domU.mfn (a GFN for a translated guest), the port in
/// start_info.console.domU.evtchn; output into <c>out</c>, input from <c>in</c>, EVTCHNOP_send after
/// either moves, SCHEDOP_poll on the port while a ring is full or empty.
/// </summary>
internal sealed class GuestConsoleRing
{
    public const uint OutSize = 2048;
    public const uint InSize = 1024;
    public static readonly ulong OutOff = (ulong)Marshal.OffsetOf<xencons_interface>("out");
    public static readonly ulong InOff = (ulong)Marshal.OffsetOf<xencons_interface>("in");
    public static readonly ulong InCons = (ulong)Marshal.OffsetOf<xencons_interface>(nameof(xencons_interface.in_cons));
    public static readonly ulong InProd = (ulong)Marshal.OffsetOf<xencons_interface>(nameof(xencons_interface.in_prod));
    public static readonly ulong OutCons = (ulong)Marshal.OffsetOf<xencons_interface>(nameof(xencons_interface.out_cons));
    public static readonly ulong OutProd = (ulong)Marshal.OffsetOf<xencons_interface>(nameof(xencons_interface.out_prod));
    private static readonly ulong PendingOff = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));

    private readonly GuestContext g;
    private readonly ulong sharedInfo;

    public GuestConsoleRing(GuestContext g)
    {
        this.g = g;
        var si = g.ReadStartInfo();
        Page = si.console.domU.mfn << 12;
        Port = si.console.domU.evtchn;
        sharedInfo = GuestEvents.MapSharedInfo(g);
    }

    public ulong Page { get; }

    public uint Port { get; }

    /// <summary>How many times the guest waited for the backend (a ring full or empty).</summary>
    public int Waits { get; private set; }

    public uint Index(ulong offset) => (uint)g.Cpu.Memory.ReadVolatile(Page + offset, 4);

    public void SetIndex(ulong offset, uint value) => g.Cpu.Memory.WriteVolatile(Page + offset, 4, value);

    /// <summary>Writes all of <paramref name="bytes"/> to <c>out</c>, waiting for the backend to make room.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        var done = 0;
        while (done < bytes.Length)
        {
            ClearPending();
            var cons = Index(OutCons);
            var prod = Index(OutProd);
            var room = (int)(OutSize - (prod - cons));
            if (room <= 0)
            {
                Waits++;
                Poll();
                continue;
            }

            var n = Math.Min(room, bytes.Length - done);
            Put(prod, bytes.Slice(done, n));
            SetIndex(OutProd, prod + (uint)n); // data before the index (the managed engine's writes are ordered)
            Notify();
            done += n;
        }
    }

    /// <summary>Puts bytes into <c>out</c> at <paramref name="prod"/> without moving the index.</summary>
    public void Put(uint prod, ReadOnlySpan<byte> bytes)
    {
        var start = prod & (OutSize - 1);
        var first = (int)Math.Min((uint)bytes.Length, OutSize - start);
        g.Cpu.Memory.Write(Page + OutOff + start, bytes[..first]);
        g.Cpu.Memory.Write(Page + OutOff, bytes[first..]);
    }

    /// <summary>Waits until the backend has consumed everything in <c>out</c>.</summary>
    public void WaitOutputConsumed()
    {
        while (true)
        {
            ClearPending();
            if (Index(OutCons) == Index(OutProd))
            {
                return;
            }

            Waits++;
            Poll();
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes from <c>in</c>, waiting for the backend to produce them.</summary>
    public byte[] Read(int count)
    {
        var result = new byte[count];
        var got = 0;
        while (got < count)
        {
            ClearPending();
            var cons = Index(InCons);
            var prod = Index(InProd);
            var available = (int)(prod - cons);
            if (available == 0)
            {
                Waits++;
                Poll();
                continue;
            }

            var n = Math.Min(available, count - got);
            var start = cons & (InSize - 1);
            var first = (int)Math.Min((uint)n, InSize - start);
            g.Cpu.Memory.Read(Page + InOff + start, result.AsSpan(got, first));
            g.Cpu.Memory.Read(Page + InOff, result.AsSpan(got + first, n - first));
            SetIndex(InCons, cons + (uint)n);
            Notify(); // room made: the backend may have more
            got += n;
        }

        return result;
    }

    /// <summary>EVTCHNOP_send on the console port.</summary>
    public void Notify()
    {
        g.Cpu.Memory.Write(g.Scratch + 0xF00, new evtchn_send { port = Port });
        var rc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_send, g.Scratch + 0xF00);
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_send({Port}) = {rc}");
        }
    }

    /// <summary>CONSOLEIO_write of <paramref name="bytes"/> (the early console).</summary>
    public void ConsoleIo(ReadOnlySpan<byte> bytes)
    {
        g.Cpu.Memory.Write(g.Scratch, bytes);
        var rc = g.Hypercall(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_write, (ulong)bytes.Length, g.Scratch);
        if (rc != 0)
        {
            throw new InvalidOperationException($"CONSOLEIO_write = {rc}");
        }
    }

    /// <summary>EVTCHNOP_status of the console port as the guest sees it.</summary>
    public evtchn_status Status()
    {
        g.Cpu.Memory.Write(g.Scratch + 0xE80, new evtchn_status { dom = Xen.DOMID_SELF, port = Port });
        var rc = g.Hypercall(Xen.__HYPERVISOR_event_channel_op, EventChannel.EVTCHNOP_status, g.Scratch + 0xE80);
        if (rc != 0)
        {
            throw new InvalidOperationException($"EVTCHNOP_status({Port}) = {rc}");
        }

        return g.Cpu.Memory.Read<evtchn_status>(g.Scratch + 0xE80);
    }

    /// <summary>Clears the port's pending bit (before checking a ring, so a notification after the check wakes the poll).</summary>
    public void ClearPending() => g.Cpu.Memory.And64(sharedInfo + PendingOff + ((Port / 64) * 8), ~(1UL << (int)(Port % 64)));

    /// <summary>SCHEDOP_poll on the console port until it is pending.</summary>
    public void Poll()
    {
        var ports = g.Scratch + 0xF80;
        g.Cpu.Memory.Write(ports, Port);
        g.Cpu.Memory.Write(g.Scratch + 0xF40, new sched_poll { ports = ports, nr_ports = 1, timeout = 0 });
        g.Hypercall(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, g.Scratch + 0xF40);
    }
}

/// <summary>Host-side reading of a console's output pipe, bounded in time.</summary>
internal static class ConsolePipe
{
    /// <summary>Reads exactly <paramref name="count"/> bytes, or fails clearly after <see cref="GuestRunner.Timeout"/>.</summary>
    public static async Task<byte[]> ReadExactlyAsync(PipeReader reader, int count)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(GuestRunner.Timeout);
        var got = new MemoryStream();
        try
        {
            while (got.Length < count)
            {
                var result = await reader.ReadAsync(cts.Token);
                var take = Math.Min(result.Buffer.Length, count - got.Length);
                foreach (var segment in result.Buffer.Slice(0, take))
                {
                    got.Write(segment.Span);
                }

                reader.AdvanceTo(result.Buffer.GetPosition(take));
                if (result.IsCompleted && got.Length < count)
                {
                    throw new InvalidOperationException($"the console output ended after {got.Length} of {count} bytes");
                }
            }
        }
        catch (OperationCanceledException) when (!TestContext.Current.CancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"only {got.Length} of {count} console bytes arrived within {GuestRunner.Timeout.TotalSeconds} s");
        }

        return got.ToArray();
    }

    /// <summary>Reads until the pipe completes, or fails clearly after <see cref="GuestRunner.Timeout"/>.</summary>
    public static async Task<byte[]> ReadToEndAsync(PipeReader reader)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(GuestRunner.Timeout);
        var got = new MemoryStream();
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(cts.Token);
                foreach (var segment in result.Buffer)
                {
                    got.Write(segment.Span);
                }

                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return got.ToArray();
                }
            }
        }
        catch (OperationCanceledException) when (!TestContext.Current.CancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"the console output did not complete within {GuestRunner.Timeout.TotalSeconds} s ({got.Length} bytes read)");
        }
    }
}
