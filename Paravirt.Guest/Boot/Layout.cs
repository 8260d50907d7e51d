using System.Runtime.InteropServices;
using Paravirt.Core.Abi;

namespace Paravirt.Guest;

/// <summary>Field offsets of the shared structures the stub reads and writes in place (xen/xen.h).</summary>
internal static class Layout
{
    public static readonly int VcpuInfoSize = Marshal.SizeOf<vcpu_info>();
    public static readonly ulong UpcallPending = Off<vcpu_info>(nameof(vcpu_info.evtchn_upcall_pending));
    public static readonly ulong UpcallMask = Off<vcpu_info>(nameof(vcpu_info.evtchn_upcall_mask));
    public static readonly ulong PendingSel = Off<vcpu_info>(nameof(vcpu_info.evtchn_pending_sel));
    public static readonly ulong Time = Off<vcpu_info>(nameof(vcpu_info.time));

    public static readonly ulong EvtchnPending = Off<shared_info>(nameof(shared_info.evtchn_pending));
    public static readonly ulong EvtchnMask = Off<shared_info>(nameof(shared_info.evtchn_mask));
    public static readonly ulong WcVersion = Off<shared_info>(nameof(shared_info.wc_version));
    public static readonly ulong WcSec = Off<shared_info>(nameof(shared_info.wc_sec));
    public static readonly ulong WcNsec = Off<shared_info>(nameof(shared_info.wc_nsec));
    public static readonly ulong WcSecHi = Off<shared_info>(nameof(shared_info.wc_sec_hi));

    public static ulong Off<T>(string field) => (ulong)Marshal.OffsetOf<T>(field);
}
