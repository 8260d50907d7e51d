using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// copy_from_guest / copy_to_guest for hypercall handlers: guest handles are addresses in the
/// calling vCPU's address space. A managed guest runs unpaged, so its addresses are
/// guest-physical; a paged engine (the interpreter) will translate through the guest's page
/// tables here, in one place.
/// </summary>
internal static class GuestAccess
{
    public static bool TryCopyFrom<T>(this Vcpu vcpu, ulong address, out T value)
        where T : unmanaged => vcpu.Domain.Memory.TryRead(address, out value);

    public static bool TryCopyTo<T>(this Vcpu vcpu, ulong address, in T value)
        where T : unmanaged => vcpu.Domain.Memory.TryWrite(address, in value);

    public static bool TryCopyFrom(this Vcpu vcpu, ulong address, Span<byte> destination) =>
        vcpu.Domain.Memory.TryRead(address, destination);

    public static bool TryCopyTo(this Vcpu vcpu, ulong address, ReadOnlySpan<byte> source) =>
        vcpu.Domain.Memory.TryWrite(address, source);

    /// <summary>
    /// A cursor for a run of accesses that mostly stay on one page (a multicall list, a batch of
    /// descriptors): the same semantics as one copy per access, without a frame reference taken
    /// and dropped each time. Dispose it when the run ends.
    /// </summary>
    public static Memory.GuestPageCursor OpenCursor(this Vcpu vcpu) => new(vcpu.Domain.Memory);
}
