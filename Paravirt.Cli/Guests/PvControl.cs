using Paravirt.Core.Abi;
using Paravirt.Guest;

namespace Paravirt.Cli.Guests;

/// <summary>
/// The toolstack's shutdown requests for a managed guest, as Linux's drivers/xen/manage.c takes
/// them: it advertises <c>control/feature-poweroff</c> and <c>control/feature-reboot</c>, watches
/// <c>control/shutdown</c>, and on a command it handles (<c>poweroff</c>, <c>halt</c>,
/// <c>reboot</c>) acknowledges by emptying the node in a transaction before acting, which is what
/// <c>xl shutdown</c> (libxl's pvcontrol) and <c>paravirt shutdown</c> wait for. Other commands are
/// left in place, unacknowledged. The watch only flags the request; the guest's main loop takes it.
/// </summary>
internal sealed class PvControl
{
    private const string Node = "control/shutdown";
    private volatile bool _changed;

    private PvControl()
    {
    }

    /// <summary>Whether control/shutdown changed since the last <see cref="Take"/>.</summary>
    public bool Pending => _changed;

    public static PvControl Start(GuestRuntime rt)
    {
        ArgumentNullException.ThrowIfNull(rt);
        var control = new PvControl();
        GuestCheck.Ok(rt.XenBus.Write("control/feature-poweroff", "1"), "writing control/feature-poweroff");
        GuestCheck.Ok(rt.XenBus.Write("control/feature-reboot", "1"), "writing control/feature-reboot");
        GuestCheck.Ok(rt.XenBus.Watch(Node, _ => control._changed = true, out _), "watching control/shutdown");
        return control;
    }

    /// <summary>Reads control/shutdown and acknowledges a command it handles: its SHUTDOWN_* reason, or null.</summary>
    public uint? Take(GuestRuntime rt)
    {
        ArgumentNullException.ThrowIfNull(rt);
        _changed = false;
        uint? reason = null;
        var rc = rt.XenBus.Transaction(tx =>
        {
            reason = null;
            if (tx.Read(Node, out var command) < 0 || command.Length == 0)
            {
                return -1; // nothing asked (or no node): end the transaction without writing
            }

            reason = command switch
            {
                "poweroff" or "halt" => Sched.SHUTDOWN_poweroff,
                "reboot" => Sched.SHUTDOWN_reboot,
                _ => null,
            };
            return reason is null ? -1 : tx.Write(Node, "");
        });
        return rc >= 0 ? reason : null;
    }
}
