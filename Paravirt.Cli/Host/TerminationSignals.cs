using System.Runtime.InteropServices;

namespace Paravirt.Cli.Host;

/// <summary>
/// SIGTERM and SIGINT (Ctrl-C) turned into a cancellation: the signal's default action (ending the
/// process) is suppressed and <see cref="Token"/> is cancelled instead, so a long-running command
/// (<c>run</c>, <c>host</c>, <c>xenstored</c>) can end its domains and servers cleanly.
/// </summary>
internal sealed class TerminationSignals : IDisposable
{
    private readonly CancellationTokenSource _signalled;
    private readonly PosixSignalRegistration _term;
    private readonly PosixSignalRegistration _interrupt;

    /// <summary>Starts listening; <see cref="Token"/> is also cancelled with <paramref name="cancellationToken"/>.</summary>
    public TerminationSignals(CancellationToken cancellationToken)
    {
        _signalled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
    }

    /// <summary>Cancelled on SIGTERM, SIGINT or the caller's cancellation.</summary>
    public CancellationToken Token => _signalled.Token;

    private void Stop(PosixSignalContext context)
    {
        context.Cancel = true;
        _signalled.Cancel();
    }

    public void Dispose()
    {
        _interrupt.Dispose();
        _term.Dispose();
        _signalled.Dispose();
    }
}
