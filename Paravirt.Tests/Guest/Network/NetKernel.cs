using System.Buffers.Binary;
using System.Runtime.ExceptionServices;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Guest;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Guest.Network;

/// <summary>
/// A guest program for network tests: a <see cref="GuestKernel"/> whose Run is a delegate. A
/// failure inside the guest is caught (the guest still powers off) and rethrown on the test
/// thread by <see cref="WaitAsync"/>.
/// </summary>
internal sealed class NetKernel(Action<GuestRuntime> body) : GuestKernel
{
    /// <summary>Our own ethertype for test frames (IEEE 802 local experimental).</summary>
    public const ushort EtherType = 0x88B5;

    public Exception? Failure { get; private set; }

    public static DomainConfig Config(string name, int memoryMiB = 8) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = memoryMiB };

    protected override void Run(GuestRuntime runtime)
    {
        try
        {
            body(runtime);
        }
        catch (Exception e) when (e.GetType().Name != "VcpuExitException")
        {
            Failure = e;
        }
    }

    /// <summary>Starts <paramref name="domain"/> with <paramref name="body"/>; await <see cref="WaitAsync"/> for its end.</summary>
    public static NetKernel Start(Domain domain, Action<GuestRuntime> body)
    {
        var kernel = new NetKernel(body);
        domain.Start(kernel);
        return kernel;
    }

    /// <summary>Waits (bounded) for the domain to power off and rethrows a guest failure.</summary>
    public async Task WaitAsync(Domain domain)
    {
        var exit = await domain.ExitWithinAsync();
        if (Failure is { } e)
        {
            ExceptionDispatchInfo.Throw(e);
        }

        exit.State.Should().Be(DomainState.Shutdown, $"the guest should power off cleanly ({exit.Reason})");
    }

    public static async Task RunAsync(Domain domain, Action<GuestRuntime> body) => await Start(domain, body).WaitAsync(domain);

    /// <summary>Writes an Ethernet header (destination, source, <see cref="EtherType"/>) into <paramref name="frame"/>.</summary>
    public static void Header(Span<byte> frame, ReadOnlySpan<byte> destination, ReadOnlySpan<byte> source)
    {
        destination[..6].CopyTo(frame);
        source[..6].CopyTo(frame[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], EtherType);
    }

    public static byte[] Octets(MacAddress mac)
    {
        var b = new byte[6];
        mac.Write(b);
        return b;
    }
}
