using Paravirt.Core.Domains;

namespace Paravirt.Tests.Domains;

public sealed class GuestProfileTests
{
    private const string Map = """
        0000000000000000 A fixed_percpu_data
        ffffffff81000000 T _stext
        ffffffff81001000 t xen_vmalloc_p2m_tree
        ffffffff81002000 T mpihelp_submul_1
        ffffffff81003000 D some_data
        ffffffffc0000000 t module_func	[xen_blkfront]
        not a symbol line
        """;

    [Fact]
    public void Symbols_Resolve_An_Address_To_The_Text_Symbol_At_Or_Below_It()
    {
        var symbols = GuestSymbols.Parse(new StringReader(Map));

        symbols.Count.Should().Be(4, "text symbols only (t, T, w, W), with a non-zero address");
        symbols.Resolve(0xffffffff81001234).Should().Be("xen_vmalloc_p2m_tree");
        symbols.Resolve(0xffffffff81002000).Should().Be("mpihelp_submul_1");
        symbols.Resolve(0xffffffff81003800).Should().Be("mpihelp_submul_1", "data symbols do not end a function");
        symbols.Resolve(0xffffffffc0000010).Should().Be("module_func");
        symbols.Resolve(0x1000).Should().BeNull();
    }

    [Fact]
    public void The_Profile_Adds_Up_Instructions_Per_Function_Most_First()
    {
        var profile = new GuestProfile();
        profile.Record(0xffffffff81001010, 20_000);
        profile.Record(0xffffffff81002010, 5_000);
        profile.Record(0xffffffff81001fff, 20_000);
        profile.Record(0x400000, 1_000);

        var symbols = GuestSymbols.Parse(new StringReader(Map));
        profile.Instructions.Should().Be(46_000);
        profile.ByFunction(symbols).Should().Equal(("xen_vmalloc_p2m_tree", 40_000L), ("mpihelp_submul_1", 5_000L), ("0x400000", 1_000L));
        profile.ByFunction(null).Should().HaveCount(4, "without symbols each address is its own line");

        var report = new StringWriter();
        profile.WriteReport(report, symbols);
        report.ToString().Should().Contain("46,000 guest instructions").And.Contain("86.96%  xen_vmalloc_p2m_tree");
    }

    [Fact]
    public void Reset_Forgets_What_Was_Recorded_So_The_Report_Covers_What_Follows()
    {
        var profile = new GuestProfile();
        profile.Record(0xffffffff81001010, 1000);
        profile.Reset();
        profile.Record(0xffffffff81002010, 30);

        profile.Instructions.Should().Be(30);
        profile.ByFunction(GuestSymbols.Parse(new StringReader(Map))).Should().Equal([("mpihelp_submul_1", 30L)]);
    }
}
