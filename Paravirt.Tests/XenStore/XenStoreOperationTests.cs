using System.Text;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.XenStore;
using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>Every message type of the store, as C xenstored 4.17 answers it.</summary>
public sealed class XenStoreOperationTests
{
    private readonly XsHarness xs = new();
    private readonly uint dom0;

    public XenStoreOperationTests() => dom0 = xs.Connect(0);

    [Fact]
    public void A_Fresh_Store_Holds_Tool_Xenstored()
    {
        xs.Send(dom0, XS_DIRECTORY, "/").Strings.Should().Equal("tool");
        xs.Send(dom0, XS_DIRECTORY, "/tool").Strings.Should().Equal("xenstored");
        xs.Send(dom0, XS_GET_PERMS, "/").Strings.Should().Equal("n0");
    }

    [Fact]
    public void Write_Creates_Missing_Parents_With_Empty_Values()
    {
        xs.MustWrite(dom0, "/a/b/c", "v");
        xs.MustRead(dom0, "/a/b/c").Should().Be("v");
        xs.MustRead(dom0, "/a/b").Should().BeEmpty();
        xs.Send(dom0, XS_DIRECTORY, "/a").Strings.Should().Equal("b");
    }

    [Fact]
    public void Write_Keeps_Binary_Values_Including_Nuls()
    {
        var payload = XsWireCodec.String("/bin").Concat(new byte[] { 0, 1, 0, 0xff }).ToArray();
        xs.MustOk(xs.Raw(dom0, new XsMessage(XS_WRITE, 1, 0, payload)));
        xs.Read(dom0, "/bin").Message.Payload.Should().Equal(0, 1, 0, 0xff);
    }

    [Fact]
    public void Write_Replaces_A_Value_And_Bumps_The_Generation()
    {
        xs.MustWrite(dom0, "/g", "1");
        var before = xs.State.Nodes["/g"].Generation;
        xs.MustWrite(dom0, "/g", "2");
        xs.MustRead(dom0, "/g").Should().Be("2");
        xs.State.Nodes["/g"].Generation.Should().BeGreaterThan(before);
    }

    [Fact]
    public void Write_Without_Any_Nul_Is_Einval() =>
        xs.Raw(dom0, new XsMessage(XS_WRITE, 1, 0, "/x"u8.ToArray())).Error.Should().Be("EINVAL");

    [Theory]
    [InlineData("/a/")]
    [InlineData("/a//b")]
    [InlineData("/a b")]
    [InlineData("/a.b")]
    [InlineData("@special")]
    [InlineData("")]
    public void Invalid_Node_Names_Are_Einval(string path)
    {
        xs.Write(dom0, path, "v").Error.Should().Be("EINVAL");
        xs.Read(dom0, path).Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Names_May_Use_Letters_Digits_Dash_Underscore_And_At()
    {
        xs.MustWrite(dom0, "/Az09-_@x", "ok");
        xs.MustRead(dom0, "/Az09-_@x").Should().Be("ok");
    }

    [Fact]
    public void Path_Length_Is_Limited_Beyond_The_Domain_Home()
    {
        var okRest = new string('a', XsWire.XENSTORE_REL_PATH_MAX - 1);
        xs.Send(dom0, XS_MKDIR, "/local/domain/3/" + okRest).Error.Should().BeNull("2047 bytes after the home are fine");
        xs.Send(dom0, XS_MKDIR, "/local/domain/3/" + okRest + "bb").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_MKDIR, "/" + new string('a', XsWire.XENSTORE_REL_PATH_MAX)).Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Relative_Paths_Resolve_Under_The_Connection_Home()
    {
        xs.MustWrite(dom0, "rel/x", "1");
        xs.MustRead(dom0, "/local/domain/0/rel/x").Should().Be("1");
    }

    [Fact]
    public void Read_Of_A_Missing_Node_Is_Enoent() => xs.Read(dom0, "/missing").Error.Should().Be("ENOENT");

    [Fact]
    public void Read_With_Extra_Strings_Or_No_Nul_Is_Einval()
    {
        xs.Raw(dom0, new XsMessage(XS_READ, 1, 0, "/tool"u8.ToArray())).Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_READ, "/tool", "extra").Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Mkdir_Creates_An_Empty_Node_And_Accepts_An_Existing_One()
    {
        xs.MustOk(xs.Send(dom0, XS_MKDIR, "/m/n"));
        xs.MustWrite(dom0, "/m/n", "keep");
        xs.MustOk(xs.Send(dom0, XS_MKDIR, "/m/n"));
        xs.MustRead(dom0, "/m/n").Should().Be("keep");
    }

    [Fact]
    public void Rm_Removes_Recursively_And_Unlinks_From_The_Parent()
    {
        xs.MustWrite(dom0, "/r/a/b", "1");
        xs.MustWrite(dom0, "/r/c", "2");
        xs.MustOk(xs.Send(dom0, XS_RM, "/r/a"));
        xs.Read(dom0, "/r/a/b").Error.Should().Be("ENOENT");
        xs.Send(dom0, XS_DIRECTORY, "/r").Strings.Should().Equal("c");
        xs.State.Nodes.Keys.Should().NotContain(k => k.StartsWith("/r/a", StringComparison.Ordinal));
    }

    [Fact]
    public void Rm_Of_A_Missing_Node_Is_Ok_If_Its_Parent_Exists_Else_Enoent()
    {
        xs.MustOk(xs.Send(dom0, XS_RM, "/tool/nothing"));
        xs.Send(dom0, XS_RM, "/nothing/deeper").Error.Should().Be("ENOENT");
    }

    [Fact]
    public void Rm_Of_The_Root_Is_Einval() => xs.Send(dom0, XS_RM, "/").Error.Should().Be("EINVAL");

    [Fact]
    public void Directory_Lists_Children_In_Creation_Order()
    {
        xs.MustWrite(dom0, "/d/z", "");
        xs.MustWrite(dom0, "/d/a", "");
        xs.MustWrite(dom0, "/d/m", "");
        var r = xs.Send(dom0, XS_DIRECTORY, "/d");
        r.Message.Payload.Should().Equal("z\0a\0m\0"u8.ToArray());
        xs.Send(dom0, XS_DIRECTORY, "/d/z").Message.Payload.Should().BeEmpty();
    }

    [Fact]
    public void Directory_Part_Starts_With_The_Generation_And_Ends_With_An_Empty_String()
    {
        xs.MustWrite(dom0, "/d/one", "");
        xs.MustWrite(dom0, "/d/two", "");
        var gen = xs.State.Nodes["/d"].Generation.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var r = xs.Send(dom0, XS_DIRECTORY_PART, "/d", "0");
        r.Message.Payload.Should().Equal(Encoding.ASCII.GetBytes($"{gen}\0one\0two\0\0"));
        xs.Send(dom0, XS_DIRECTORY_PART, "/d", "4").Message.Payload.Should().Equal(Encoding.ASCII.GetBytes($"{gen}\0two\0\0"));
        xs.Send(dom0, XS_DIRECTORY_PART, "/d", "99").Message.Payload.Should().Equal(Encoding.ASCII.GetBytes($"{gen}\0\0"));
        xs.Send(dom0, XS_DIRECTORY_PART, "/d").Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Directory_Part_Pages_A_Listing_Too_Big_For_Directory()
    {
        var names = Enumerable.Range(0, 600).Select(i => $"child-number-{i:D4}").ToList();
        foreach (var n in names)
        {
            xs.MustOk(xs.Send(dom0, XS_MKDIR, "/big/" + n));
        }

        xs.Send(dom0, XS_DIRECTORY, "/big").Error.Should().Be("E2BIG", "the reply would exceed XENSTORE_PAYLOAD_MAX");
        var got = new List<string>();
        var offset = 0;
        string? generation = null;
        for (var pages = 0; pages < 100; pages++)
        {
            var r = xs.Send(dom0, XS_DIRECTORY_PART, "/big", offset.ToString(System.Globalization.CultureInfo.InvariantCulture));
            r.Error.Should().BeNull();
            r.Message.Payload.Length.Should().BeLessThanOrEqualTo(XsWire.XENSTORE_PAYLOAD_MAX);
            var parts = r.Strings;
            generation ??= parts[0];
            parts[0].Should().Be(generation, "the generation does not change between pages");
            var chunk = parts.Skip(1).ToList();
            var done = chunk.Count > 0 && chunk[^1].Length == 0;
            chunk = [.. chunk.Where(c => c.Length > 0)];
            got.AddRange(chunk);
            offset += chunk.Sum(c => c.Length + 1);
            if (done)
            {
                break;
            }
        }

        got.Should().Equal(names);
    }

    [Fact]
    public void Get_Perms_Lists_Owner_First_In_Wire_Form()
    {
        xs.MustWrite(dom0, "/p", "");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/p", "r3", "w4", "b5", "n6"));
        xs.Send(dom0, XS_GET_PERMS, "/p").Message.Payload.Should().Equal("r3\0w4\0b5\0n6\0"u8.ToArray());
    }

    [Fact]
    public void Set_Perms_Rejects_Garbage()
    {
        xs.MustWrite(dom0, "/p", "");
        xs.Send(dom0, XS_SET_PERMS, "/p").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_SET_PERMS, "/p", "x1").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_SET_PERMS, "/p", "r").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_SET_PERMS, "/p", "r1z").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_SET_PERMS, "/missing", "r1").Error.Should().Be("ENOENT");
        xs.Send(dom0, XS_GET_PERMS, "/p").Strings.Should().Equal("n0");
    }

    [Fact]
    public void Get_Domain_Path_Is_Local_Domain_N()
    {
        xs.Send(dom0, XS_GET_DOMAIN_PATH, "7").Text.Should().Be("/local/domain/7");
        xs.Send(dom0, XS_GET_DOMAIN_PATH).Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Introduce_Makes_A_Domain_Introduced_And_Release_Forgets_It()
    {
        xs.Send(dom0, XS_IS_DOMAIN_INTRODUCED, "4").Text.Should().Be("F");
        xs.Send(dom0, XS_IS_DOMAIN_INTRODUCED, "0").Text.Should().Be("T");
        xs.Send(dom0, XS_IS_DOMAIN_INTRODUCED, "32752").Text.Should().Be("T", "DOMID_SELF is always introduced");
        xs.MustOk(xs.Send(dom0, XS_INTRODUCE, "4", "1234", "5"));
        xs.Send(dom0, XS_IS_DOMAIN_INTRODUCED, "4").Text.Should().Be("T");
        xs.MustOk(xs.Send(dom0, XS_INTRODUCE, "4", "1234", "5"));
        xs.MustOk(xs.Send(dom0, XS_RELEASE, "4"));
        xs.Send(dom0, XS_IS_DOMAIN_INTRODUCED, "4").Text.Should().Be("F");
        xs.Send(dom0, XS_RELEASE, "4").Error.Should().Be("ENOENT");
    }

    [Fact]
    public void Introduce_Needs_Three_Arguments_And_A_Port()
    {
        xs.Send(dom0, XS_INTRODUCE, "4", "1").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_INTRODUCE, "4", "1", "0").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_RELEASE, "0").Error.Should().Be("EINVAL", "dom0 cannot be released");
    }

    [Fact]
    public void Release_Removes_The_Nodes_The_Domain_Owns()
    {
        var guest = xs.Guest(dom0, 5);
        xs.MustWrite(guest, "data/x", "1");
        xs.MustWrite(dom0, "/local/domain/5-other", "kept");
        xs.MustOk(xs.Send(dom0, XS_RELEASE, "5"));
        xs.Read(dom0, "/local/domain/5").Error.Should().Be("ENOENT");
        xs.MustRead(dom0, "/local/domain/5-other").Should().Be("kept");
        xs.State.Connections.Keys.Should().NotContain(guest, "the released domain's connections go too");
        xs.State.EntriesOf(5).Should().Be(0);
    }

    [Fact]
    public void Resume_Needs_An_Introduced_Domain()
    {
        xs.Send(dom0, XS_RESUME, "9").Error.Should().Be("ENOENT");
        xs.MustOk(xs.Send(dom0, XS_INTRODUCE, "9", "0", "1"));
        xs.MustOk(xs.Send(dom0, XS_RESUME, "9"));
    }

    [Fact]
    public void Set_Target_Needs_Both_Domains_Introduced()
    {
        xs.Send(dom0, XS_SET_TARGET, "6", "5").Error.Should().Be("ENOENT");
        xs.MustOk(xs.Send(dom0, XS_INTRODUCE, "5", "0", "1"));
        xs.MustOk(xs.Send(dom0, XS_INTRODUCE, "6", "0", "1"));
        xs.MustOk(xs.Send(dom0, XS_SET_TARGET, "6", "5"));
        xs.Send(dom0, XS_SET_TARGET, "6").Error.Should().Be("EINVAL");
    }

    [Fact]
    public void Reset_Watches_Drops_Watches_And_Transactions()
    {
        xs.MustOk(xs.Send(dom0, XS_WATCH, "/w", "t"));
        var tx = xs.StartTransaction(dom0);
        xs.MustOk(xs.Send(dom0, XS_RESET_WATCHES));
        xs.Write(dom0, "/w", "1").Events.Should().BeEmpty();
        xs.EndTransaction(dom0, tx, commit: true).Error.Should().Be("ENOENT");
    }

    [Fact]
    public void Control_Knows_Help_And_Print_Only()
    {
        xs.Send(dom0, XS_CONTROL, "help").Text.Should().Contain("print");
        xs.MustOk(xs.Send(dom0, XS_CONTROL, "print", "hello"));
        xs.Send(dom0, XS_CONTROL, "live-update", "-s").Error.Should().Be("EINVAL");
        xs.Send(dom0, XS_CONTROL).Error.Should().Be("EINVAL");
    }

    [Theory]
    [InlineData(XS_WATCH_EVENT)]
    [InlineData(XS_ERROR)]
    [InlineData((xsd_sockmsg_type)20)]
    [InlineData(XS_TYPE_COUNT)]
    [InlineData(XS_INVALID)]
    public void Types_The_Store_Does_Not_Serve_Get_Enosys_As_In_Xenstored(xsd_sockmsg_type type)
    {
        var before = xs.State;
        var r = xs.Send(dom0, type, "/x");
        r.Error.Should().Be("ENOSYS");
        r.Message.Kind.Should().Be(XS_ERROR);
        xs.State.Should().BeSameAs(before);
    }

    [Fact]
    public void Error_Replies_Are_The_Errno_Name_Nul_Terminated()
    {
        var r = xs.Read(dom0, "/missing");
        r.Message.Kind.Should().Be(XS_ERROR);
        r.Message.Payload.Should().Equal("ENOENT\0"u8.ToArray());
    }

    [Fact]
    public void Replies_Echo_Req_Id_And_Tx_Id()
    {
        var tx = xs.StartTransaction(dom0);
        var r = xs.Raw(dom0, new XsMessage(XS_READ, 0xabcdef, tx, XsWireCodec.String("/tool")));
        r.Message.ReqId.Should().Be(0xabcdef);
        r.Message.TxId.Should().Be(tx);
    }

    [Fact]
    public void Unknown_Connections_Are_A_Host_Error()
    {
        var act = () => XenStoreCore.Process(xs.State, 999, XsMessage.Strings(XS_READ, 1, 0, "/"));
        act.Should().Throw<ArgumentException>().WithMessage("*999*");
    }
}
