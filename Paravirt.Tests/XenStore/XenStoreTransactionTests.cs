using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>Optimistic transactions: isolated until committed, EAGAIN and no effect when anything they touched changed.</summary>
public sealed class XenStoreTransactionTests
{
    private readonly XsHarness xs = new();
    private readonly uint a;
    private readonly uint b;

    public XenStoreTransactionTests()
    {
        a = xs.Connect(0);
        b = xs.Connect(0);
        xs.MustWrite(a, "/x", "0");
    }

    [Fact]
    public void Ids_Start_At_One_And_Are_Per_Connection()
    {
        xs.StartTransaction(a).Should().Be(1);
        xs.StartTransaction(a).Should().Be(2);
        xs.StartTransaction(b).Should().Be(1);
    }

    [Fact]
    public void Writes_Are_Invisible_Outside_Until_Commit()
    {
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/x", "1", tx);
        xs.MustWrite(a, "/new/deep", "n", tx);
        xs.MustRead(a, "/x", tx).Should().Be("1");
        xs.MustRead(b, "/x").Should().Be("0");
        xs.Read(b, "/new/deep").Error.Should().Be("ENOENT");

        xs.MustOk(xs.EndTransaction(a, tx, commit: true));
        xs.MustRead(b, "/x").Should().Be("1");
        xs.MustRead(b, "/new/deep").Should().Be("n");
        xs.Send(b, XS_DIRECTORY, "/").Strings.Should().Equal("tool", "x", "new");
    }

    [Fact]
    public void Abort_Discards_Everything()
    {
        var before = xs.State.Nodes;
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/x", "1", tx);
        xs.MustOk(xs.SendTx(a, XS_RM, tx, "/tool"));
        xs.MustOk(xs.EndTransaction(a, tx, commit: false));
        xs.State.Nodes.Should().BeSameAs(before);
        xs.EndTransaction(a, tx, commit: true).Error.Should().Be("ENOENT", "the transaction is gone");
    }

    [Fact]
    public void A_Concurrent_Write_To_A_Node_Read_In_The_Transaction_Is_Eagain_With_No_Partial_Effect()
    {
        var tx = xs.StartTransaction(a);
        xs.MustRead(a, "/x", tx);
        xs.MustWrite(a, "/y", "from-tx", tx);
        xs.MustWrite(b, "/x", "concurrent");

        xs.EndTransaction(a, tx, commit: true).Error.Should().Be("EAGAIN");
        xs.Read(b, "/y").Error.Should().Be("ENOENT");
        xs.MustRead(b, "/x").Should().Be("concurrent");
        xs.State.Connections[a].Transactions.Should().BeEmpty("EAGAIN ends the transaction");
    }

    [Fact]
    public void A_Concurrent_Write_To_A_Node_Written_In_The_Transaction_Is_Eagain()
    {
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/x", "tx", tx);
        xs.MustWrite(b, "/x", "concurrent");
        xs.EndTransaction(a, tx, commit: true).Error.Should().Be("EAGAIN");
        xs.MustRead(b, "/x").Should().Be("concurrent");
    }

    [Fact]
    public void A_Concurrent_Create_Of_The_Same_Node_Is_Eagain()
    {
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/fresh", "tx", tx);
        xs.MustWrite(b, "/fresh", "other");
        xs.EndTransaction(a, tx, commit: true).Error.Should().Be("EAGAIN");
        xs.MustRead(b, "/fresh").Should().Be("other");
    }

    [Fact]
    public void A_Concurrent_Delete_Is_Eagain()
    {
        var tx = xs.StartTransaction(a);
        xs.MustRead(a, "/x", tx);
        xs.MustWrite(a, "/y", "1", tx);
        xs.MustOk(xs.Send(b, XS_RM, "/x"));
        xs.EndTransaction(a, tx, commit: true).Error.Should().Be("EAGAIN");
    }

    [Fact]
    public void Changes_To_Untouched_Nodes_Do_Not_Conflict()
    {
        xs.MustWrite(a, "/p/q", "0");
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/p/q", "tx", tx);
        xs.MustWrite(b, "/x", "elsewhere");
        xs.MustOk(xs.EndTransaction(a, tx, commit: true));
        xs.MustRead(b, "/p/q").Should().Be("tx");
    }

    [Fact]
    public void Of_Two_Interfering_Transactions_The_Second_To_Commit_Fails()
    {
        xs.MustWrite(a, "/y", "0");
        var t1 = xs.StartTransaction(a);
        var t2 = xs.StartTransaction(b);
        xs.MustRead(a, "/x", t1);
        xs.MustRead(b, "/y", t2);
        xs.MustWrite(a, "/y", "t1", t1);
        xs.MustWrite(b, "/x", "t2", t2);
        xs.MustOk(xs.EndTransaction(a, t1, commit: true));
        xs.EndTransaction(b, t2, commit: true).Error.Should().Be("EAGAIN");
        (xs.MustRead(a, "/x"), xs.MustRead(a, "/y")).Should().Be(("0", "t1"));
    }

    [Fact]
    public void Rm_Inside_A_Transaction_Applies_On_Commit()
    {
        xs.MustWrite(a, "/t/a/b", "1");
        var tx = xs.StartTransaction(a);
        xs.MustOk(xs.SendTx(a, XS_RM, tx, "/t/a"));
        xs.Read(a, "/t/a/b", tx).Error.Should().Be("ENOENT");
        xs.MustRead(b, "/t/a/b").Should().Be("1");
        xs.MustOk(xs.EndTransaction(a, tx, commit: true));
        xs.Read(b, "/t/a/b").Error.Should().Be("ENOENT");
        xs.Send(b, XS_DIRECTORY, "/t").Message.Payload.Should().BeEmpty();
    }

    [Fact]
    public void Watches_Fire_On_Commit_Not_Before()
    {
        xs.MustOk(xs.Send(b, XS_WATCH, "/x", "tok"));
        var tx = xs.StartTransaction(a);
        xs.Write(a, "/x", "1", tx).Events.Should().BeEmpty();
        var end = xs.EndTransaction(a, tx, commit: true);
        end.EventsFor(b).Select(e => (e.Path, e.Token)).Should().Equal(("/x", "tok"));
    }

    [Fact]
    public void Aborted_Or_Failed_Transactions_Fire_No_Watches()
    {
        xs.MustOk(xs.Send(b, XS_WATCH, "/x", "tok"));
        var tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/x", "1", tx);
        xs.EndTransaction(a, tx, commit: false).Events.Should().BeEmpty();

        tx = xs.StartTransaction(a);
        xs.MustWrite(a, "/x", "1", tx);
        xs.MustWrite(b, "/x", "2");
        xs.EndTransaction(a, tx, commit: true).Events.Should().BeEmpty();
    }

    [Fact]
    public void Protocol_Errors()
    {
        xs.Read(a, "/x", tx: 77).Error.Should().Be("ENOENT", "an unknown transaction id");
        xs.EndTransaction(a, 0, commit: true).Error.Should().Be("ENOENT", "no transaction to end");
        var tx = xs.StartTransaction(a);
        xs.SendTx(a, XS_TRANSACTION_START, tx, "").Error.Should().Be("EBUSY", "transactions do not nest");
        xs.SendTx(a, XS_TRANSACTION_END, tx, "X").Error.Should().Be("EINVAL");
        xs.Read(b, "/x", tx).Error.Should().Be("ENOENT", "transaction ids belong to their connection");
        xs.MustOk(xs.EndTransaction(a, tx, commit: true));
    }
}
