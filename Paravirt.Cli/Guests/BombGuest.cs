using Paravirt.Core.Abi;
using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// <c>managed:bomb</c>: the fork bomb. It takes memory (<c>XENMEM_increase_reservation</c>, one page
/// at a time), event channels (<c>EVTCHNOP_alloc_unbound</c>), grant frames
/// (<c>XENMEM_add_to_physmap(XENMAPSPACE_grant_table)</c>) and XenStore nodes (<c>XS_WRITE</c>) each
/// until the hypervisor says no, prints one <c>limit …</c> line per resource with Xen's answer, and
/// then crashes itself (<c>SCHEDOP_shutdown(SHUTDOWN_crash)</c>); with <c>hold</c> in its command line it first
/// keeps everything until a byte of console input arrives. Every loop has a cap far above the
/// limits, so a hypervisor that failed to say no shows up as "no limit" instead of a hang.
/// </summary>
internal sealed class BombGuest : GuestKernel
{
    /// <summary>The line each limit is reported on: <c>limit RESOURCE: OPERATION answered ANSWER after N UNITS[; detail]</c>.</summary>
    public const string LinePattern = @"^limit (?<resource>[\w-]+): (?<op>.+?) answered (?<answer>.+?) after (?<count>\d+) \w+";

    private const int Cap = 1 << 20;

    protected override void Run(GuestRuntime rt)
    {
        var hc = rt.Guest.Hypercalls;
        rt.Out.WriteLine($"bomb in domain {rt.XenBus.DomainId}: taking everything I can");

        // Memory: one page at a time; Xen answers with the number of extents done (0 of 1 at max_pages), not an errno.
        Span<ulong> frame = stackalloc ulong[1];
        var pages = 0;
        long done = 0;
        while (pages < Cap && (done = hc.IncreaseReservation(frame)) == 1)
        {
            pages++;
        }

        rt.Out.WriteLine($"limit memory: XENMEM_increase_reservation answered {done} of 1 extents after {pages} pages; reservation {hc.CurrentReservation()} of maximum {hc.MaximumReservation()}");

        // Event channels: ports for domain 0 until the table is full.
        var ports = 0;
        long rc = 0;
        while (ports < Cap && (rc = hc.EvtchnAllocUnbound(0, out _)) == 0)
        {
            ports++;
        }

        rt.Out.WriteLine($"limit event-channels: EVTCHNOP_alloc_unbound answered {XenGuest.ErrnoName(rc)} after {ports} ports");

        // Grant frames: grow the grant table a frame at a time past what the runtime set up.
        var frames = 0;
        var idx = (ulong)(rt.Grants?.SharedFrames.Count ?? 0);
        rc = 0;
        while (frames < Cap && (rc = hc.AddToPhysmap(XenMem.XENMAPSPACE_grant_table, idx, rt.Guest.Pages.AllocatePhysmapSlot())) == 0)
        {
            frames++;
            idx++;
        }

        hc.GnttabQuerySize(out var nrFrames, out var maxFrames, out _);
        rt.Out.WriteLine($"limit grant-frames: XENMEM_add_to_physmap(XENMAPSPACE_grant_table, {idx}) answered {XenGuest.ErrnoName(rc)} after {frames} frames; GNTTABOP_query_size says {nrFrames} of max {maxFrames}");

        // XenStore: nodes under our home until the per-domain node quota (quota_nb_entry_per_domain).
        // Spread over directories of 64, so no parent's child list reaches the node-size quota first.
        var nodes = 0;
        rc = 0;
        while (nodes < Cap)
        {
            var dir = nodes / 65;
            rc = nodes % 65 == 0 ? rt.XenBus.Mkdir($"data/bomb/d{dir}") : rt.XenBus.Write($"data/bomb/d{dir}/n{nodes % 65}", "x");
            if (rc < 0)
            {
                break;
            }

            nodes++;
        }

        rt.Out.WriteLine($"limit xenstore: {(nodes % 65 == 0 ? "XS_MKDIR" : "XS_WRITE")} answered {XenGuest.ErrnoName(rc)} after {nodes} nodes");
        if (new GuestArgs(rt.CommandLine).Has("hold"))
        {
            // Keep everything taken until the host says so on the console (input needs no new resource).
            rt.Out.WriteLine("bomb: every resource ran out; holding it all until console input");
            rt.Out.Flush();
            var buffer = new byte[16];
            while (rt.Console.Read(buffer) == 0)
            {
                rt.WaitFor(() => rt.Console.InputArrived);
            }
        }

        rt.Out.WriteLine("bomb: every resource ran out; crashing on purpose");
        rt.Shutdown(Sched.SHUTDOWN_crash);
    }
}
