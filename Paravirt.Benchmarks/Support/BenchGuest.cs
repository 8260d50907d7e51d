using System.Runtime.InteropServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using Paravirt.Core.Domains;

namespace Paravirt.Benchmarks.Support;

/// <summary>
/// Reaching a managed vCPU's gate from a benchmark without running its domain: the domain is
/// created (not started), vCPU 0 is brought up as <c>Domain.Start</c> does, and the benchmark thread
/// calls the same <see cref="ManagedCpu"/> a vCPU thread would. Guest memory is addressed by
/// guest-physical address, exactly as the guest stub does.
/// </summary>
internal static class BenchGuest
{
    private static readonly ulong PendingOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_pending));
    private static readonly ulong MaskOffset = (ulong)Marshal.OffsetOf<shared_info>(nameof(shared_info.evtchn_mask));
    private static readonly ulong SelOffset = (ulong)Marshal.OffsetOf<vcpu_info>(nameof(vcpu_info.evtchn_pending_sel));

    /// <summary>The gate of vCPU 0 of a created (not started) domain.</summary>
    public static IGuestCpu Gate(Domain domain)
    {
        var vcpu = domain.Vcpus[0];
        vcpu.SetDown(false); // as Domain.Start does for vCPU 0: the gate parks a vCPU that is down
        return new ManagedCpu(domain, vcpu);
    }

    /// <summary>The first free guest-physical page (start_info.pt_base: the builder leaves everything above it free).</summary>
    public static ulong Scratch(IGuestCpu cpu, ulong startInfo) => cpu.Memory.Read<start_info>(startInfo).pt_base;

    /// <summary>Scratch of a created domain, read through its gate.</summary>
    public static ulong Scratch(Domain domain, IGuestCpu cpu) => Scratch(cpu, domain.StartInfoAddress);

    /// <summary>A hypercall that must succeed; a clear failure otherwise.</summary>
    public static void Expect(long rc, string what)
    {
        if (rc != 0)
        {
            throw new InvalidOperationException($"{what} failed with {rc}; the benchmark's setup expects 0");
        }
    }

    /// <summary>Maps shared_info just above the guest's RAM (XENMEM_add_to_physmap) and returns its address.</summary>
    public static ulong MapSharedInfo(IGuestCpu cpu, ulong startInfo)
    {
        var scratch = Scratch(cpu, startInfo);
        var gpfn = cpu.Memory.Read<start_info>(startInfo).nr_pages;
        var arg = scratch + 0xE00;
        cpu.Memory.Write(arg, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_shared_info, idx = 0, gpfn = gpfn });
        Expect(cpu.Hypercall(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, arg), "XENMEM_add_to_physmap(shared_info)");
        return gpfn * 4096;
    }

    /// <summary>Registers the event callback (CALLBACKOP_register), so upcalls reach <see cref="ManagedKernel.EventCallback"/>.</summary>
    public static void RegisterEventCallback(IGuestCpu cpu, ulong scratch)
    {
        cpu.Memory.Write(scratch + 0xD00, new callback_register { type = Callback.CALLBACKTYPE_event, address = 0xffff_8000_0000_1000 });
        Expect(cpu.Hypercall(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, scratch + 0xD00), "CALLBACKOP_register");
    }

    /// <summary>Places grant frame 0 just above the guest's RAM (XENMEM_add_to_physmap) and returns its address.</summary>
    public static ulong MapGrantFrame(IGuestCpu cpu, ulong startInfo)
    {
        var scratch = Scratch(cpu, startInfo);
        var gpfn = cpu.Memory.Read<start_info>(startInfo).nr_pages + 16;
        var arg = scratch + 0xF00;
        cpu.Memory.Write(arg, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_grant_table, idx = 0, gpfn = gpfn });
        Expect(cpu.Hypercall(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, arg), "XENMEM_add_to_physmap(grant_table 0)");
        return gpfn << 12;
    }

    /// <summary>gnttab_grant_foreign_access_ref (v1): domid and frame first, then the flags that make the entry live.</summary>
    public static void GrantV1(IGuestCpu cpu, ulong table, uint gref, ushort domid, ulong frame, bool readOnly)
    {
        var entry = table + (gref * 8UL);
        cpu.Memory.Write(entry + 2, domid);
        cpu.Memory.Write(entry + 4, (uint)frame);
        cpu.Memory.WriteVolatile(entry, 2, GrantTable.GTF_permit_access | (readOnly ? GrantTable.GTF_readonly : 0));
    }

    /// <summary>
    /// The upcall handler's scan over the 2-level ABI, as Linux's xen_evtchn_do_upcall does it:
    /// clear evtchn_upcall_pending, take the selector, clear each pending unmasked port's bit.
    /// Returns how many times <paramref name="port"/> was found pending. Allocates nothing.
    /// </summary>
    public static int Acknowledge(IGuestCpu cpu, ulong sharedInfo, uint port)
    {
        var vcpuInfo = sharedInfo + (ulong)(cpu.VcpuId * Marshal.SizeOf<vcpu_info>());
        var seen = 0;
        cpu.Memory.WriteVolatile(vcpuInfo, 1, 0);
        var sel = cpu.Memory.And64(vcpuInfo + SelOffset, 0);
        while (sel != 0)
        {
            var word = System.Numerics.BitOperations.TrailingZeroCount(sel);
            sel &= sel - 1;
            var pendingAt = sharedInfo + PendingOffset + ((ulong)word * 8);
            var mask = cpu.Memory.ReadVolatile(sharedInfo + MaskOffset + ((ulong)word * 8), 8);
            var pending = cpu.Memory.ReadVolatile(pendingAt, 8) & ~mask;
            while (pending != 0)
            {
                var bit = System.Numerics.BitOperations.TrailingZeroCount(pending);
                pending &= pending - 1;
                cpu.Memory.And64(pendingAt, ~(1UL << bit));
                if ((uint)((word * 64) + bit) == port)
                {
                    seen++;
                }
            }
        }

        return seen;
    }
}
