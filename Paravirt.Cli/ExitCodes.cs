namespace Paravirt.Cli;

/// <summary>Exit codes of <c>paravirt run</c>, <c>list</c>, <c>demo</c>, <c>host</c> and xl's verbs (docs/cli.md lists them for scripts).</summary>
internal static class ExitCodes
{
    /// <summary>Done: the domain powered off (run), the table was printed (list), every check passed (demo).</summary>
    public const int Ok = 0;

    /// <summary>A bad command line (System.CommandLine's parse error).</summary>
    public const int Usage = 1;

    /// <summary>The config file cannot be read or has an error (FILE:LINE on stderr).</summary>
    public const int Config = 2;

    /// <summary>Valid configuration this build cannot honour yet, such as a qcow2 disk.</summary>
    public const int NotSupported = 3;

    /// <summary>The domain crashed (its last end, after any restarts).</summary>
    public const int Crashed = 4;

    /// <summary>The domain shut down asking for a reboot and was not restarted (on_reboot = destroy or preserve, or the restart limit).</summary>
    public const int Rebooted = 5;

    /// <summary>The host could not set the domain up: a disk image it cannot open, a guest assembly it cannot load, not enough memory.</summary>
    public const int SetupFailed = 6;

    /// <summary>The domain shut down for another reason (suspend, watchdog, soft_reset).</summary>
    public const int OtherShutdown = 7;

    /// <summary>demo: a check failed (the failing check line says why).</summary>
    public const int CheckFailed = 8;

    /// <summary>run: the kernel image is not a bootable 64-bit PV kernel (not ELF, bad Xen notes, required features a PV domU lacks).</summary>
    public const int BadKernel = 9;

    /// <summary>
    /// run: the domain stopped because its last vCPU went down (VCPUOP_down) rather than asking to
    /// shut down; Xen powers it off all the same, but a Linux guest gets here by <c>halt()</c> after a fatal error.
    /// </summary>
    public const int AllVcpusDown = 10;

    /// <summary>A verb found no host at its socket (nothing listens there).</summary>
    public const int NoHost = 11;

    /// <summary>A verb named a domain the host does not have (by name or id).</summary>
    public const int NoSuchDomain = 12;

    /// <summary>
    /// The host refused: a domain of that name exists already (create), the domain's state does not
    /// allow it (pause a paused domain, shut down an ended one), or the host is stopping.
    /// </summary>
    public const int Refused = 13;

    /// <summary>shutdown, reboot: the guest did not acknowledge <c>control/shutdown</c> in time (its kernel does not act on it).</summary>
    public const int NotAcknowledged = 14;

    /// <summary>host: another live host already serves the socket.</summary>
    public const int SocketInUse = 15;

    /// <summary>Interrupted by SIGINT or SIGTERM before the domain ended; the domain was destroyed.</summary>
    public const int Interrupted = 130;
}
