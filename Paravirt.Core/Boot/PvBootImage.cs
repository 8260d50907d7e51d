namespace Paravirt.Core.Boot;

/// <summary>One frame of the bootstrap page tables the builder wrote.</summary>
/// <param name="Pfn">Its pseudo-physical frame.</param>
/// <param name="Mfn">Its machine frame (what the tables' entries and CR3 hold).</param>
/// <param name="Level">4 for the L4 (top), down to 1 for an L1 (leaf).</param>
public readonly record struct PvPageTableFrame(ulong Pfn, ulong Mfn, int Level);

/// <summary>
/// What the ELF domain builder (<see cref="Domains.Hypervisor.CreatePvDomain"/>) leaves for whoever
/// starts vCPU 0 of a classic PV domain: the registers Xen's <c>vcpu_x86_64</c> sets, the bootstrap
/// page tables (written, not yet validated or pinned) and where everything was put.
/// </summary>
/// <remarks>
/// The builder does not validate or pin the tables: the starter pins <see cref="L4Mfn"/> as an L4
/// table and makes it vCPU 0's kernel base (Xen's MMUEXT_PIN_L4_TABLE and NEW_BASEPTR, done by
/// libxenguest's bootlate and the domctl that sets the vCPU context), then runs the entry.
/// </remarks>
public sealed record PvBootImage
{
    /// <summary>rip: the kernel's entry point (ENTRY, else e_entry).</summary>
    public required ulong Entry { get; init; }

    /// <summary>rsp: the top of the one-page boot stack (virt_base + (stack pfn + 1) × 4096).</summary>
    public required ulong StackPointer { get; init; }

    /// <summary>rsi: the virtual address of start_info.</summary>
    public required ulong StartInfo { get; init; }

    /// <summary>CR3: the machine frame of the top-level (L4) table.</summary>
    public required ulong L4Mfn { get; init; }

    /// <summary>Every bootstrap page-table frame with its level, in the order allocated (L4 first).</summary>
    public required IReadOnlyList<PvPageTableFrame> PageTables { get; init; }

    /// <summary>The virtual address the hypercall page was written at (HYPERCALL_PAGE), or null.</summary>
    public required ulong? HypercallPage { get; init; }

    /// <summary>VIRT_BASE: the virtual address of pseudo-physical frame 0.</summary>
    public required ulong VirtBase { get; init; }

    /// <summary>The end of the initial mapping (exclusive): VIRT_BASE + the mapped pages, a 4 MiB boundary.</summary>
    public required ulong VirtEnd { get; init; }

    /// <summary>The kernel image's virtual range [start, end).</summary>
    public required ulong KernelStart { get; init; }

    public required ulong KernelEnd { get; init; }

    /// <summary>start_info.pt_base: the virtual address of the L4 table.</summary>
    public required ulong PageTableBase { get; init; }

    /// <summary>start_info.mfn_list: the virtual address of the P→M list.</summary>
    public required ulong P2mList { get; init; }

    /// <summary>start_info.mod_start / mod_len (0 without a ramdisk; a PFN when <see cref="ModStartIsPfn"/>).</summary>
    public required ulong ModStart { get; init; }

    public required ulong ModLength { get; init; }

    /// <summary>SIF_MOD_START_PFN: the ramdisk is outside the initial mapping, named by its first PFN.</summary>
    public required bool ModStartIsPfn { get; init; }

    /// <summary>The pseudo-physical frames of the xenstore and console rings.</summary>
    public required ulong StorePfn { get; init; }

    public required ulong ConsolePfn { get; init; }

    /// <summary>The number of pseudo-physical frames the layout used, padding included (Xen's pfn_alloc_end).</summary>
    public required ulong FramesUsed { get; init; }
}
