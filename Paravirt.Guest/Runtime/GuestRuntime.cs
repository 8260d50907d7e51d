using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>What a managed guest program gets from the kernel stub once it has booted.</summary>
public sealed class GuestRuntime
{
    internal GuestRuntime(XenGuest guest, GuestKernelOptions options)
    {
        Guest = guest;
        Console = ConsoleFrontend.Connect(guest);
        Out = Console.CreateWriter();
        XenBus = XenBusClient.Connect(guest);
        if (guest.IsAutoTranslated && options.GrantFrames > 0)
        {
            Grants = GrantTableClient.Setup(guest, options.GrantVersion, options.GrantFrames);
        }

        Devices = XenBus.EnumerateDevices();
    }

    /// <summary>The booted kernel: memory, hypercalls, pv-ops, waiting.</summary>
    public XenGuest Guest { get; }

    /// <summary>The console frontend (ring, or console_io when the builder gave no console event channel).</summary>
    public ConsoleFrontend Console { get; }

    /// <summary>A line-buffered writer to <see cref="Console"/>.</summary>
    public TextWriter Out { get; }

    /// <summary>System time, wallclock, timers.</summary>
    public GuestClock Clock => Guest.Clock;

    /// <summary>Event channels.</summary>
    public EventChannels Events => Guest.Events;

    /// <summary>The XenStore connection.</summary>
    public XenBusClient XenBus { get; }

    /// <summary>The grant table, or null for a classic PV guest (which cannot map its grant frames unpaged).</summary>
    public GrantTableClient? Grants { get; }

    /// <summary>The devices found in XenStore at boot (<c>device/&lt;type&gt;/&lt;id&gt;</c>).</summary>
    public IReadOnlyList<XenBusDevice> Devices { get; }

    /// <summary>start_info.cmd_line.</summary>
    public string CommandLine => Guest.Info.CommandLine;

    /// <summary>Sleeps until <paramref name="condition"/> holds (or the deadline, absolute system time ns, passes).</summary>
    public bool WaitFor(Func<bool> condition, ulong deadlineNs = 0) => Guest.WaitFor(condition, deadlineNs);

    /// <summary>Sleeps for <paramref name="time"/>.</summary>
    public void Sleep(TimeSpan time) => Guest.Sleep((ulong)time.Ticks * 100);

    /// <summary>SCHEDOP_shutdown with a <c>SHUTDOWN_*</c> reason (poweroff, reboot, crash, ...). Does not return.</summary>
    public void Shutdown(uint reason = Sched.SHUTDOWN_poweroff)
    {
        Out.Flush();
        Guest.Hypercalls.SchedShutdown(reason);
        // The hypervisor stops this vCPU on its way out; should it come back, sleep for good.
        while (true)
        {
            Guest.Halt();
        }
    }
}

/// <summary>What <see cref="GuestKernel"/> sets up before calling the program.</summary>
public sealed record GuestKernelOptions
{
    /// <summary>Boot options (event ABI, vCPUs).</summary>
    public GuestOptions Boot { get; init; } = new();

    /// <summary>Grant table version, 1 or 2.</summary>
    public int GrantVersion { get; init; } = 1;

    /// <summary>Grant frames to set up (0: none).</summary>
    public int GrantFrames { get; init; } = 1;
}

/// <summary>
/// The entry point of a managed guest: derive, implement <see cref="Run"/>, and start the domain
/// with it. <see cref="Main"/> boots the stub (<see cref="XenGuest.Boot"/>), connects the
/// console, XenBus and the grant table, lists the devices, and calls <see cref="Run"/>; when Run
/// returns the domain powers off. An exception escaping Run crashes the domain (the managed
/// engine reports it). Upcalls land in the stub's event dispatcher; secondary vCPUs started with
/// <see cref="XenGuest.StartVcpu"/> enter through <see cref="SecondaryEntry"/>.
/// </summary>
public abstract class GuestKernel : ManagedKernel
{
    private XenGuest? _guest;

    /// <summary>What the kernel sets up; override to change.</summary>
    protected virtual GuestKernelOptions Options => new();

    /// <summary>The guest program.</summary>
    protected abstract void Run(GuestRuntime runtime);

    /// <inheritdoc />
    public sealed override void Main(IGuestCpu cpu, ulong startInfo)
    {
        var options = Options;
        _guest = XenGuest.Boot(cpu, startInfo, options.Boot);
        var runtime = new GuestRuntime(_guest, options);
        Run(runtime);
        runtime.Shutdown(Sched.SHUTDOWN_poweroff);
    }

    /// <inheritdoc />
    public sealed override void EventCallback(IGuestCpu cpu, ulong address) => (_guest ?? XenGuest.OnThisVcpu)?.HandleUpcall(cpu);

    /// <inheritdoc />
    public sealed override void SecondaryEntry(IGuestCpu cpu, ulong rip, ulong rsp) =>
        (_guest ?? throw new InvalidOperationException("a secondary vCPU entered before the kernel booted")).EnterSecondary(cpu);
}
