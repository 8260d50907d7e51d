using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>Watches: an initial event, then one per change at or below the watched path, to watchers allowed to see it.</summary>
public sealed class XenStoreWatchTests
{
    private readonly XsHarness xs = new();
    private readonly uint dom0;
    private readonly uint watcher;

    public XenStoreWatchTests()
    {
        dom0 = xs.Connect(0);
        watcher = xs.Connect(0);
    }

    private static IEnumerable<(string Path, string Token)> Of(XsReply r, uint conn) =>
        r.EventsFor(conn).Select(e => (e.Path, e.Token));

    [Fact]
    public void Watch_Acks_Then_Fires_Once_Up_Front()
    {
        var r = xs.Send(watcher, XS_WATCH, "/a", "tok");
        xs.MustOk(r);
        Of(r, watcher).Should().Equal(("/a", "tok"));
    }

    [Fact]
    public void A_Change_Fires_For_The_Path_And_Its_Ancestors_Watches()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/a", "A"));
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/a/b", "B"));
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/a/b/c/d", "D"));
        Of(xs.Write(dom0, "/a/b/c", "1"), watcher).Should().BeEquivalentTo([("/a/b/c", "A"), ("/a/b/c", "B")]);
    }

    [Fact]
    public void A_Sibling_With_A_Common_Prefix_Does_Not_Fire()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/a", "A"));
        xs.Write(dom0, "/ab", "1").Events.Should().BeEmpty();
    }

    [Fact]
    public void A_Watch_On_The_Root_Sees_Everything()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/", "root"));
        Of(xs.Write(dom0, "/q/r", "1"), watcher).Should().Equal(("/q/r", "root"));
    }

    [Fact]
    public void Mkdir_Set_Perms_And_Rm_Fire_Too()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/m", "t"));
        Of(xs.Send(dom0, XS_MKDIR, "/m"), watcher).Should().Equal(("/m", "t"));
        xs.Send(dom0, XS_MKDIR, "/m").Events.Should().BeEmpty("nothing changed");
        Of(xs.Send(dom0, XS_SET_PERMS, "/m", "r0"), watcher).Should().Equal(("/m", "t"));
        Of(xs.Send(dom0, XS_RM, "/m"), watcher).Should().Equal(("/m", "t"));
    }

    [Fact]
    public void Rm_Fires_For_Watches_On_Removed_Descendants_And_On_Ancestors()
    {
        xs.MustWrite(dom0, "/r/a/b", "1");
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/r/a/b", "deep"));
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/r", "top"));
        var events = Of(xs.Send(dom0, XS_RM, "/r/a"), watcher).ToList();
        events.Should().BeEquivalentTo([("/r/a/b", "deep"), ("/r/a", "top")]);
    }

    [Fact]
    public void A_Relative_Watch_Gets_Relative_Paths()
    {
        var guest = xs.Guest(dom0, 5);
        var w = xs.Send(guest, XS_WATCH, "device", "dev");
        Of(w, guest).Should().Equal(("device", "dev"));
        Of(xs.Write(dom0, "/local/domain/5/device/vbd/1", "x"), guest).Should().Equal(("device/vbd/1", "dev"));
        xs.MustOk(xs.Send(guest, XS_WATCH, "/local/domain/5/device", "abs"));
        Of(xs.Write(dom0, "/local/domain/5/device/a", "x"), guest)
            .Should().BeEquivalentTo([("device/a", "dev"), ("/local/domain/5/device/a", "abs")]);
    }

    [Fact]
    public void A_Watcher_Hears_Nothing_About_Nodes_It_Cannot_Read()
    {
        var guest = xs.Guest(dom0, 5);
        xs.MustOk(xs.Send(guest, XS_WATCH, "/", "all"));
        xs.Write(dom0, "/secret/x", "1").EventsFor(guest).Should().BeEmpty();
        xs.Write(dom0, "/local/domain/5/mine", "1").EventsFor(guest).Should().ContainSingle();
    }

    [Fact]
    public void A_Watcher_Losing_Read_Access_Still_Hears_The_Perms_Change()
    {
        var guest = xs.Guest(dom0, 5);
        xs.MustWrite(dom0, "/open", "");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/open", "r0"));
        xs.MustOk(xs.Send(guest, XS_WATCH, "/open", "o"));
        Of(xs.Send(dom0, XS_SET_PERMS, "/open", "n0"), guest).Should().Equal(("/open", "o"));
    }

    [Fact]
    public void Introduce_And_Release_Fire_The_Special_Watches()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "@introduceDomain", "in"));
        xs.MustOk(xs.Send(watcher, XS_WATCH, "@releaseDomain", "out"));
        Of(xs.Send(dom0, XS_INTRODUCE, "3", "0", "1"), watcher).Should().Equal(("@introduceDomain", "in"));
        xs.Send(dom0, XS_INTRODUCE, "3", "0", "1").Events.Should().BeEmpty("already introduced");
        Of(xs.Send(dom0, XS_RELEASE, "3"), watcher).Should().Equal(("@releaseDomain", "out"));
    }

    [Fact]
    public void Guests_Hear_Special_Events_Only_When_The_Special_Perms_Allow()
    {
        var guest = xs.Guest(dom0, 5);
        xs.MustOk(xs.Send(guest, XS_WATCH, "@introduceDomain", "in"));
        xs.Send(dom0, XS_INTRODUCE, "7", "0", "1").EventsFor(guest).Should().BeEmpty();
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "@introduceDomain", "n0", "r5"));
        xs.Send(dom0, XS_INTRODUCE, "8", "0", "1").EventsFor(guest).Should().ContainSingle();
    }

    [Fact]
    public void A_Watch_On_The_Root_Does_Not_See_Special_Events()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/", "root"));
        xs.Send(dom0, XS_INTRODUCE, "3", "0", "1").Events.Should().BeEmpty();
    }

    [Fact]
    public void Other_At_Paths_Are_Accepted_But_Never_Fire()
    {
        var r = xs.Send(watcher, XS_WATCH, "@whatever", "t");
        xs.MustOk(r);
        Of(r, watcher).Should().Equal(("@whatever", "t"));
    }

    [Fact]
    public void Duplicates_Are_Eexist_And_Unwatch_Stops_Events()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/u", "t"));
        xs.Send(watcher, XS_WATCH, "/u", "t").Error.Should().Be("EEXIST");
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/u", "t2"));
        xs.MustOk(xs.Send(watcher, XS_UNWATCH, "/u", "t"));
        Of(xs.Write(dom0, "/u", "1"), watcher).Should().Equal(("/u", "t2"));
        xs.Send(watcher, XS_UNWATCH, "/u", "t").Error.Should().Be("ENOENT");
    }

    [Fact]
    public void Bad_Watch_Requests_Are_Einval()
    {
        xs.Send(watcher, XS_WATCH, "/u").Error.Should().Be("EINVAL");
        xs.Send(watcher, XS_WATCH, "/u/", "t").Error.Should().Be("EINVAL");
        xs.Send(watcher, XS_WATCH, "/u", "t", "extra").Error.Should().Be("EINVAL");
        xs.Send(watcher, XS_WATCH, "@" + new string('x', 2048), "t").Error.Should().Be("EINVAL");
        xs.Send(watcher, XS_UNWATCH, "/u").Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Watch_Ignores_The_Transaction_Id()
    {
        var tx = xs.StartTransaction(watcher);
        xs.MustOk(xs.SendTx(watcher, XS_WATCH, tx, "/v", "t"));
        xs.Write(dom0, "/v", "1").EventsFor(watcher).Should().ContainSingle();
        xs.MustOk(xs.SendTx(watcher, XS_UNWATCH, 999, "/v", "t"));
    }

    [Fact]
    public void A_Disconnected_Watcher_Gets_Nothing()
    {
        xs.MustOk(xs.Send(watcher, XS_WATCH, "/g", "t"));
        var after = xs.State.Disconnect(watcher);
        var r = Paravirt.Core.XenStore.XenStoreCore.Process(after, dom0,
            Paravirt.Core.XenStore.XsMessage.Strings(XS_MKDIR, 1, 0, "/g"));
        r.Events.Should().BeEmpty();
    }
}
