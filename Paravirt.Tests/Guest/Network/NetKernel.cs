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

    /// <summary>
    /// In the guest: waits until the host writes <c>data/go</c> (after every vif of the test is on
    /// the switch), so no first frame goes to a peer that is not plugged in yet.
    /// </summary>
    public static void WaitForGo(GuestRuntime rt)
    {
        var go = false;
        XenGuest.Check(rt.XenBus.Watch("data/go", _ => go |= rt.XenBus.Read("data/go", out _) >= 0, out _), "watch data/go");
        if (!rt.WaitFor(() => go, rt.Clock.SystemTimeNs() + 30_000_000_000UL))
        {
            throw new TimeoutException("the host did not write data/go within 30 s");
        }
    }

    /// <summary>On the host: once every vif is connected (a port of its switch), tells each domain to go.</summary>
    public static async Task GoAsync(Hypervisor hv, params (Domain Domain, NetBack Vif)[] guests)
    {
        foreach (var (_, vif) in guests)
        {
            await vif.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        }

        foreach (var (d, _) in guests)
        {
            hv.XenStore.Write($"/local/domain/{d.Id}/data/go", "1");
        }
    }

    public static byte[] Octets(MacAddress mac)
    {
        var b = new byte[6];
        mac.Write(b);
        return b;
    }
}
