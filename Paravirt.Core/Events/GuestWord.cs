namespace Paravirt.Core.Events;

/// <summary>
/// Atomic bit operations on a 32-bit word the guest shares and may rewrite at any moment. Each is a
/// compare-exchange loop with a bounded number of attempts: a guest that keeps changing the word
/// can make an operation fail (the caller then gives up on that event, which only hurts the
/// guest) but can never hold a host thread. Xen's x86 guest atomics are single locked
/// instructions; its Arm guest atomics are bounded in the same spirit.
/// </summary>
internal static class GuestWord
{
    /// <summary>Attempts before an operation gives up. Each failure means the guest wrote the word in between.</summary>
    public const int MaxAttempts = 256;

    /// <summary>Sets <paramref name="bit"/>; <paramref name="wasSet"/> is its old value. False if the guest kept the word changing.</summary>
    public static bool TryTestAndSet(ref int word, int bit, out bool wasSet)
    {
        var mask = 1 << bit;
        var old = Volatile.Read(ref word);
        for (var i = 0; i < MaxAttempts; i++)
        {
            if ((old & mask) != 0)
            {
                wasSet = true;
                return true;
            }

            var seen = Interlocked.CompareExchange(ref word, old | mask, old);
            if (seen == old)
            {
                wasSet = false;
                return true;
            }

            old = seen;
        }

        wasSet = false;
        return false;
    }

    /// <summary>Clears <paramref name="bit"/>; <paramref name="wasSet"/> is its old value. False if the guest kept the word changing.</summary>
    public static bool TryTestAndClear(ref int word, int bit, out bool wasSet)
    {
        var mask = 1 << bit;
        var old = Volatile.Read(ref word);
        for (var i = 0; i < MaxAttempts; i++)
        {
            if ((old & mask) == 0)
            {
                wasSet = false;
                return true;
            }

            var seen = Interlocked.CompareExchange(ref word, old & ~mask, old);
            if (seen == old)
            {
                wasSet = true;
                return true;
            }

            old = seen;
        }

        wasSet = false;
        return false;
    }

    public static bool TrySet(ref int word, int bit) => TryTestAndSet(ref word, bit, out _);

    public static bool TryClear(ref int word, int bit) => TryTestAndClear(ref word, bit, out _);

    public static bool Test(ref int word, int bit) => (Volatile.Read(ref word) & (1 << bit)) != 0;
}
