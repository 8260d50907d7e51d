using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.XenBus;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Guest;

namespace Paravirt.Tests.Guest;

/// <summary>Slice 6: the XenBus client on the guest's store ring against the host's store and backend.</summary>
public sealed class GuestXenBusTests : IDisposable
{
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(20);
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 128 });

    public void Dispose() => hv.Dispose();

    private static ulong Deadline(XenGuest g) => g.Clock.SystemTimeNs() + 10_000_000_000;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_Write_Mkdir_Directory_Perms_And_Rm_Reach_The_Hosts_Store(bool classicPv)
    {
        var d = StubRunner.Create(hv, classicPv);
        var home = HostXenStore.DomainPath(d.Id);
        hv.XenStore.Write($"{home}/data/from-host", "hello guest");
        ushort domid = 0;
        string fromHost = "", big = "";
        string[] children = [], perms = [];
        string? fromGuest = null;
        long missing = 0, afterRm = 0;
        var value = new string('x', 2000); // longer than the 1024-byte ring in both directions (and within the store's 2048-byte node quota)
        await StubRunner.StartAsync(d, g =>
        {
            var xs = XenBusClient.Connect(g);
            domid = xs.DomainId;
            xs.Read("data/from-host", out fromHost).Should().Be(0);
            missing = xs.Read("data/nothing-here", out _);
            xs.Write("data/from-guest", "hello host").Should().Be(0);
            fromGuest = hv.XenStore.Read($"{home}/data/from-guest");
            xs.Mkdir("data/dir").Should().Be(0);
            xs.Write("data/dir/a", "1").Should().Be(0);
            xs.Write("data/dir/b", "2").Should().Be(0);
            xs.Directory("data/dir", out children).Should().Be(0);
            xs.GetPerms("data/dir", out perms).Should().Be(0);
            xs.Write("data/big", value).Should().Be(0);
            xs.Read("data/big", out big).Should().Be(0);
            xs.Rm("data/dir").Should().Be(0);
            afterRm = xs.Read("data/dir/a", out _);
        }, new GuestOptions());

        domid.Should().Be(d.Id);
        fromHost.Should().Be("hello guest");
        missing.Should().Be(-(long)Errno.ENOENT);
        fromGuest.Should().Be("hello host");
        children.Should().BeEquivalentTo("a", "b");
        perms[0].Should().Be($"n{d.Id}", "the guest owns what it creates");
        big.Should().Be(value);
        afterRm.Should().Be(-(long)Errno.ENOENT);
    }

    [Fact]
    public async Task A_Watch_Callback_Runs_For_Registration_And_For_A_Host_Write()
    {
        var d = StubRunner.Create(hv);
        var home = HostXenStore.DomainPath(d.Id);
        using var watching = new SemaphoreSlim(0);
        var paths = new List<string>();
        var run = StubRunner.StartAsync(d, g =>
        {
            var xs = XenBusClient.Connect(g);
            xs.Watch("data/watched", p => paths.Add(p), out var token).Should().Be(0);
            g.WaitFor(() => paths.Count >= 1, Deadline(g)).Should().BeTrue("xenstored fires a watch once when it is set");
            watching.Release();
            g.WaitFor(() => paths.Count >= 2, Deadline(g)).Should().BeTrue("the host's write fires the watch");
            xs.Unwatch("data/watched", token).Should().Be(0);
        });

        (await watching.WaitAsync(Step, TestContext.Current.CancellationToken)).Should().BeTrue();
        hv.XenStore.Write($"{home}/data/watched", "changed");
        await run;
        paths.Should().HaveCountGreaterThanOrEqualTo(2).And.AllSatisfy(p => p.Should().EndWith("data/watched"));
    }

    [Fact]
    public async Task A_Transaction_That_Loses_A_Race_Is_Retried_On_EAGAIN()
    {
        var d = StubRunner.Create(hv);
        var home = HostXenStore.DomainPath(d.Id);
        hv.XenStore.Write($"{home}/data/counter", "0");
        using var inside = new SemaphoreSlim(0);
        using var hostWrote = new SemaphoreSlim(0);
        var attempts = 0;
        long rc = -1;
        var final = "";
        var run = StubRunner.StartAsync(d, g =>
        {
            var xs = XenBusClient.Connect(g);
            rc = xs.Transaction(tx =>
            {
                attempts++;
                var r = tx.ReadInt("data/counter", out var n);
                if (r < 0)
                {
                    return r;
                }

                if (attempts == 1)
                {
                    inside.Release();
                    hostWrote.Wait(Step).Should().BeTrue();
                }

                return tx.Write("data/counter", (n + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
            });
            xs.Read("data/counter", out final).Should().Be(0);
        });

        (await inside.WaitAsync(Step, TestContext.Current.CancellationToken)).Should().BeTrue();
        hv.XenStore.Write($"{home}/data/counter", "10");
        hostWrote.Release();
        await run;
        rc.Should().Be(0);
        attempts.Should().Be(2, "the first commit conflicted with the host's write");
        final.Should().Be("11");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_Frontend_Completes_The_Handshake_With_A_XenBus_Backend(bool classicPv)
    {
        var d = StubRunner.Create(hv, classicPv);
        IReadOnlyDictionary<string, string>? keys = null;
        await using var backend = XenBusBackendDevice.Create(hv, d.Id, "vfoo", 3, new XenBusBackendOptions
        {
            Features = new Dictionary<string, string> { ["feature-magic"] = "1" },
            FrontendKeys = ["ring-ref", "event-channel"],
            Connect = (req, _) =>
            {
                keys = req.FrontendKeys;
                return Task.CompletedTask;
            },
        });

        XenbusState seenInitWait = XenbusState.Unknown, seenConnected = XenbusState.Unknown;
        string feature = "";
        string[] devices = [];
        await StubRunner.StartAsync(d, g =>
        {
            var xs = XenBusClient.Connect(g);
            var all = xs.EnumerateDevices();
            devices = [.. all.Select(x => x.NodeName)];
            var dev = all.Single(x => x.Type == "vfoo");
            dev.Probe().Should().Be(0);
            dev.BackendId.Should().Be(0);
            dev.WaitForBackendState(s => s == XenbusState.InitWait, out seenInitWait, Deadline(g)).Should().BeTrue();
            dev.ReadBackend("feature-magic", out feature).Should().Be(0);
            dev.WriteOwn("ring-ref", "8").Should().Be(0);
            dev.WriteOwn("event-channel", "5").Should().Be(0);
            dev.SwitchState(XenbusState.Initialised).Should().Be(0);
            dev.WaitForBackendState(s => s == XenbusState.Connected, out seenConnected, Deadline(g)).Should().BeTrue();
            dev.SwitchState(XenbusState.Connected).Should().Be(0);
            dev.Close().Should().Be(0);
        });

        devices.Should().Equal("device/vfoo/3");
        seenInitWait.Should().Be(XenbusState.InitWait);
        feature.Should().Be("1");
        seenConnected.Should().Be(XenbusState.Connected);
        keys.Should().BeEquivalentTo(new Dictionary<string, string> { ["ring-ref"] = "8", ["event-channel"] = "5" });
    }
}
