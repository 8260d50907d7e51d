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

        SetUpCommon(domain, nrPages);
        if (domain.IsTranslated)
        {
            p2mFrames = 0;
        }
        else
        {
            WriteP2mList(domain, P2mPfn, nrPages);
        }

        domain.StorePfn = XenstorePfn;
        domain.ConsolePfn = ConsolePfn;
        ZeroPage(domain, XenstorePfn);
        ZeroPage(domain, ConsolePfn);
        domain.StartInfoAddress = StartInfoPfn << MachineMemory.PageShift;
        WriteStartInfo(domain, StartInfoPfn, new StartInfoLayout
        {
            NrPages = (ulong)nrPages,
            PtBase = (P2mPfn + (ulong)p2mFrames) << MachineMemory.PageShift,
            MfnList = domain.IsTranslated ? 0 : P2mPfn << MachineMemory.PageShift,
            FirstP2mPfn = domain.IsTranslated ? 0 : P2mPfn,
            NrP2mFrames = (ulong)p2mFrames,
        });
    }

    /// <summary>
    /// The steps every builder shares, as libxl/libxenguest do them before the layout: the domain's
    /// RAM (pfn 0..nrPages-1, each frame's M2P entry set), its E820 map, shared_info (events masked,
    /// the wallclock), the grant table, and the xenstore and console event channels (unbound, for
    /// domain 0).
    /// </summary>
    internal static void SetUpCommon(Domain domain, long nrPages)
    {
        AllocateRam(domain, nrPages);
        // libxl gives every PV guest one E820_RAM entry of maxmem (+ slack_memkb, 0 by default)
        // with xc_domain_set_memmap_limit; XENMEM_memory_map returns it.
        domain.MemoryMap = [new E820Entry { addr = 0, size = (ulong)domain.MaxPages << MachineMemory.PageShift, type = E820Entry.E820_RAM }];
        SetUpSharedInfo(domain);
        if (!domain.Grants.Initialise())
        {
            throw new InvalidOperationException($"domain '{domain.Name}': no machine frame left for its grant table");
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

    /// <summary>Writes the P→M list (one 8-byte MFN per pfn, libxenguest's p2m_guest) at pseudo-physical frame <paramref name="atPfn"/>.</summary>
    internal static void WriteP2mList(Domain domain, ulong atPfn, long nrPages)
    {
        Span<ulong> chunk = stackalloc ulong[512];
        for (var pfn = 0L; pfn < nrPages; pfn += chunk.Length)
        {
            var n = (int)Math.Min(chunk.Length, nrPages - pfn);
            for (var i = 0; i < n; i++)
            {
                domain.PhysMap.TryLookup((ulong)(pfn + i), out chunk[i], out _);
            }

            var address = (atPfn << MachineMemory.PageShift) + (ulong)pfn * 8;
            if (!domain.Memory.TryWrite(address, MemoryMarshal.AsBytes(chunk[..n])))
            {
                throw new InvalidOperationException("the P→M list does not fit in the domain's memory");
            }
        }
    }

    /// <summary>The layout-dependent fields of start_info (xen.h); the rest comes from the domain.</summary>
    internal readonly record struct StartInfoLayout
    {
        public ulong NrPages { get; init; }

        public uint Flags { get; init; }

        public ulong PtBase { get; init; }

        public ulong NrPtFrames { get; init; }

        public ulong MfnList { get; init; }

        public ulong ModStart { get; init; }

        public ulong ModLen { get; init; }

        public ulong FirstP2mPfn { get; init; }

        public ulong NrP2mFrames { get; init; }
    }

    /// <summary>
    /// Writes start_info at <paramref name="pfn"/> (libxenguest's start_info_x86_64): the magic,
    /// shared_info's machine address, the store and console frames (<see cref="Domain.StorePfn"/>,
    /// <see cref="Domain.ConsolePfn"/>) and ports, the command line, and the layout's fields.
    /// </summary>
    internal static unsafe void WriteStartInfo(Domain domain, ulong pfn, in StartInfoLayout layout)
    {
        var si = default(start_info);
        Encoding.ASCII.GetBytes(Magic, new Span<byte>(si.magic, 32));
        si.nr_pages = layout.NrPages;
        si.shared_info = domain.SharedInfo!.Mfn << MachineMemory.PageShift;
        si.flags = layout.Flags;
        si.store_mfn = FrameOf(domain, domain.StorePfn);
        si.store_evtchn = domain.StoreEvtchn;
        si.console.domU.mfn = FrameOf(domain, domain.ConsolePfn);
        si.console.domU.evtchn = domain.ConsoleEvtchn;
        si.pt_base = layout.PtBase;
        si.nr_pt_frames = layout.NrPtFrames;
        si.mfn_list = layout.MfnList;
        si.mod_start = layout.ModStart;
        si.mod_len = layout.ModLen;
        var cmd = Encoding.UTF8.GetBytes(domain.Config.CommandLine);
        cmd.CopyTo(new Span<byte>(si.cmd_line, Xen.MAX_GUEST_CMDLINE));
        si.first_p2m_pfn = layout.FirstP2mPfn;
        si.nr_p2m_frames = layout.NrP2mFrames;
        if (!domain.Memory.TryWrite(pfn << MachineMemory.PageShift, si))
        {
            throw new InvalidOperationException("start_info does not fit in the domain's memory");
        }
    }

    /// <summary>start_info.store_mfn: the store page's GFN (translated) or MFN (classic PV).</summary>
    public static ulong StoreFrame(Domain domain) => FrameOf(domain, domain.StorePfn);

    /// <summary>The machine frame of the store page.</summary>
    public static ulong StoreMfn(Domain domain) => MfnOf(domain, domain.StorePfn);

    /// <summary>start_info.console.domU.mfn: the console page's GFN (translated) or MFN (classic PV); XenStore's console/ring-ref.</summary>
    public static ulong ConsoleFrame(Domain domain) => FrameOf(domain, domain.ConsolePfn);

    /// <summary>The machine frame of the console page.</summary>
    public static ulong ConsoleMfn(Domain domain) => MfnOf(domain, domain.ConsolePfn);

    /// <summary>Clears a page (an empty xenstore or console ring: every index 0), as xc_clear_domain_page does.</summary>
    internal static void ZeroPage(Domain domain, ulong pfn)
    {
        if (!domain.Memory.TryClear(pfn << MachineMemory.PageShift, MachineMemory.PageSize))
        {
            throw new InvalidOperationException($"page {pfn} does not fit in the domain's memory");
        }
    }

    /// <summary>What start_info names a page by: its GFN in a translated domain, its MFN in a classic PV one.</summary>
    internal static ulong FrameOf(Domain domain, ulong pfn) => domain.IsTranslated ? pfn : MfnOf(domain, pfn);

    internal static ulong MfnOf(Domain domain, ulong pfn)
    {
        domain.PhysMap.TryLookup(pfn, out var mfn, out _);
        return mfn;
    }
}
