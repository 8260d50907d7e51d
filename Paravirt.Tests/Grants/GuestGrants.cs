using Paravirt.Core.Abi;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Grants;

/// <summary>Guest-side grant handling as a Linux frontend does it (drivers/xen/grant-table.c), for tests.</summary>
public static class GuestGrants
{
    /// <summary>Places grant frame <paramref name="frame"/> (or a v2 status frame) just above the guest's RAM and returns its address.</summary>
    public static ulong MapFrame(GuestContext g, uint frame = 0, bool status = false)
    {
        var gpfn = g.ReadStartInfo().nr_pages + 16 + frame + (status ? 64u : 0u);
        var arg = g.Scratch + 0xF00;
        var idx = frame | (status ? XenMem.XENMAPIDX_grant_table_status : 0);
        g.Cpu.Memory.Write(arg, new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = XenMem.XENMAPSPACE_grant_table, idx = idx, gpfn = gpfn });
        var rc = g.Hypercall(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, arg);
        if (rc != 0)
        {
            throw new InvalidOperationException($"XENMEM_add_to_physmap(grant_table {idx:x}) failed: {rc}");
        }

        return gpfn << 12;
    }

    /// <summary>gnttab_grant_foreign_access_ref (v1): domid and frame first, then the flags that make the entry live.</summary>
    public static void GrantV1(GuestContext g, ulong table, uint gref, ushort domid, ulong frame, bool readOnly = false, uint extraFlags = 0)
    {
        var entry = table + (gref * 8UL);
        g.Cpu.Memory.Write(entry + 2, domid);
        g.Cpu.Memory.Write(entry + 4, (uint)frame);
        g.Cpu.Memory.WriteVolatile(entry, 2, GrantTable.GTF_permit_access | (readOnly ? GrantTable.GTF_readonly : 0) | extraFlags);
    }

    /// <summary>The v2 equivalent: a full-page grant of 16 bytes.</summary>
    public static void GrantV2(GuestContext g, ulong table, uint gref, ushort domid, ulong frame, bool readOnly = false)
    {
        var entry = table + (gref * 16UL);
        g.Cpu.Memory.Write(entry + 2, domid);
        g.Cpu.Memory.Write(entry + 8, frame);
        g.Cpu.Memory.WriteVolatile(entry, 2, GrantTable.GTF_permit_access | (readOnly ? GrantTable.GTF_readonly : 0));
    }

    public static ushort FlagsV1(GuestContext g, ulong table, uint gref) => (ushort)g.Cpu.Memory.ReadVolatile(table + (gref * 8UL), 2);

    /// <summary>gnttab_end_foreign_access_ref_v1: clears the flags unless the hypervisor has the grant in use.</summary>
    public static bool EndForeignAccessV1(GuestContext g, ulong table, uint gref)
    {
        var entry = table + (gref * 8UL);
        var word = (uint)g.Cpu.Memory.ReadVolatile(entry, 4);
        while (true)
        {
            if ((word & (GrantTable.GTF_reading | GrantTable.GTF_writing)) != 0)
            {
                return false;
            }

            var seen = g.Cpu.Memory.CompareExchange32(entry, word & 0xFFFF0000, word);
            if (seen == word)
            {
                return true;
            }

            word = seen;
        }
    }

    /// <summary>grant_table_op with one argument (or an array of <paramref name="count"/>) at the scratch page.</summary>
    public static long Op<T>(GuestContext g, int cmd, ref T arg, uint count = 1, ulong at = 0)
        where T : unmanaged
    {
        var address = at == 0 ? g.Scratch : at;
        g.Cpu.Memory.Write(address, arg);
        var rc = g.Hypercall(Xen.__HYPERVISOR_grant_table_op, (ulong)cmd, address, count);
        arg = g.Cpu.Memory.Read<T>(address);
        return rc;
    }

    /// <summary>A page of the guest's free memory to share, filled with <paramref name="fill"/>; returns its GFN.</summary>
    public static ulong DataPage(GuestContext g, int index, byte fill)
    {
        var address = g.Scratch + 0x4000 + ((ulong)index * 4096);
        var bytes = new byte[4096];
        Array.Fill(bytes, fill);
        g.Cpu.Memory.Write(address, (ReadOnlySpan<byte>)bytes);
        return address >> 12;
    }
}
