using System.Diagnostics;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// netback's transmit credit scheduler (the vif's <c>rate</c> node, <c>bytes,usec</c>): a vif
/// may send <see cref="CreditBytes"/> bytes per window of <see cref="Window"/>. The credit starts
/// full; a frame that needs more than what is left waits until the window has passed since the
/// credit was last replenished, when the credit grows by <see cref="CreditBytes"/> (capped at
/// <see cref="CreditBytes"/>: unused credit does not pile up into a burst). A frame larger than
/// the whole credit is let through once the credit is full (and takes all of it), so it is not
/// stuck for ever. Over any run of T from the limiter's start, a vif sends at most
/// <c>CreditBytes * (1 + floor(T / Window))</c> bytes, plus what frames larger than the whole
/// credit exceed it by.
/// Not thread-safe: one netback worker uses it.
/// </summary>
internal sealed class CreditLimiter
{
    private readonly long _windowTicks;
    private long _remaining;
    private long _windowStart;

    public CreditLimiter(long creditBytes, TimeSpan window, long now)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(creditBytes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        CreditBytes = creditBytes;
        Window = window;
        _windowTicks = Math.Max(1, (long)(window.TotalSeconds * Stopwatch.Frequency));
        _remaining = creditBytes;
        _windowStart = now;
    }

    public long CreditBytes { get; }

    public TimeSpan Window { get; }

    /// <summary>Credit left in this window.</summary>
    public long Remaining => _remaining;

    /// <summary>Times a frame had to wait for the next window.</summary>
    public long Waits { get; private set; }

    /// <summary>
    /// Takes <paramref name="bytes"/> of credit at <paramref name="now"/> (a <see cref="Stopwatch"/>
    /// timestamp). False when the frame must wait: <paramref name="retryAt"/> is when the next
    /// window opens.
    /// </summary>
    public bool TryConsume(int bytes, long now, out long retryAt)
    {
        retryAt = 0;
        if (bytes <= _remaining)
        {
            _remaining -= bytes;
            return true;
        }

        var next = _windowStart + _windowTicks;
        if (now - next >= 0)
        {
            _windowStart = now;
            _remaining = Math.Min(_remaining + CreditBytes, CreditBytes);
            if (bytes <= _remaining)
            {
                _remaining -= bytes;
                return true;
            }
        }

        if (_remaining == CreditBytes)
        {
            _remaining = 0; // larger than the whole credit: allowed once the credit is full
            return true;
        }

        Waits++;
        retryAt = _windowStart + _windowTicks;
        return false;
    }
}
