namespace Paravirt.Core.Abi.Io;

// Mirrors xen/io/protocols.h (Xen 4.17). Checked against abi/xen-4.17-x86_64.json.

/// <summary>
/// Values of a frontend's "protocol" node: the machine ABI that governs the layout of its ring
/// requests and responses (XEN_IO_PROTO_ABI_NATIVE when the node is absent).
/// </summary>
public static class Protocols
{
    public const string XEN_IO_PROTO_ABI_X86_32 = "x86_32-abi";
    public const string XEN_IO_PROTO_ABI_X86_64 = "x86_64-abi";
    public const string XEN_IO_PROTO_ABI_ARM = "arm-abi";

    /// <summary>The ABI of this build: Paravirt mirrors x86-64.</summary>
    public const string XEN_IO_PROTO_ABI_NATIVE = XEN_IO_PROTO_ABI_X86_64;
}
