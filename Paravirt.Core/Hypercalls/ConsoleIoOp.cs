using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_console_io(cmd, count, buffer)</c>. Writes go to the domain's console line
/// stream, copied in 128-byte chunks as Xen does. Xen 4.17's default policy allows a guest's
/// CONSOLEIO_write (with a verbose-debug hypervisor; release builds refuse it); CONSOLEIO_read
/// reads the hypervisor's own serial input, which only the hardware domain may do, so a guest
/// gets -EPERM.
/// </summary>
internal static class ConsoleIoOp
{
    private const int Chunk = 128;

    public static long Handle(Vcpu vcpu, ulong cmd, ulong count, ulong buffer, ulong a4, ulong a5)
    {
        switch ((uint)cmd)
        {
            case (uint)Xen.CONSOLEIO_write:
                return Write(vcpu, (uint)count, buffer);
            case (uint)Xen.CONSOLEIO_read:
                return Result.Err(Errno.EPERM);
            default:
                return Result.Err(Errno.ENOSYS);
        }
    }

    private static long Write(Vcpu vcpu, uint count, ulong buffer)
    {
        Span<byte> chunk = stackalloc byte[Chunk];
        while (count > 0)
        {
            var n = (int)Math.Min(count, (uint)Chunk);
            if (!vcpu.TryCopyFrom(buffer, chunk[..n]))
            {
                return Result.Err(Errno.EFAULT);
            }

            vcpu.Domain.Console.Write(Printable(chunk[..n]));
            buffer += (ulong)n;
            count -= (uint)n;
        }

        return Result.Ok;
    }

    /// <summary>Keeps what Xen keeps of guest output: printable ASCII, tab and newline.</summary>
    private static Span<byte> Printable(Span<byte> bytes)
    {
        var kept = 0;
        foreach (var b in bytes)
        {
            if (b is (byte)'\n' or (byte)'\t' or (>= 0x20 and < 0x7f))
            {
                bytes[kept++] = b;
            }
        }

        return bytes[..kept];
    }
}
