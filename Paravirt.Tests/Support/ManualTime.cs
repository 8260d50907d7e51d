namespace Paravirt.Tests.Support;

/// <summary>A clock that moves only when the test says so (<see cref="Advance"/>): timestamps in 100 ns ticks.</summary>
public sealed class ManualTime : TimeProvider
{
    private long ticks = TimeSpan.FromDays(1).Ticks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Volatile.Read(ref ticks);

    public void Advance(TimeSpan by) => Interlocked.Add(ref ticks, by.Ticks);
}
