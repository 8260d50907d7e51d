using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:echo</c>: echoes each line of console input; <c>poweroff</c> powers off, <c>crash</c>
/// crashes. It acts on the toolstack's <c>control/shutdown</c> requests as Linux does (<see cref="PvControl"/>).
/// </summary>
internal sealed class EchoGuest : GuestKernel
{
    protected override void Run(GuestRuntime rt)
    {
        var control = PvControl.Start(rt);
        rt.Out.WriteLine("echo: type lines; 'poweroff' ends, 'crash' crashes");
        var pending = new StringBuilder();
        var buffer = new byte[256];
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[Encoding.UTF8.GetMaxCharCount(buffer.Length)];
        var skipLf = false;
        while (true)
        {
            if (control.Pending && control.Take(rt) is { } reason)
            {
                rt.Out.WriteLine($"echo: control/shutdown: {(reason == Sched.SHUTDOWN_reboot ? "rebooting" : "powering off")}");
                rt.Shutdown(reason);
            }

            var n = rt.Console.Read(buffer);
            if (n == 0)
            {
                rt.WaitFor(() => rt.Console.InputArrived || control.Pending);
                continue;
            }

            pending.Append(chars, 0, decoder.GetChars(buffer, 0, n, chars, 0));
            if (skipLf && pending.Length > 0 && pending[0] == '\n')
            {
                pending.Remove(0, 1); // the '\n' of a "\r\n" split across two reads
            }

            skipLf = false;
            int end;
            while ((end = pending.ToString().IndexOfAny(['\r', '\n'])) >= 0)
            {
                // A line ends at '\n', "\r\n" or a lone '\r': Enter on a raw terminal (xl console and paravirt console leave it raw) is '\r'.
                var line = pending.ToString(0, end);
                var cr = pending[end] == '\r';
                var take = cr && end + 1 < pending.Length && pending[end + 1] == '\n' ? 2 : 1;
                skipLf = cr && end + take == pending.Length && take == 1;
                pending.Remove(0, end + take);
                switch (line)
                {
                    case "poweroff":
                        rt.Out.WriteLine("echo: powering off");
                        return;
                    case "crash":
                        rt.Out.WriteLine("echo: crashing on request");
                        rt.Shutdown(Sched.SHUTDOWN_crash);
                        break;
                    default:
                        rt.Out.WriteLine($"echo: {line}");
                        break;
                }
            }
        }
    }
}
