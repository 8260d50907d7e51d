using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Memory;

namespace Paravirt.Core.Boot;

/// <summary>
/// Builds a managed domain the way Xen's PV domain builder does, minus the kernel image:
/// allocates its RAM, gives it a shared_info page, and writes <c>start_info</c>, the xenstore and
/// console pages and the initial P→M list into its memory.
/// <code>
/// pfn 0              left empty (a null page)
/// pfn 1              start_info            (vCPU 0 gets its address in rsi)
/// pfn 2              xenstore ring page    (start_info.store_mfn)
/// pfn 3              console ring page     (start_info.console.domU.mfn)
/// pfn 4 .. 4+k-1     P→M list, one 8-byte MFN per pfn (start_info.mfn_list) — classic PV only
/// pfn 4+k ..         free for the guest    (start_info.pt_base: no page tables, unpaged)
/// </code>
/// A translated domain (<see cref="DomainConfig.AutoTranslated"/>, the default for managed guests)
/// gets GFNs where a classic PV guest gets MFNs (store, console), no P→M list (mfn_list 0), and
/// its free memory starts at pfn 4; it maps shared_info itself with XENMEM_add_to_physmap.
/// <code>
/// </code>
/// A managed guest runs unpaged, so its virtual addresses are its pseudo-physical ones.
/// </summary>
internal static class DomainBuilder
{
    public const ulong StartInfoPfn = 1;
    public const ulong XenstorePfn = 2;
    public const ulong ConsolePfn = 3;
    public const ulong P2mPfn = 4;

    /// <summary>The magic at the head of start_info for a 64-bit PV guest.</summary>
    public const string Magic = "xen-3.0-x86_64";

    private static readonly int VcpuInfoSize = Marshal.SizeOf<vcpu_info>();

    public static void Build(Domain domain)
    {
        var nrPages = (long)domain.Config.MemoryMiB * 256;
        var p2mFrames = (nrPages * 8 + MachineMemory.PageSize - 1) / MachineMemory.PageSize;
        if (P2mPfn + (ulong)p2mFrames + 1 > (ulong)nrPages)
        {
            throw new ArgumentException($"domain '{domain.Name}': {domain.Config.MemoryMiB} MiB is too small for the boot layout");
        }

        AllocateRam(domain, nrPages);
        // libxl gives every PV guest one E820_RAM entry of maxmem (+ slack_memkb, 0 by default)
        // with xc_domain_set_memmap_limit; XENMEM_memory_map returns it.
        domain.MemoryMap = [new E820Entry { addr = 0, size = (ulong)domain.MaxPages << MachineMemory.PageShift, type = E820Entry.E820_RAM }];
        SetUpSharedInfo(domain);
        if (!domain.Grants.Initialise())
        {
            throw new InvalidOperationException($"domain '{domain.Name}': no machine frame left for its grant table");
        }

        if (domain.IsTranslated)
        {
            p2mFrames = 0;
        }
        else
        {
            WriteP2mList(domain, nrPages);
        }

        // As the toolstack's xc_evtchn_alloc_unbound(guest, remote 0): the store's port lives in the
        // guest, unbound for domain 0, which binds it when it introduces the domain.
        var storePort = domain.Events.AllocUnbound(0);
        if (storePort < 0)
        {
            throw new InvalidOperationException($"domain '{domain.Name}': cannot allocate its xenstore event channel ({storePort})");
        }

        domain.StoreEvtchn = (uint)storePort;

        // The console's port the same way (libxl__build_pre: xc_evtchn_alloc_unbound(guest,
        // console_domid 0)); the console backend binds it when the domain is created.
        var consolePort = domain.Events.AllocUnbound(0);
        if (consolePort < 0)
        {
            throw new InvalidOperationException($"domain '{domain.Name}': cannot allocate its console event channel ({consolePort})");
        }

        domain.ConsoleEvtchn = (uint)consolePort;
        ZeroConsolePage(domain);
        WriteStartInfo(domain, nrPages, p2mFrames);
    }

    private static void AllocateRam(Domain domain, long nrPages)
    {
        var frames = domain.Hypervisor.Frames;
        for (var pfn = 0L; pfn < nrPages; pfn++)
        {
            if (!domain.TryAllocateRam(out var mfn))
            {
                throw new InvalidOperationException($"domain '{domain.Name}': out of machine memory after {pfn} of {nrPages} pages");
            }

            domain.PhysMap.Set((ulong)pfn, mfn, P2mType.Ram);
            frames.SetMachineToPhys(mfn, (ulong)pfn);
        }
    }

    private static void SetUpSharedInfo(Domain domain)
    {
        var frames = domain.Hypervisor.Frames;
        if (!frames.TryAllocate(domain.Id, out var mfn))
        {
            throw new InvalidOperationException($"domain '{domain.Name}': no machine frame left for shared_info");
        }

        var page = PinnedPage.TryPin(frames, mfn, domain.Id)
            ?? throw new InvalidOperationException("a frame just allocated could not be pinned");
        domain.SharedInfo = page;

        // Every vCPU starts with events masked (Xen's vcpu_create), and its vcpu_info in the legacy slot.
        foreach (var v in domain.Vcpus)
        {
            if (v.Id < ArchX86.XEN_LEGACY_MAX_VCPUS)
            {
                v.UseLegacyVcpuInfo(page, v.Id * VcpuInfoSize);
                v.Info.evtchn_upcall_mask = 1;
                v.UpdateTimeInfo();
            }
        }

        WriteWallclock(domain);
    }

    /// <summary>The wallclock at system time zero, with the wc_version protocol (odd while updating).</summary>
    internal static void WriteWallclock(Domain domain)
    {
        ref var s = ref domain.SharedInfo!.At<shared_info>(0);
        var clock = domain.Hypervisor.Clock;
        var v = Volatile.Read(ref s.wc_version) & ~1u;
        Volatile.Write(ref s.wc_version, v + 1);
        s.wc_sec = (uint)clock.BootWallclockSec;
        s.wc_sec_hi = (uint)(clock.BootWallclockSec >> 32);
        s.wc_nsec = clock.BootWallclockNsec;
        Volatile.Write(ref s.wc_version, v + 2);
    }

    private static void WriteP2mList(Domain domain, long nrPages)
    {
        Span<ulong> chunk = stackalloc ulong[512];
        for (var pfn = 0L; pfn < nrPages; pfn += chunk.Length)
        {
            var n = (int)Math.Min(chunk.Length, nrPages - pfn);
            for (var i = 0; i < n; i++)
            {
                domain.PhysMap.TryLookup((ulong)(pfn + i), out chunk[i], out _);
            }

            var address = (P2mPfn << MachineMemory.PageShift) + (ulong)pfn * 8;
            if (!domain.Memory.TryWrite(address, MemoryMarshal.AsBytes(chunk[..n])))
            {
                throw new InvalidOperationException("the P→M list does not fit in the domain's memory");
            }
        }
    }

    private static unsafe void WriteStartInfo(Domain domain, long nrPages, long p2mFrames)
    {
        var si = default(start_info);
        Encoding.ASCII.GetBytes(Magic, new Span<byte>(si.magic, 32));
        si.nr_pages = (ulong)nrPages;
        si.shared_info = domain.SharedInfo!.Mfn << MachineMemory.PageShift;
        si.flags = 0;
        si.store_mfn = FrameOf(domain, XenstorePfn);
        si.store_evtchn = domain.StoreEvtchn;
        si.console.domU.mfn = FrameOf(domain, ConsolePfn);
        si.console.domU.evtchn = domain.ConsoleEvtchn;
        si.pt_base = (P2mPfn + (ulong)p2mFrames) << MachineMemory.PageShift;
        si.nr_pt_frames = 0;
        si.mfn_list = domain.IsTranslated ? 0 : P2mPfn << MachineMemory.PageShift;
        si.mod_start = 0;
        si.mod_len = 0;
        var cmd = Encoding.UTF8.GetBytes(domain.Config.CommandLine);
        cmd.CopyTo(new Span<byte>(si.cmd_line, Xen.MAX_GUEST_CMDLINE));
        si.first_p2m_pfn = domain.IsTranslated ? 0 : P2mPfn;
        si.nr_p2m_frames = (ulong)p2mFrames;

        domain.StartInfoAddress = StartInfoPfn << MachineMemory.PageShift;
        if (!domain.Memory.TryWrite(domain.StartInfoAddress, si))
        {
            throw new InvalidOperationException("start_info does not fit in the domain's memory");
        }
    }

    /// <summary>start_info.store_mfn: the store page's GFN (translated) or MFN (classic PV).</summary>
    public static ulong StoreFrame(Domain domain) => FrameOf(domain, XenstorePfn);

    /// <summary>The machine frame of the store page.</summary>
    public static ulong StoreMfn(Domain domain) => MfnOf(domain, XenstorePfn);

    /// <summary>start_info.console.domU.mfn: the console page's GFN (translated) or MFN (classic PV); XenStore's console/ring-ref.</summary>
    public static ulong ConsoleFrame(Domain domain) => FrameOf(domain, ConsolePfn);

    /// <summary>The machine frame of the console page.</summary>
    public static ulong ConsoleMfn(Domain domain) => MfnOf(domain, ConsolePfn);

    /// <summary>An empty <c>xencons_interface</c>: both rings empty, all four indices 0.</summary>
    private static void ZeroConsolePage(Domain domain)
    {
        if (!domain.Memory.TryWrite(ConsolePfn << MachineMemory.PageShift, default(Abi.Io.xencons_interface)))
        {
            throw new InvalidOperationException("the console page does not fit in the domain's memory");
        }
    }

    /// <summary>What start_info names a page by: its GFN in a translated domain, its MFN in a classic PV one.</summary>
    private static ulong FrameOf(Domain domain, ulong pfn) => domain.IsTranslated ? pfn : MfnOf(domain, pfn);

    private static ulong MfnOf(Domain domain, ulong pfn)
    {
        domain.PhysMap.TryLookup(pfn, out var mfn, out _);
        return mfn;
    }
}
