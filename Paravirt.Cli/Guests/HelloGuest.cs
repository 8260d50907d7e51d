using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:hello</c>: greets, prints its command line and devices, and on each writable disk
/// writes 64 KiB (or what fits) at byte 4096, flushes, reads it back and compares. Options in its
/// command line: <c>shutdown=poweroff|reboot|crash</c> (how it ends, default poweroff) and
/// <c>crash-once</c>: on its first boot (no marker in sector 0 of its first disk) it writes the
/// marker and crashes; on a later boot it finds the marker and goes on — a restart test that
/// keeps its memory on disk, as a real guest would.
/// </summary>
internal sealed class HelloGuest : GuestKernel
{
    /// <summary>The pattern seed of the roundtrip (a host can regenerate the bytes with <see cref="DiskPattern"/>).</summary>
    public const ulong Seed = 0x68656C6C6F;

    private static readonly byte[] Marker = "paravirt crash-once marker"u8.ToArray();

    protected override void Run(GuestRuntime rt)
    {
        var args = new GuestArgs(rt.CommandLine);
        var name = rt.XenBus.Read("name", out var n) >= 0 ? n : "?";
        rt.Out.WriteLine($"hello from domain {rt.XenBus.DomainId} ({name})");
        if (rt.CommandLine.Length > 0)
        {
            rt.Out.WriteLine($"command line: {rt.CommandLine}");
        }

        var first = true;
        foreach (var dev in rt.Devices.Where(d => d.Type == "vbd"))
        {
            using var disk = BlockFrontend.Connect(rt, dev);
            var bytes = disk.SectorCount * disk.SectorSize;
            rt.Out.WriteLine($"vbd {dev.Id}: {disk.SectorCount} sectors of {disk.SectorSize} bytes{(disk.ReadOnly ? ", read-only" : "")}");
            if (first && args.Has("crash-once"))
            {
                CrashOnce(rt, disk);
            }

            first = false;
            if (disk.ReadOnly)
            {
                var head = new byte[Math.Min(bytes, 4096)];
                disk.Read(0, head);
                rt.Out.WriteLine($"vbd {dev.Id}: read {head.Length} bytes");
                continue;
            }

            var length = (int)Math.Min(64 * 1024, bytes - 4096) / disk.SectorSize * disk.SectorSize;
            if (length <= 0)
            {
                rt.Out.WriteLine($"vbd {dev.Id}: too small for a roundtrip (needs more than 4096 bytes)");
                continue;
            }

            var bad = BlockRoundtrip.Run(disk, 4096, length, Seed, ledger: null);
            if (bad >= 0)
            {
                rt.Out.WriteLine($"vbd {dev.Id}: read back differs at byte {bad}");
                rt.Shutdown(Sched.SHUTDOWN_crash);
            }

            rt.Out.WriteLine($"vbd {dev.Id}: wrote {length} bytes at 4096, flushed, read back: match");
        }

        var how = args.Get("shutdown", "poweroff");
        uint code = how switch
        {
            "reboot" => Sched.SHUTDOWN_reboot,
            "crash" => Sched.SHUTDOWN_crash,
            _ => Sched.SHUTDOWN_poweroff,
        };
        rt.Out.WriteLine($"goodbye ({how})");
        rt.Shutdown(code);
    }

    private static void CrashOnce(GuestRuntime rt, BlockFrontend disk)
    {
        var sector = new byte[disk.SectorSize];
        disk.Read(0, sector);
        if (sector.AsSpan().StartsWith(Marker))
        {
            rt.Out.WriteLine("crash-once: the marker is on disk, so this is a restart; going on");
            return;
        }

        Marker.CopyTo(sector, 0);
        disk.Write(0, sector);
        disk.Flush();
        rt.Out.WriteLine($"crash-once: first boot, marker written ({Encoding.ASCII.GetString(Marker)}); crashing on purpose");
        rt.Shutdown(Sched.SHUTDOWN_crash);
    }
}
