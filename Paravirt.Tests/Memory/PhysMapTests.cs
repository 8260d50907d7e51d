using Paravirt.Core.Memory;

namespace Paravirt.Tests.Memory;

public sealed class PhysMapTests
{
    [Fact]
    public void An_Empty_Map_Has_Nothing_To_Look_Up()
    {
        var map = new PhysMap(4);
        map.DenseFrames.Should().Be(4);
        map.TryLookup(0, out _, out var type).Should().BeFalse();
        type.Should().Be(P2mType.Invalid);
        map.TryLookup(1000, out _, out _).Should().BeFalse();
        map.TryLookup(ulong.MaxValue, out _, out _).Should().BeFalse();
        map.Entries().Should().BeEmpty();
        map.SparseCount.Should().Be(0);
    }

    [Fact]
    public void A_Dense_Entry_Is_Found_With_Its_Machine_Frame_And_Type()
    {
        var map = new PhysMap(4);
        map.Set(2, 0x1234, P2mType.Ram).Should().Be((0UL, P2mType.Invalid));
        map.TryLookup(2, out var mfn, out var type).Should().BeTrue();
        mfn.Should().Be(0x1234UL);
        type.Should().Be(P2mType.Ram);
        map.SparseCount.Should().Be(0, "gfn 2 lies in the dense range");
    }

    [Fact]
    public void A_Sparse_Entry_Above_The_Dense_Range_Is_Found_And_Counted()
    {
        var map = new PhysMap(4);
        map.Set(PhysMap.MaxGfn, 7, P2mType.Shared).Should().Be((0UL, P2mType.Invalid));
        map.Set(4, 8, P2mType.GrantMapRo);
        map.SparseCount.Should().Be(2);
        map.TryLookup(PhysMap.MaxGfn, out var mfn, out var type).Should().BeTrue();
        (mfn, type).Should().Be((7UL, P2mType.Shared));
        map.TryLookup(4, out mfn, out type).Should().BeTrue();
        (mfn, type).Should().Be((8UL, P2mType.GrantMapRo));
        map.TryLookup(5, out _, out _).Should().BeFalse();
    }

    [Fact]
    public void Set_Returns_The_Entry_It_Replaced_In_Both_Ranges()
    {
        var map = new PhysMap(4);
        map.Set(1, 10, P2mType.Ram);
        map.Set(1, 11, P2mType.GrantMapRw).Should().Be((10UL, P2mType.Ram));
        map.Set(100, 20, P2mType.Shared);
        map.Set(100, 21, P2mType.Ram).Should().Be((20UL, P2mType.Shared));
        map.SparseCount.Should().Be(1, "replacing a sparse entry does not add one");
        map.TryLookup(1, out var mfn, out var type).Should().BeTrue();
        (mfn, type).Should().Be((11UL, P2mType.GrantMapRw));
    }

    [Fact]
    public void Clear_Removes_The_Entry_And_Returns_What_It_Held()
    {
        var map = new PhysMap(4);
        map.Set(3, 30, P2mType.Ram);
        map.Set(50, 31, P2mType.Shared);
        map.Clear(3).Should().Be((30UL, P2mType.Ram));
        map.Clear(50).Should().Be((31UL, P2mType.Shared));
        map.TryLookup(3, out _, out _).Should().BeFalse();
        map.TryLookup(50, out _, out _).Should().BeFalse();
        map.SparseCount.Should().Be(0);
        map.Entries().Should().BeEmpty();
    }

    [Fact]
    public void Clearing_A_Hole_Or_An_Impossible_Gfn_Returns_Invalid()
    {
        var map = new PhysMap(4);
        map.Clear(0).Should().Be((0UL, P2mType.Invalid));
        map.Clear(999).Should().Be((0UL, P2mType.Invalid));
        map.Clear(ulong.MaxValue).Should().Be((0UL, P2mType.Invalid));
        map.SparseCount.Should().Be(0);
    }

    [Theory]
    [InlineData(PhysMap.MaxGfn + 1)]
    [InlineData(ulong.MaxValue)]
    public void A_Gfn_Above_MaxGfn_Throws_ArgumentOutOfRangeException(ulong gfn)
    {
        var map = new PhysMap(4);
        FluentActions.Invoking(() => map.Set(gfn, 1, P2mType.Ram)).Should().Throw<ArgumentOutOfRangeException>();
        map.SparseCount.Should().Be(0);
    }

    [Fact]
    public void An_Invalid_Type_Or_An_Mfn_Too_Wide_For_An_Entry_Is_Refused()
    {
        var map = new PhysMap(4);
        FluentActions.Invoking(() => map.Set(0, 1, P2mType.Invalid)).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => map.Set(0, 1UL << 56, P2mType.Ram)).Should().Throw<ArgumentException>();
        map.TryLookup(0, out _, out _).Should().BeFalse();
    }

    [Fact]
    public void Entries_Lists_Dense_And_Sparse_Entries()
    {
        var map = new PhysMap(4);
        map.Set(0, 100, P2mType.Ram);
        map.Set(3, 103, P2mType.Ram);
        map.Set(1UL << 30, 200, P2mType.Shared);
        map.Entries().Should().BeEquivalentTo(new (ulong, ulong, P2mType)[]
        {
            (0, 100, P2mType.Ram),
            (3, 103, P2mType.Ram),
            (1UL << 30, 200, P2mType.Shared),
        });
    }

    [Fact]
    public void A_Negative_Dense_Size_Is_Refused()
    {
        FluentActions.Invoking(() => new PhysMap(-1)).Should().Throw<ArgumentOutOfRangeException>();
    }
}
