using Paravirt.Core.Memory;

namespace Paravirt.Tests.Memory;

public sealed class FrameTableTests : IDisposable
{
    private const ushort DomA = 1;
    private const ushort DomB = 2;

    private readonly MachineMemory _machine = new(8);
    private readonly FrameTable _frames;

    public FrameTableTests() => _frames = new FrameTable(_machine);

    public void Dispose() => _machine.Dispose();

    [Fact]
    public void A_New_Table_Has_Every_Frame_Free_And_Unowned()
    {
        _frames.TotalFrames.Should().Be(8);
        _frames.FreeFrames.Should().Be(8);
        for (ulong mfn = 0; mfn < 8; mfn++)
        {
            _frames.OwnerOf(mfn).Should().Be(FrameTable.NoOwner);
            _frames.MachineToPhys(mfn).Should().Be(FrameTable.InvalidGfn);
        }
    }

    [Fact]
    public void An_Allocated_Frame_Is_Zeroed_Even_After_A_Previous_Owner_Wrote_To_It()
    {
        // Use every frame, so the next allocation must reuse the one written to.
        var all = new ulong[8];
        _frames.TryAllocateMany(DomA, all).Should().BeTrue();
        var dirty = all[3];
        _machine.Frame(dirty).Fill(0xCC);
        _frames.Release(dirty);

        _frames.TryAllocate(DomB, out var again).Should().BeTrue();
        again.Should().Be(dirty);
        _machine.Frame(again).ToArray().Should().OnlyContain(b => b == 0, "no data leaks from one owner to the next");
    }

    [Fact]
    public void Allocation_Sets_The_Owner_And_Release_Clears_It()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.OwnerOf(mfn).Should().Be(DomA);
        _frames.ReferenceCount(mfn).Should().Be(1);
        _frames.FreeFrames.Should().Be(7);
        _frames.Release(mfn);
        _frames.OwnerOf(mfn).Should().Be(FrameTable.NoOwner);
        _frames.FreeFrames.Should().Be(8);
    }

    [Fact]
    public void The_M2p_Entry_Is_Kept_While_Allocated_And_Reset_On_Free_And_Reallocation()
    {
        var all = new ulong[8];
        _frames.TryAllocateMany(DomA, all).Should().BeTrue();
        var mfn = all[5];
        _frames.MachineToPhys(mfn).Should().Be(FrameTable.InvalidGfn, "a fresh frame is in no physmap");
        _frames.SetMachineToPhys(mfn, 0x42);
        _frames.MachineToPhys(mfn).Should().Be(0x42UL);
        _frames.Release(mfn);
        _frames.MachineToPhys(mfn).Should().Be(FrameTable.InvalidGfn);
        _frames.TryAllocate(DomB, out var again).Should().BeTrue();
        again.Should().Be(mfn);
        _frames.MachineToPhys(again).Should().Be(FrameTable.InvalidGfn);
    }

    [Fact]
    public void Out_Of_Range_Frames_Have_No_Owner_Or_M2p_And_Cannot_Be_Taken()
    {
        _frames.OwnerOf(8).Should().Be(FrameTable.NoOwner);
        _frames.OwnerOf(ulong.MaxValue).Should().Be(FrameTable.NoOwner);
        _frames.MachineToPhys(ulong.MaxValue).Should().Be(FrameTable.InvalidGfn);
        _frames.IsValid(7).Should().BeTrue();
        _frames.IsValid(8).Should().BeFalse();
        _frames.TryGet(8, DomA).Should().BeFalse();
        _frames.TryGet(ulong.MaxValue, FrameTable.NoOwner).Should().BeFalse();
        FluentActions.Invoking(() => _frames.Release(8)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => _frames.SetMachineToPhys(8, 0)).Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void TryGet_Succeeds_For_The_Owner_And_Takes_A_Reference()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.TryGet(mfn, DomA).Should().BeTrue();
        _frames.ReferenceCount(mfn).Should().Be(2);
        _frames.Put(mfn);
        _frames.ReferenceCount(mfn).Should().Be(1);
    }

    [Fact]
    public void TryGet_Fails_For_Another_Owner_And_Leaves_The_Count_Alone()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.TryGet(mfn, DomB).Should().BeFalse();
        _frames.ReferenceCount(mfn).Should().Be(1);
    }

    [Fact]
    public void TryGet_Fails_For_A_Free_Frame_Whoever_Asks()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.Release(mfn);
        _frames.TryGet(mfn, DomA).Should().BeFalse();
        _frames.TryGet(mfn, FrameTable.NoOwner).Should().BeFalse("a free frame is not owned by DOMID_INVALID either");
        _frames.ReferenceCount(mfn).Should().Be(0);
    }

    [Fact]
    public void A_Frame_Released_While_Referenced_Is_Not_Reused_Until_The_Last_Put()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.TryGet(mfn, DomA).Should().BeTrue(); // an accessor copying into the frame
        _frames.Release(mfn);

        _frames.FreeFrames.Should().Be(7, "the accessor still holds the frame");
        _frames.OwnerOf(mfn).Should().Be(DomA);
        var others = new ulong[7];
        _frames.TryAllocateMany(DomB, others).Should().BeTrue();
        others.Should().NotContain(mfn);
        _frames.TryAllocate(DomB, out _).Should().BeFalse("the held frame is not on the free list");

        _frames.Put(mfn);
        _frames.FreeFrames.Should().Be(1);
        _frames.OwnerOf(mfn).Should().Be(FrameTable.NoOwner);
        _frames.TryAllocate(DomB, out var reused).Should().BeTrue();
        reused.Should().Be(mfn);
    }

    [Fact]
    public void Releasing_A_Frame_Twice_Throws_InvalidOperationException()
    {
        _frames.TryAllocate(DomA, out var mfn).Should().BeTrue();
        _frames.Release(mfn);
        FluentActions.Invoking(() => _frames.Release(mfn)).Should().Throw<InvalidOperationException>().WithMessage("*released more often*");
    }

    [Fact]
    public void Allocation_Fails_Cleanly_When_Memory_Runs_Out()
    {
        var all = new ulong[8];
        _frames.TryAllocateMany(DomA, all).Should().BeTrue();
        all.Should().OnlyHaveUniqueItems();
        _frames.FreeFrames.Should().Be(0);
        _frames.TryAllocate(DomA, out _).Should().BeFalse();
    }

    [Fact]
    public void TryAllocateMany_Is_All_Or_Nothing_When_Memory_Runs_Out()
    {
        _frames.TryAllocate(DomA, out var held).Should().BeTrue();
        _frames.TryAllocate(DomA, out var held2).Should().BeTrue();

        var tooMany = new ulong[7];
        _frames.TryAllocateMany(DomB, tooMany).Should().BeFalse();
        _frames.FreeFrames.Should().Be(6, "the partial allocation was returned");
        for (ulong mfn = 0; mfn < 8; mfn++)
        {
            if (mfn != held && mfn != held2)
            {
                _frames.OwnerOf(mfn).Should().Be(FrameTable.NoOwner, $"frame {mfn} was given back");
                _frames.ReferenceCount(mfn).Should().Be(0);
            }
        }

        var exactly = new ulong[6];
        _frames.TryAllocateMany(DomB, exactly).Should().BeTrue("everything given back can be allocated again");
    }

    [Fact]
    public void TryAllocateMany_Of_Nothing_Succeeds()
    {
        _frames.TryAllocateMany(DomA, []).Should().BeTrue();
        _frames.FreeFrames.Should().Be(8);
    }

    [Fact]
    public void Machine_Memory_Refuses_Impossible_Sizes()
    {
        FluentActions.Invoking(() => new MachineMemory(0)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => new MachineMemory((1L << 28) + 1)).Should().Throw<ArgumentOutOfRangeException>();
        FluentActions.Invoking(() => _machine.Frame(8)).Should().Throw<ArgumentOutOfRangeException>();
    }
}
