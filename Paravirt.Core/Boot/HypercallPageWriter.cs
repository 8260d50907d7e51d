using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Paravirt.Core.Boot;

/// <summary>
/// The hypercall page of a 64-bit PV guest (XEN_ELFNOTE_HYPERCALL_PAGE), in the shape Xen 4.17
/// writes it (<c>xen/arch/x86/pv/hypercall.c</c>, <c>pv_ring3_init_hypercall_page</c>): the page
/// filled with <c>int3</c> (0xCC), then one 32-byte stub per hypercall number (4096 / 32 = 128):
/// <code>
/// push %rcx; push %r11; mov $nr, %eax; syscall; pop %r11; pop %rcx; ret
/// </code>
/// except <c>__HYPERVISOR_iret</c> (23), which never returns and which guests jump to rather than
/// call: <c>push %rcx; push %r11; push %rax; mov $23, %eax; syscall</c>. Assembled with Iced's
/// assembler (our code, Xen's bytes).
/// </summary>
internal static class HypercallPageWriter
{
    public const int StubSize = 32;
    public const int StubCount = Memory.MachineMemory.PageSize / StubSize;

    private static readonly Lazy<byte[]> Template = new(Assemble);

    /// <summary>The page's 4096 bytes (a shared copy: do not change it).</summary>
    public static ReadOnlySpan<byte> Page => Template.Value;

    private static byte[] Assemble()
    {
        var page = new byte[Memory.MachineMemory.PageSize];
        page.AsSpan().Fill(0xcc);
        for (var nr = 0; nr < StubCount; nr++)
        {
            var a = new Assembler(64);
            a.push(rcx);
            a.push(r11);
            if (nr == Abi.Xen.__HYPERVISOR_iret)
            {
                a.push(rax);
                a.mov(eax, nr);
                a.syscall();
            }
            else
            {
                a.mov(eax, nr);
                a.syscall();
                a.pop(r11);
                a.pop(rcx);
                a.ret();
            }

            using var ms = new MemoryStream();
            a.Assemble(new StreamCodeWriter(ms), (ulong)(nr * StubSize));
            var code = ms.ToArray();
            if (code.Length > StubSize)
            {
                throw new InvalidOperationException($"hypercall stub {nr} assembled to {code.Length} bytes; a stub has {StubSize}");
            }

            code.CopyTo(page, nr * StubSize);
        }

        return page;
    }
}
