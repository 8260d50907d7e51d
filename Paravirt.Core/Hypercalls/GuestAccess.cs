using Paravirt.Core.Domains;
using Paravirt.Core.Memory;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// copy_from_guest / copy_to_guest for hypercall handlers: guest handles are addresses in the
/// calling vCPU's address space. A managed guest runs unpaged, so its addresses are
/// guest-physical; a paged classic PV vCPU (<see cref="PvVcpuState.IsPaged"/>) has virtual
/// addresses, translated through its current page tables page by page (<see cref="PvMemory"/>).
/// </summary>
internal static class GuestAccess
{
    public static bool TryCopyFrom<T>(this Vcpu vcpu, ulong address, out T value)
        where T : unmanaged => vcpu.Pv.IsPaged ? PvMemory.TryCopyFromGuest(vcpu, address, out value) : vcpu.Domain.Memory.TryRead(address, out value);

    public static bool TryCopyTo<T>(this Vcpu vcpu, ulong address, in T value)
        where T : unmanaged => vcpu.Pv.IsPaged ? PvMemory.TryCopyToGuest(vcpu, address, in value) : vcpu.Domain.Memory.TryWrite(address, in value);

    public static bool TryCopyFrom(this Vcpu vcpu, ulong address, Span<byte> destination) =>
        vcpu.Pv.IsPaged ? PvMemory.TryCopyFromGuest(vcpu, address, destination) : vcpu.Domain.Memory.TryRead(address, destination);

    public static bool TryCopyTo(this Vcpu vcpu, ulong address, ReadOnlySpan<byte> source) =>
        vcpu.Pv.IsPaged ? PvMemory.TryCopyToGuest(vcpu, address, source) : vcpu.Domain.Memory.TryWrite(address, source);

    /// <summary>
    /// A cursor for a run of accesses that mostly stay on one page (a multicall list, a batch of
    /// descriptors): the same semantics as one copy per access, without a frame reference taken
    /// and dropped each time. Dispose it when the run ends.
    /// </summary>
    public static GuestCursor OpenCursor(this Vcpu vcpu) => new(vcpu);
}

/// <summary>
/// A run of guest accesses: through a <see cref="GuestPageCursor"/> for an unpaged vCPU, and
/// through the page tables, one translation per access, for a paged one (a batch entry may remap
/// the page the batch lives in, so a paged vCPU's translation is never cached here).
/// </summary>
internal ref struct GuestCursor
{
    private readonly Vcpu? _paged;
    private GuestPageCursor _page;

    public GuestCursor(Vcpu vcpu)
    {
        if (vcpu.Pv.IsPaged)
        {
            _paged = vcpu;
        }
        else
        {
            _page = new GuestPageCursor(vcpu.Domain.Memory);
        }
    }

    public bool TryRead<T>(ulong address, out T value)
        where T : unmanaged => _paged is null ? _page.TryRead(address, out value) : PvMemory.TryCopyFromGuest(_paged, address, out value);

    public bool TryWrite<T>(ulong address, in T value)
        where T : unmanaged => _paged is null ? _page.TryWrite(address, in value) : PvMemory.TryCopyToGuest(_paged, address, in value);

    public void Dispose()
    {
        if (_paged is null)
        {
            _page.Dispose();
        }
    }
}
