using System.Runtime.InteropServices;

namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/console.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.
//
// The PV console page: two byte rings with free-running indices. "in" carries bytes to the guest,
// "out" bytes from it. The class is XenConsole, not Console, so it never shadows System.Console.

/// <summary>Constants of <c>xen/io/console.h</c>: <c>MASK_XENCONS_IDX(idx, ring)</c> masks with <c>sizeof(ring) - 1</c>.</summary>
public static class XenConsole
{
    /// <summary>The mask of <c>MASK_XENCONS_IDX(idx, intf-&gt;in)</c>.</summary>
    public const uint MASK_XENCONS_IDX_in_mask = 1024 - 1;

    /// <summary>The mask of <c>MASK_XENCONS_IDX(idx, intf-&gt;out)</c>.</summary>
    public const uint MASK_XENCONS_IDX_out_mask = 2048 - 1;

    /// <summary><c>MASK_XENCONS_IDX(idx, intf-&gt;in)</c>: the offset in <see cref="xencons_interface.@in"/> of a free-running index.</summary>
    public static uint MASK_XENCONS_IDX_in(uint idx) => idx & MASK_XENCONS_IDX_in_mask;

    /// <summary><c>MASK_XENCONS_IDX(idx, intf-&gt;out)</c>: the offset in <see cref="xencons_interface.@out"/> of a free-running index.</summary>
    public static uint MASK_XENCONS_IDX_out(uint idx) => idx & MASK_XENCONS_IDX_out_mask;
}

/// <summary>The PV console ring page shared by a guest [GST] and the console backend [back].</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct xencons_interface
{
    /// <summary>Input to the guest: [back] produces, [GST] consumes.</summary>
    public fixed byte @in[1024];
    /// <summary>Output from the guest: [GST] produces, [back] consumes.</summary>
    public fixed byte @out[2048];
    /// <summary>[GST] Input bytes consumed.</summary>
    public uint in_cons;
    /// <summary>[back] Input bytes produced.</summary>
    public uint in_prod;
    /// <summary>[back] Output bytes consumed.</summary>
    public uint out_cons;
    /// <summary>[GST] Output bytes produced.</summary>
    public uint out_prod;
}
