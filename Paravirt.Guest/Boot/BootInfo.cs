using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// A checked copy of <c>start_info</c> (xen/xen.h), the page Xen's domain builder fills and whose
/// address a 64-bit PV kernel finds in <c>%rsi</c> at its entry point. It is read once, at boot:
/// the hypervisor does not change it afterwards.
/// </summary>
public sealed class BootInfo
{
    /// <summary>The magic a 64-bit PV guest expects at the head of start_info.</summary>
    public const string ExpectedMagic = "xen-3.0-x86_64";

    private BootInfo()
    {
    }

    /// <summary>Guest-physical address start_info was read from.</summary>
    public ulong Address { get; private init; }

    /// <summary><c>magic</c>, e.g. "xen-3.0-x86_64".</summary>
    public string Magic { get; private init; } = "";

    /// <summary><c>nr_pages</c>: pages of RAM the domain starts with (pfn 0 .. nr_pages-1).</summary>
    public ulong NrPages { get; private init; }

    /// <summary><c>shared_info</c>: the machine address of the shared-info page (meaningful to classic PV only).</summary>
    public ulong SharedInfoMachineAddress { get; private init; }

    /// <summary><c>flags</c> (<c>SIF_*</c>).</summary>
    public uint Flags { get; private init; }

    /// <summary><c>store_mfn</c>: the xenstore ring page, a GFN when translated, an MFN for classic PV.</summary>
    public ulong StoreFrame { get; private init; }

    /// <summary><c>store_evtchn</c>: the already connected xenstore event channel.</summary>
    public uint StoreEvtchn { get; private init; }

    /// <summary><c>console.domU.mfn</c>: the console ring page (GFN or MFN, as the store's).</summary>
    public ulong ConsoleFrame { get; private init; }

    /// <summary><c>console.domU.evtchn</c>: the console event channel; 0 when the builder gave none.</summary>
    public uint ConsoleEvtchn { get; private init; }

    /// <summary><c>pt_base</c>: for a managed (unpaged) guest, the first free page; everything above it up to nr_pages is the guest's.</summary>
    public ulong PtBase { get; private init; }

    /// <summary><c>mfn_list</c>: the guest address of the P→M list (classic PV), 0 for a translated guest.</summary>
    public ulong MfnList { get; private init; }

    /// <summary><c>cmd_line</c>.</summary>
    public string CommandLine { get; private init; } = "";

    /// <summary>
    /// True when the domain is auto-translated (XENFEAT_auto_translated_physmap): it names its
    /// pages by GFN (= pfn) and has no P→M list. Classic PV names them by MFN.
    /// </summary>
    public bool IsAutoTranslated { get; private init; }

    /// <summary>Reads and checks start_info at <paramref name="address"/>.</summary>
    /// <exception cref="InvalidOperationException">The magic is not <see cref="ExpectedMagic"/>: this is not a 64-bit PV start of day.</exception>
    public static unsafe BootInfo Read(IGuestPhysicalMemory memory, ulong address)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var si = memory.Read<start_info>(address);
        var magicBytes = new ReadOnlySpan<byte>(si.magic, 32);
        var end = magicBytes.IndexOf((byte)0);
        var magic = Encoding.ASCII.GetString(end < 0 ? magicBytes : magicBytes[..end]);
        if (magic != ExpectedMagic)
        {
            throw new InvalidOperationException($"start_info at 0x{address:x} has magic '{magic}', expected '{ExpectedMagic}'");
        }

        var cmd = new ReadOnlySpan<byte>((byte*)si.cmd_line, Xen.MAX_GUEST_CMDLINE);
        var cmdEnd = cmd.IndexOf((byte)0);
        return new BootInfo
        {
            Address = address,
            Magic = magic,
            NrPages = si.nr_pages,
            SharedInfoMachineAddress = si.shared_info,
            Flags = si.flags,
            StoreFrame = si.store_mfn,
            StoreEvtchn = si.store_evtchn,
            ConsoleFrame = si.console.domU.mfn,
            ConsoleEvtchn = si.console.domU.evtchn,
            PtBase = si.pt_base,
            MfnList = si.mfn_list,
            CommandLine = Encoding.UTF8.GetString(cmdEnd < 0 ? cmd : cmd[..cmdEnd]),
            IsAutoTranslated = si.mfn_list == 0,
        };
    }
}
