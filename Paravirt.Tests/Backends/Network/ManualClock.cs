namespace Paravirt.Tests.Backends.Network;

/// <summary>A clock that moves only when the test says (timestamps in ticks of 1 µs).</summary>
internal sealed class ManualClock : TimeProvider
{
    private long _now = 1_000_000;

    public override long TimestampFrequency => 1_000_000;

    public override long GetTimestamp() => Interlocked.Read(ref _now);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _now, (long)by.TotalMicroseconds);
}
