using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;

namespace Paravirt.Tests.XenStore;

/// <summary><c>hv.XenStore</c>: the host's privileged client, and domains introduced and released with their lifetime.</summary>
public sealed class HostXenStoreTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => hv.Dispose();

    private static async Task<XenStoreWatchEvent> Next(XenStoreWatch w) =>
        await w.NextAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(Wait, TestContext.Current.CancellationToken);

    [Fact]
    public void Read_Write_Mkdir_Directory_Rm_And_Perms_Work_As_Dom0()
    {
        var xs = hv.XenStore;
        xs.Write("/a/b", "hello");
        xs.Read("/a/b").Should().Be("hello");
        xs.Mkdir("/a/c");
        xs.Read("/a/c").Should().Be("");
        xs.Directory("/a").Should().BeEquivalentTo("b", "c");
        xs.GetPerms("/a/b").Should().Equal("n0");
        xs.SetPerms("/a/b", "n0", "r7");
        xs.GetPerms("/a/b").Should().Equal("n0", "r7");
        xs.Rm("/a");
        xs.Read("/a/b").Should().BeNull("a missing node reads as null");
        var act = () => xs.Write("no-slash//x", "v");
        act.Should().Throw<XenStoreException>().Which.Error.Should().Be("EINVAL");
    }

    [Fact]
    public void A_Transaction_Runs_Again_When_Its_Commit_Gets_EAGAIN()
    {
        var xs = hv.XenStore;
        xs.Write("/counter", "1");
        var attempts = 0;
        xs.Transaction(tx =>
        {
            attempts++;
            var v = int.Parse(tx.Read("/counter")!, System.Globalization.CultureInfo.InvariantCulture);
            if (attempts == 1)
            {
                xs.Write("/counter", "10"); // a concurrent writer: the commit must fail and the body rerun
            }

            tx.Write("/counter", (v + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
        });
        attempts.Should().Be(2);
        xs.Read("/counter").Should().Be("11");
    }

    [Fact]
    public void A_Transaction_Whose_Body_Throws_Is_Aborted()
    {
        var xs = hv.XenStore;
        var act = () => xs.Transaction(tx =>
        {
            tx.Write("/t", "x");
            throw new InvalidOperationException("boom");
        });
        act.Should().Throw<InvalidOperationException>();
        xs.Read("/t").Should().BeNull();
    }

    [Fact]
    public async Task Watches_Deliver_Their_Registration_Then_Each_Change_And_Stop_When_Disposed()
    {
        var xs = hv.XenStore;
        var w = xs.Watch("/w", "tok");
        (await Next(w)).Should().Be(new XenStoreWatchEvent("/w", "tok"));
        xs.Write("/w/x", "1");
        (await Next(w)).Should().Be(new XenStoreWatchEvent("/w/x", "tok"));
        w.Dispose();
        xs.Write("/w/y", "1");
        await w.Events.Completion.WaitAsync(Wait, TestContext.Current.CancellationToken);
        w.Events.TryRead(out _).Should().BeFalse("nothing arrives after unwatching");
    }

    [Fact]
    public async Task A_Callback_Watch_Is_Called_For_Changes()
    {
        var seen = System.Threading.Channels.Channel.CreateUnbounded<string>();
        using (hv.XenStore.Watch("/cb", "t", e => seen.Writer.TryWrite(e.Path)))
        {
            hv.XenStore.Write("/cb/k", "v");
            (await seen.Reader.ReadAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(Wait, TestContext.Current.CancellationToken)).Should().Be("/cb");
            (await seen.Reader.ReadAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(Wait, TestContext.Current.CancellationToken)).Should().Be("/cb/k");
        }
    }

    [Fact]
    public async Task Creating_A_Domain_Introduces_It_With_Its_Home_And_Destroying_Releases_It()
    {
        var xs = hv.XenStore;
        using var intro = xs.Watch("@introduceDomain", "i");
        using var release = xs.Watch("@releaseDomain", "r");
        (await Next(intro)).Path.Should().Be("@introduceDomain");
        (await Next(release)).Path.Should().Be("@releaseDomain");

        var d = hv.CreateDomain(new DomainConfig { Name = "guest-a", MemoryMiB = 4, Vcpus = 2 });
        (await Next(intro)).Should().Be(new XenStoreWatchEvent("@introduceDomain", "i"));
        var home = HostXenStore.DomainPath(d.Id);
        xs.Read($"{home}/name").Should().Be("guest-a");
        xs.Read($"{home}/domid").Should().Be(d.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.GetPerms(home).Should().Equal("n0", $"r{d.Id}"); // libxl's roperm: dom0's, readable by the domain
        xs.GetPerms($"{home}/data").Should().Equal($"n{d.Id}"); // libxl's rwperm
        xs.Read($"{home}/memory/target").Should().Be("4096");
        xs.Read($"{home}/cpu/0/availability").Should().Be("online", "libxl__build_post writes every vCPU's availability (Linux reads it for each vCPU)");
        xs.Read($"{home}/cpu/1/availability").Should().Be("online");
        xs.Read($"{home}/cpu/2/availability").Should().BeNull();
        xs.Read($"{home}/store/port").Should().Be(d.StoreEvtchn.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read($"{home}/store/ring-ref").Should().Be("2");
        d.StoreEvtchn.Should().NotBe(0u);

        d.Destroy();
        (await Next(release)).Should().Be(new XenStoreWatchEvent("@releaseDomain", "r"));
        xs.Read(home).Should().BeNull("the domain's home goes with it");
    }
}
