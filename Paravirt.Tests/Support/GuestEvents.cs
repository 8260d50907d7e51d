using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;

namespace Paravirt.Tests.Support;

/// <summary>Guest-side event handling as a Linux PV kernel does it, for tests that need events acknowledged.</summary>
public static class GuestEvents
{
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));
    private static readonly ulong MaskOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_mask));
    private static readonly ulong SelOffset = (ulong)Marshal.OffsetOf<vcpu_info>(nameof(vcpu_info.evtchn_pending_sel));

    /// <summary>Maps shared_info at the first frame above the guest's RAM (XENMEM_add_to_physmap) and returns its address.</summary>
    public static ulong MapSharedInfo(GuestContext g)
    {
        var gpfn = g.ReadStartInfo().nr_pages;
        var arg = g.Scratch + 0xE00;
        g.Cpu.Memory.Write(arg, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = gpfn });
        var rc = g.Hypercall(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, arg);
        if (rc != 0)
        {
            throw new InvalidOperationException($"XENMEM_add_to_physmap(shared_info) failed: {rc}");
        }

        return gpfn * 4096;
    }

    /// <summary>The address of vCPU <paramref name="vcpu"/>'s legacy vcpu_info inside a mapped shared_info.</summary>
    public static ulong LegacyVcpuInfo(ulong sharedInfo, int vcpu) => sharedInfo + (ulong)(vcpu * Marshal.SizeOf<vcpu_info>());

    /// <summary>
    /// The upcall handler's scan (Linux's xen_evtchn_do_upcall over the 2-level ABI): clear
    /// evtchn_upcall_pending, take the selector with an exchange, and for each selected word take
    /// the pending and unmasked ports, clearing their pending bits. Returns those ports.
    /// </summary>
    public static List<uint> Acknowledge(IGuestCpu cpu, ulong sharedInfo, ulong vcpuInfo)
    {
        var ports = new List<uint>();
        cpu.Memory.WriteVolatile(vcpuInfo, 1, 0);
        var sel = cpu.Memory.And64(vcpuInfo + SelOffset, 0);
        for (var word = 0; word < 64; word++)
        {
            if ((sel & (1UL << word)) == 0)
            {
                continue;
            }

            var pendingAt = sharedInfo + PendingOffset + ((ulong)word * 8);
            var mask = cpu.Memory.ReadVolatile(sharedInfo + MaskOffset + ((ulong)word * 8), 8);
            var pending = cpu.Memory.ReadVolatile(pendingAt, 8) & ~mask;
            for (var bit = 0; bit < 64; bit++)
            {
                if ((pending & (1UL << bit)) != 0)
                {
                    cpu.Memory.And64(pendingAt, ~(1UL << bit));
                    ports.Add((uint)((word * 64) + bit));
                }
            }
        }

        return ports;
    }
}
