namespace Paravirt.Core.Cpu;

/// <summary>
/// The only way guest code reaches the hypervisor: a hypercall with the x86-64 PV register
/// convention (number in rax, arguments in rdi, rsi, rdx, r10, r8; result in rax). Errors come
/// back as negative Xen errno values, never as exceptions.
/// </summary>
public interface IHypercallGate
{
    long Hypercall(ulong nr, ulong rdi = 0, ulong rsi = 0, ulong rdx = 0, ulong r10 = 0, ulong r8 = 0);
}

/// <summary>
/// What a managed guest's vCPU can do, and nothing more: hypercalls, loads and stores to its
/// own pseudo-physical memory, and reading the time stamp counter. A guest holds this, never a
/// hypervisor object.
/// </summary>
public interface IGuestCpu : IHypercallGate
{
    /// <summary>This vCPU's id within its domain.</summary>
    int VcpuId { get; }

    /// <summary>The domain's memory as this vCPU sees it (guest-physical addresses).</summary>
    IGuestPhysicalMemory Memory { get; }

    /// <summary><c>rdtsc</c>.</summary>
    ulong ReadTsc();
}

/// <summary>
/// A guest's loads and stores to its own memory. A bad address faults, which for a managed
/// guest is a <see cref="GuestFaultException"/> that crashes the domain unless the guest
/// handles it — as a page fault in a kernel with no fixup would.
/// </summary>
public interface IGuestPhysicalMemory
{
    void Read(ulong gpa, Span<byte> destination);

    void Write(ulong gpa, ReadOnlySpan<byte> source);

    T Read<T>(ulong gpa)
        where T : unmanaged;

    void Write<T>(ulong gpa, in T value)
        where T : unmanaged;

    /// <summary><c>lock cmpxchg</c> on an aligned 32-bit word; returns the old value.</summary>
    uint CompareExchange32(ulong gpa, uint value, uint comparand);

    /// <summary><c>lock cmpxchg</c> on an aligned 64-bit word; returns the old value.</summary>
    ulong CompareExchange64(ulong gpa, ulong value, ulong comparand);

    /// <summary><c>lock or</c> on an aligned 64-bit word; returns the old value.</summary>
    ulong Or64(ulong gpa, ulong mask);

    /// <summary><c>lock and</c> on an aligned 64-bit word; returns the old value.</summary>
    ulong And64(ulong gpa, ulong mask);

    /// <summary>An ordered load of an aligned 1, 2, 4 or 8-byte word.</summary>
    ulong ReadVolatile(ulong gpa, int size);

    /// <summary>An ordered store of an aligned 1, 2, 4 or 8-byte word.</summary>
    void WriteVolatile(ulong gpa, int size, ulong value);
}

/// <summary>A managed guest touched memory it does not have (a page fault with no fixup).</summary>
public sealed class GuestFaultException(ulong address, int length, bool write)
    : Exception($"guest {(write ? "write to" : "read from")} unmapped or foreign memory at 0x{address:x} ({length} bytes)")
{
    public ulong Address { get; } = address;

    public bool IsWrite { get; } = write;
}

/// <summary>
/// A guest kernel written in C#: what a managed domain runs. The engine calls
/// <see cref="Main"/> on vCPU 0 with <c>start_info</c>'s address (Xen passes it in rsi), and
/// <see cref="EventCallback"/> for each upcall, with events masked, at the address the guest
/// registered with <c>CALLBACKOP_register</c>.
/// </summary>
public abstract class ManagedKernel
{
    /// <summary>vCPU 0's entry point. Returning without <c>SCHEDOP_shutdown</c> crashes the domain, as falling off a kernel's entry would.</summary>
    public abstract void Main(IGuestCpu cpu, ulong startInfo);

    /// <summary>An event upcall. <paramref name="address"/> is the registered callback address.</summary>
    public virtual void EventCallback(IGuestCpu cpu, ulong address)
    {
    }

    /// <summary>A secondary vCPU's entry after <c>VCPUOP_initialise</c> + <c>VCPUOP_up</c>, with the rip and rsp the guest gave.</summary>
    public virtual void SecondaryEntry(IGuestCpu cpu, ulong rip, ulong rsp)
    {
    }
}
