using System.Buffers.Binary;
using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:netecho</c>: connects its first vif, announces itself with a broadcast control frame
/// (ethertype <see cref="ControlType"/>, payload byte <see cref="Hello"/>), then sends every frame
/// it receives back to its sender (destination and source MAC swapped, the rest unchanged) until a
/// control frame with <see cref="Stop"/> arrives, or <c>frames=N</c> frames are echoed; then powers
/// off. Control frames are never echoed (two netechos on one switch do not bounce a hello forever).
/// </summary>
internal sealed class NetEchoGuest : GuestKernel
{
    /// <summary>The ethertype of netecho's control frames (IEEE 802 local experimental 2).</summary>
    public const ushort ControlType = 0x88B6;

    /// <summary>Control payload byte 0: the guest's announcement, sent once to broadcast when connected.</summary>
    public const byte Hello = 1;

    /// <summary>Control payload byte 0: stop echoing and power off.</summary>
    public const byte Stop = 2;

    protected override void Run(GuestRuntime rt)
    {
        var args = new GuestArgs(rt.CommandLine);
        var limit = args.Get("frames", long.MaxValue);
        using var fe = NetFrontend.Connect(rt);
        rt.Out.WriteLine($"netecho: vif {fe.Device.Id} {fe.MacText} connected; echoing frames until a stop frame (ethertype 0x{ControlType:x4}, byte {Stop})");
        var frame = new byte[NetFrontend.MaxFrameBytes];
        frame.AsSpan(0, 6).Fill(0xFF);
        fe.Mac.CopyTo(frame.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), ControlType);
        frame.AsSpan(14, 46).Clear();
        frame[14] = Hello;
        fe.Send(frame.AsSpan(0, 60));

        long echoed = 0, bytes = 0;
        var why = $"frames={limit} reached";
        while (echoed < limit)
        {
            var n = fe.Receive(frame);
            if (BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)) == ControlType)
            {
                if (n > 14 && frame[14] == Stop)
                {
                    why = "stop frame";
                    break;
                }

                continue;
            }

            frame.AsSpan(6, 6).CopyTo(frame);
            fe.Mac.CopyTo(frame.AsSpan(6));
            fe.Send(frame.AsSpan(0, n));
            echoed++;
            bytes += n;
        }

        fe.Flush();
        rt.Out.WriteLine($"netecho: {why}: echoed {echoed} frames ({bytes} bytes); powering off");
    }
}
