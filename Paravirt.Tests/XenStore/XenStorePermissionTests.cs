using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>Node permissions as xenstored's perm_for_conn: dom0 may do anything, owners everything on their nodes, others per ACL.</summary>
public sealed class XenStorePermissionTests
{
    private readonly XsHarness xs = new();
    private readonly uint dom0;
    private readonly uint guest;

    public XenStorePermissionTests()
    {
        dom0 = xs.Connect(0);
        guest = xs.Guest(dom0, 5);
    }

    [Fact]
    public void A_Guest_Cannot_Read_Dom0_Nodes() => xs.Read(guest, "/tool").Error.Should().Be("EACCES");

    [Fact]
    public void A_Guest_Reads_What_An_Acl_Entry_Grants()
    {
        xs.MustWrite(dom0, "/shared", "hi");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/shared", "n0", "r5"));
        xs.MustRead(guest, "/shared").Should().Be("hi");
        xs.Write(guest, "/shared", "no").Error.Should().Be("EACCES");
    }

    [Fact]
    public void The_First_Entry_Is_The_Default_For_Everyone_Else()
    {
        xs.MustWrite(dom0, "/pub", "x");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/pub", "r0"));
        xs.MustRead(guest, "/pub").Should().Be("x");
    }

    [Fact]
    public void A_Guest_Writes_Relative_Paths_Into_Its_Home_And_Owns_What_It_Creates()
    {
        xs.MustWrite(guest, "device/vif/0/state", "1");
        xs.MustRead(dom0, "/local/domain/5/device/vif/0/state").Should().Be("1");
        xs.Send(dom0, XS_GET_PERMS, "/local/domain/5/device/vif/0/state").Strings.Should().Equal("n5");
    }

    [Fact]
    public void New_Nodes_Inherit_The_Parent_Acl_With_The_Unprivileged_Writer_As_Owner()
    {
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/local/domain/5", "n5", "r7"));
        xs.MustWrite(guest, "a/b", "1");
        xs.Send(dom0, XS_GET_PERMS, "/local/domain/5/a/b").Strings.Should().Equal("n5", "r7");

        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/local/domain/5", "n3", "b5"));
        xs.MustWrite(guest, "c", "1");
        xs.Send(dom0, XS_GET_PERMS, "/local/domain/5/c").Strings.Should().Equal("n5", "b5");
        xs.MustWrite(dom0, "/local/domain/5/d", "1");
        xs.Send(dom0, XS_GET_PERMS, "/local/domain/5/d").Strings.Should().Equal(["n3", "b5"], "dom0 does not take ownership");
    }

    [Fact]
    public void A_Guest_Cannot_Write_Outside_Its_Subtree()
    {
        xs.Guest(dom0, 6);
        var before = xs.State.Nodes;
        xs.Write(guest, "/local/domain/6/x", "evil").Error.Should().Be("EACCES");
        xs.Write(guest, "/evil", "x").Error.Should().Be("EACCES");
        xs.Send(guest, XS_MKDIR, "/tool/evil").Error.Should().Be("EACCES");
        xs.Send(guest, XS_RM, "/tool").Error.Should().Be("EACCES");
        xs.State.Nodes.Should().BeSameAs(before);
    }

    [Fact]
    public void A_Missing_Node_Under_An_Unreadable_Parent_Is_Eacces_Not_Enoent()
    {
        xs.Read(guest, "/tool/xenstored/nothing").Error.Should().Be("EACCES");
        xs.Read(guest, "nothing").Error.Should().Be("ENOENT", "its own home is readable");
    }

    [Fact]
    public void Only_The_Owner_Or_Dom0_May_Set_Perms()
    {
        xs.MustWrite(dom0, "/local/domain/5/ro", "1");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/local/domain/5/ro", "n0", "b5"));
        xs.Send(guest, XS_SET_PERMS, "/local/domain/5/ro", "b5").Error.Should().Be("EACCES", "write access is not ownership");
        xs.MustWrite(guest, "mine", "1");
        xs.MustOk(xs.Send(guest, XS_SET_PERMS, "mine", "n5", "r0"));
        xs.Send(guest, XS_SET_PERMS, "mine", "n6").Error.Should().Be("EPERM", "a guest may not give its nodes away");
        xs.Send(dom0, XS_GET_PERMS, "/local/domain/5/mine").Strings.Should().Equal("n5", "r0");
    }

    [Theory]
    [InlineData(XS_INTRODUCE, new[] { "9", "0", "1" })]
    [InlineData(XS_RELEASE, new[] { "5" })]
    [InlineData(XS_RESUME, new[] { "5" })]
    [InlineData(XS_SET_TARGET, new[] { "5", "0" })]
    [InlineData(XS_IS_DOMAIN_INTRODUCED, new[] { "0" })]
    [InlineData(XS_CONTROL, new[] { "help" })]
    public void Privileged_Operations_Are_Eacces_For_Guests(Paravirt.Core.Abi.Io.xsd_sockmsg_type type, string[] args)
    {
        var before = xs.State.Domains;
        xs.Send(guest, type, args).Error.Should().Be("EACCES");
        xs.State.Domains.Should().BeSameAs(before);
    }

    [Fact]
    public void Get_Domain_Path_Is_Open_To_Guests() =>
        xs.Send(guest, XS_GET_DOMAIN_PATH, "5").Text.Should().Be("/local/domain/5");

    [Fact]
    public void A_Domain_With_A_Target_Acts_As_Its_Target()
    {
        var stub = xs.Guest(dom0, 6);
        xs.MustWrite(guest, "secret", "s");
        xs.Read(stub, "/local/domain/5/secret").Error.Should().Be("EACCES");
        xs.MustOk(xs.Send(dom0, XS_SET_TARGET, "6", "5"));
        xs.MustRead(stub, "/local/domain/5/secret").Should().Be("s");
        xs.MustWrite(stub, "/local/domain/5/secret", "changed");
    }

    [Fact]
    public void Special_Watch_Perms_Need_Ownership_To_Change()
    {
        xs.Send(guest, XS_SET_PERMS, "@releaseDomain", "n0", "r5").Error.Should().Be("EACCES");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "@releaseDomain", "n0", "r5"));
        xs.Send(dom0, XS_SET_PERMS, "@other", "n0").Error.Should().Be("EINVAL");
    }
}
