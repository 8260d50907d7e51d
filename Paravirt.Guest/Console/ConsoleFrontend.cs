using System.Text;
using Paravirt.Core.Abi.Io;

namespace Paravirt.Guest;

/// <summary>
/// The PV console frontend (xen/io/console.h): output into the <c>out</c> ring of the
/// <c>xencons_interface</c> page at <c>start_info.console.domU.mfn</c> and a notify on
/// <c>console.domU.evtchn</c>; input from the <c>in</c> ring. When the builder gave no console
/// event channel (evtchn 0) the console falls back to <c>HYPERVISOR_console_io(CONSOLEIO_write)</c>,
/// the hypervisor's emergency console, and has no input.
/// </summary>
public sealed class ConsoleFrontend
{
    private const uint InSize = 1024;
    private const uint OutSize = 2048;
    private static readonly ulong InOffset = Layout.Off<xencons_interface>("in");
    private static readonly ulong OutOffset = Layout.Off<xencons_interface>("out");
    private static readonly ulong InCons = Layout.Off<xencons_interface>(nameof(xencons_interface.in_cons));
    private static readonly ulong InProd = Layout.Off<xencons_interface>(nameof(xencons_interface.in_prod));
    private static readonly ulong OutCons = Layout.Off<xencons_interface>(nameof(xencons_interface.out_cons));
    private static readonly ulong OutProd = Layout.Off<xencons_interface>(nameof(xencons_interface.out_prod));

    private readonly XenGuest _guest;
    private readonly Lock _lock = new();
    private readonly GuestByteRing _out;
    private readonly GuestByteRing _in;

    internal ConsoleFrontend(XenGuest guest, ulong page, uint port)
    {
        _guest = guest;
        Page = page;
        Port = port;
        _out = new GuestByteRing(guest.Memory, page + OutOffset, OutSize, page + OutCons, page + OutProd, "console out");
        _in = new GuestByteRing(guest.Memory, page + InOffset, InSize, page + InCons, page + InProd, "console in");
        if (port != 0)
        {
            XenGuest.Check(guest.Events.Attach(port, _ => InputArrived = true), $"unmask of the console port {port}");
        }
    }

    /// <summary>Guest address of the console ring page.</summary>
    public ulong Page { get; }

    /// <summary>The console event channel; 0 means no ring backend (console_io is used).</summary>
    public uint Port { get; }

    /// <summary>True when output goes through the ring.</summary>
    public bool UsesRing => Port != 0;

    /// <summary>How long a write waits for the backend to make room before dropping the rest (ns).</summary>
    public ulong FullRingTimeoutNs { get; set; } = 1_000_000_000;

    /// <summary>Set by the console port's handler; cleared by <see cref="Read"/>.</summary>
    public bool InputArrived { get; private set; }

    /// <summary>Connects to the console start_info describes.</summary>
    public static ConsoleFrontend Connect(XenGuest guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        var pfn = guest.Pages.PfnOf(guest.Info.ConsoleFrame)
            ?? throw new InvalidOperationException($"start_info.console.domU.mfn 0x{guest.Info.ConsoleFrame:x} is not one of the guest's frames");
        return new ConsoleFrontend(guest, pfn << PageAllocator.PageShift, guest.Info.ConsoleEvtchn);
    }

    /// <summary>Writes <paramref name="bytes"/>; returns the bytes accepted (fewer when the backend left the ring full past the timeout) or a negative errno from console_io.</summary>
    public long Write(ReadOnlySpan<byte> bytes)
    {
        if (!UsesRing)
        {
            var rc = _guest.Hypercalls.ConsoleWrite(bytes);
            return rc < 0 ? rc : bytes.Length;
        }

        var done = 0;
        lock (_lock)
        {
            while (done < bytes.Length)
            {
                var n = _out.Write(bytes[done..]);
                if (n > 0)
                {
                    done += n;
                    continue;
                }

                // Full: tell the backend, and wait (bounded) for it to make room.
                _guest.Events.Send(Port);
                if (!_guest.WaitFor(() => _out.Used < OutSize, _guest.Clock.SystemTimeNs() + FullRingTimeoutNs))
                {
                    break;
                }
            }
        }

        _guest.Events.Send(Port);
        return done;
    }

    /// <summary>Writes a string as UTF-8.</summary>
    public long Write(string text) => Write(Encoding.UTF8.GetBytes(text ?? ""));

    /// <summary>Takes up to <paramref name="buffer"/>.Length input bytes from the <c>in</c> ring without waiting; returns the count (0 with no ring).</summary>
    public int Read(Span<byte> buffer)
    {
        if (!UsesRing)
        {
            return 0;
        }

        InputArrived = false;
        int n;
        lock (_lock)
        {
            n = _in.Read(buffer);
            if (n > 0 && n < buffer.Length)
            {
                n += _in.Read(buffer[n..]); // the rest, past the wrap
            }
        }

        if (n > 0)
        {
            _guest.Events.Send(Port);
        }

        return n;
    }

    /// <summary>A line-buffered <see cref="TextWriter"/> over this console.</summary>
    public TextWriter CreateWriter() => new ConsoleWriter(this);

    private sealed class ConsoleWriter(ConsoleFrontend console) : TextWriter
    {
        private readonly StringBuilder _line = new();

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            _line.Append(value);
            if (value == '\n')
            {
                Flush();
            }
        }

        public override void Flush()
        {
            if (_line.Length > 0)
            {
                console.Write(_line.ToString());
                _line.Clear();
            }
        }

        protected override void Dispose(bool disposing)
        {
            Flush();
            base.Dispose(disposing);
        }
    }
}
