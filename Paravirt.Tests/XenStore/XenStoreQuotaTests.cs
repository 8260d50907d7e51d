using Paravirt.Core.XenStore;
using static Paravirt.Core.Abi.Io.xsd_sockmsg_type;

namespace Paravirt.Tests.XenStore;

/// <summary>Per-domain quotas with C xenstored 4.17's defaults: over quota is an error and changes nothing; dom0 is exempt.</summary>
public sealed class XenStoreQuotaTests
{
    [Fact]
    public void The_Defaults_Are_Those_Of_Xenstored_4_17()
    {
        var q = XsQuotas.Default;
        q.EntriesPerDomain.Should().Be(1000);
        q.WatchesPerDomain.Should().Be(128);
        q.MaxEntrySize.Should().Be(2048);
        q.TransactionsPerConnection.Should().Be(10);
        q.PermsPerNode.Should().Be(5);
        q.NodesPerTransaction.Should().Be(1024);
        q.MaxPathLength.Should().Be(2048);
        q.OutstandingRequests.Should().Be(20);
    }

    [Fact]
    public void A_Guest_May_Own_At_Most_1000_Nodes()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        xs.State.EntriesOf(5).Should().Be(1, "its home");
        // Spread over directories: a guest-owned directory's own record (its child list) is bounded too.
        for (var i = 1; i < 1000; i++)
        {
            var path = i % 100 == 1 ? $"d{i / 100}" : $"d{i / 100}/n{i}";
            xs.Send(guest, XS_MKDIR, path).Error.Should().BeNull($"node {i + 1} is within quota");
        }

        xs.State.EntriesOf(5).Should().Be(1000);
        var before = xs.State;
        xs.Send(guest, XS_MKDIR, "one-too-many").Error.Should().Be("ENOSPC");
        xs.State.Should().BeSameAs(before);
        xs.MustOk(xs.Send(guest, XS_RM, "d0/n2"));
        xs.MustOk(xs.Send(guest, XS_MKDIR, "fits-again"));
    }

    [Fact]
    public void Creating_Several_Parents_Counts_Each_And_Fails_Whole()
    {
        var xs = new XsHarness(new XsQuotas { EntriesPerDomain = 3 });
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        var before = xs.State;
        xs.Write(guest, "a/b/c", "x").Error.Should().Be("ENOSPC");
        xs.State.Should().BeSameAs(before);
        xs.MustWrite(guest, "a/b", "x");
        xs.State.EntriesOf(5).Should().Be(3);
    }

    [Fact]
    public void Dom0_Is_Not_Bound_By_Quotas()
    {
        var xs = new XsHarness(new XsQuotas { EntriesPerDomain = 2, MaxEntrySize = 100 });
        var dom0 = xs.Connect(0);
        for (var i = 0; i < 10; i++)
        {
            xs.MustWrite(dom0, $"/many/n{i}", new string('v', 500));
        }
    }

    [Fact]
    public void A_Guest_Node_Record_Must_Stay_Below_2048_Bytes()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        // Record = 24-byte header + 8 per permission + value + child list.
        xs.MustWrite(guest, "v", new string('x', 2048 - 24 - 8 - 1));
        xs.Write(guest, "v", new string('x', 2048 - 24 - 8)).Error.Should().Be("ENOSPC");
        xs.MustRead(guest, "v").Should().HaveLength(2015);
        xs.MustWrite(dom0, "/local/domain/5/v", new string('x', 4000));
    }

    [Fact]
    public void A_Guest_Node_May_Have_At_Most_5_Permissions()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        xs.MustWrite(guest, "p", "");
        xs.MustOk(xs.Send(guest, XS_SET_PERMS, "p", "n5", "r1", "r2", "r3", "r4"));
        xs.Send(guest, XS_SET_PERMS, "p", "n5", "r1", "r2", "r3", "r4", "r6").Error.Should().Be("ENOSPC");
        xs.MustOk(xs.Send(dom0, XS_SET_PERMS, "/local/domain/5/p", "n5", "r1", "r2", "r3", "r4", "r6"));
    }

    [Fact]
    public void A_Guest_Gets_E2big_Beyond_The_Watch_Quota_As_Xenstored_Counts_It()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        // xenstored refuses when the domain already has *more than* 128 watches, so 129 fit.
        for (var i = 0; i < 129; i++)
        {
            xs.Send(guest, XS_WATCH, "w", $"t{i}").Error.Should().BeNull($"watch {i + 1}");
        }

        xs.Send(guest, XS_WATCH, "w", "t-last").Error.Should().Be("E2BIG");
        var second = xs.Connect(5);
        xs.Send(second, XS_WATCH, "w", "x").Error.Should().Be("E2BIG", "the quota is per domain, not per connection");
        xs.MustOk(xs.Send(dom0, XS_WATCH, "w", "dom0-unlimited"));
    }

    [Fact]
    public void A_Guest_Gets_Enospc_Beyond_The_Transaction_Quota_As_Xenstored_Counts_It()
    {
        var xs = new XsHarness();
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        for (var i = 0; i < 11; i++)
        {
            xs.StartTransaction(guest);
        }

        xs.Send(guest, XS_TRANSACTION_START, "").Error.Should().Be("ENOSPC");
        for (var i = 0; i < 20; i++)
        {
            xs.StartTransaction(dom0);
        }
    }

    [Fact]
    public void A_Guest_Transaction_May_Touch_A_Bounded_Number_Of_Nodes()
    {
        var xs = new XsHarness(new XsQuotas { NodesPerTransaction = 3 });
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        var tx = xs.StartTransaction(guest);
        xs.MustWrite(guest, "a", "1", tx);
        xs.MustWrite(guest, "b", "1", tx); // touched: home, a, b
        xs.Write(guest, "c", "1", tx).Error.Should().Be("ENOSPC");
        // Unlike xenstored (which poisons the transaction, commit then ENOMEM), the refused request
        // simply had no effect and the transaction goes on.
        xs.MustOk(xs.EndTransaction(guest, tx, commit: true));
        xs.MustRead(guest, "b").Should().Be("1");
        xs.Read(guest, "c").Error.Should().Be("ENOENT");
    }

    [Fact]
    public void Entries_Created_In_A_Transaction_Count_At_Commit()
    {
        var xs = new XsHarness(new XsQuotas { EntriesPerDomain = 4 });
        var dom0 = xs.Connect(0);
        var guest = xs.Guest(dom0, 5);
        var tx = xs.StartTransaction(guest);
        xs.MustWrite(guest, "a", "1", tx);
        xs.MustWrite(guest, "b", "1", tx);
        xs.MustWrite(guest, "c", "1", tx);
        xs.EndTransaction(guest, tx, commit: true).Error.Should().Be("ENOSPC", "xenstored refuses a commit that reaches the quota");
        xs.Read(guest, "a").Error.Should().Be("ENOENT");
        xs.State.EntriesOf(5).Should().Be(1);
    }
}
