using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Events;

/// <summary>
/// The 2-level event ABI: one pending and one mask bit per port in shared_info
/// (<c>evtchn_pending</c>, <c>evtchn_mask</c>), a selector word per vCPU
/// (<c>vcpu_info.evtchn_pending_sel</c>, one bit per 64-port word) and
/// <c>evtchn_upcall_pending</c>. Every update is an atomic read-modify-write on the shared words in
/// the order Xen uses (evtchn_2l_set_pending / evtchn_2l_unmask), so a guest that masks, unmasks
/// and polls at the same time never loses an event.
/// </summary>
internal sealed class TwoLevelEvents(Domain domain) : IEventDelivery
{
    private static readonly int PendingOffset = (int)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));
    private static readonly int MaskOffset = (int)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_mask));

    /// <summary>Sets a port pending and, if it is unmasked and its selector bit was clear, raises the upcall on <paramref name="vcpuId"/>.</summary>
    public void SetPending(int vcpuId, uint port)
    {
        var page = domain.SharedInfo;
        if (page is null || port >= EventChannel.EVTCHN_2L_NR_CHANNELS)
        {
            return;
        }

        var bit = 1UL << (int)(port % 64);
        var word = (int)(port / 64);
        if ((Interlocked.Or(ref page.At<ulong>(PendingOffset + (word * 8)), bit) & bit) != 0)
        {
            return; // already pending: nothing new to say
        }

        domain.Meter.CountEventReceived();
        domain.WakePollers();
        if ((Volatile.Read(ref page.At<ulong>(MaskOffset + (word * 8))) & bit) != 0)
        {
            return;
        }

        RaiseSelector(vcpuId, word);
    }

    /// <summary>Clears a port's pending bit (on close, so a rebind starts clean).</summary>
    public void ClearPending(uint port)
    {
        var page = domain.SharedInfo;
        if (page is null || port >= EventChannel.EVTCHN_2L_NR_CHANNELS)
        {
            return;
        }

        Interlocked.And(ref page.At<ulong>(PendingOffset + ((int)(port / 64) * 8)), ~(1UL << (int)(port % 64)));
    }

    /// <summary>EVTCHNOP_unmask: clears the mask bit and, if the port is pending, raises the upcall it was holding back.</summary>
    public void Unmask(int vcpuId, uint port)
    {
        var page = domain.SharedInfo;
        if (page is null || port >= EventChannel.EVTCHN_2L_NR_CHANNELS)
        {
            return;
        }

        var bit = 1UL << (int)(port % 64);
        var word = (int)(port / 64);
        if ((Interlocked.And(ref page.At<ulong>(MaskOffset + (word * 8)), ~bit) & bit) != 0
            && (Volatile.Read(ref page.At<ulong>(PendingOffset + (word * 8))) & bit) != 0)
        {
            RaiseSelector(vcpuId, word);
        }
    }

    public bool IsPending(uint port)
    {
        var page = domain.SharedInfo;
        return page is not null && port < EventChannel.EVTCHN_2L_NR_CHANNELS
            && (Volatile.Read(ref page.At<ulong>(PendingOffset + ((int)(port / 64) * 8))) & (1UL << (int)(port % 64))) != 0;
    }

    public bool IsMasked(uint port)
    {
        var page = domain.SharedInfo;
        return page is not null && port < EventChannel.EVTCHN_2L_NR_CHANNELS
            && (Volatile.Read(ref page.At<ulong>(MaskOffset + ((int)(port / 64) * 8))) & (1UL << (int)(port % 64))) != 0;
    }

    private void RaiseSelector(int vcpuId, int word)
    {
        if ((uint)vcpuId >= (uint)domain.Vcpus.Length)
        {
            return;
        }

        var vcpu = domain.Vcpus[vcpuId];
        if (!vcpu.HasVcpuInfo)
        {
            return;
        }

        var sel = 1UL << word;
        if ((Interlocked.Or(ref vcpu.Info.evtchn_pending_sel, sel) & sel) == 0)
        {
            vcpu.MarkEventsPending();
        }
    }
}
