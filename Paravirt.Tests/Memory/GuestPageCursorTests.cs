using Paravirt.Core.Memory;

namespace Paravirt.Tests.Memory;

public sealed class GuestPageCursorTests : IDisposable
{
    private const ushort Me = 1;
    private const ushort Other = 2;

    private readonly MachineMemory _machine = new(16);
    private readonly FrameTable _frames;
    private readonly PhysMap _physMap = new(4);
    private readonly GuestMemory _memory;
    private readonly ulong[] _mfns = new ulong[3];

    public GuestPageCursorTests()
    {
        _frames = new FrameTable(_machine);
        _memory = new GuestMemory(_frames, _physMap, Me);
        _frames.TryAllocateMany(Me, _mfns).Should().BeTrue();
        for (var gfn = 0; gfn < _mfns.Length; gfn++)
        {
            _physMap.Set((ulong)gfn, _mfns[gfn], P2mType.Ram);
        }
    }

    public void Dispose() => _machine.Dispose();

    [Fact]
    public void It_Holds_One_Reference_While_Open_And_None_After()
    {
        var cursor = new GuestPageCursor(_memory);
        cursor.TryWrite(0x10UL, 0x1122334455667788UL).Should().BeTrue();
        cursor.TryRead(0x10UL, out ulong back).Should().BeTrue();
        back.Should().Be(0x1122334455667788UL);
        _frames.ReferenceCount(_mfns[0]).Should().Be(2, "the allocation's reference and the cursor's");

        cursor.TryRead(0x1008UL, out ulong _).Should().BeTrue();
        _frames.ReferenceCount(_mfns[0]).Should().Be(1, "moving to another page lets go of the first");
        _frames.ReferenceCount(_mfns[1]).Should().Be(2);

        cursor.Dispose();
        _frames.ReferenceCount(_mfns[1]).Should().Be(1);
    }

    [Fact]
    public void An_Access_Follows_The_Mapping_As_It_Is_Now_Not_As_It_Was()
    {
        var cursor = new GuestPageCursor(_memory);
        _machine.Frame(_mfns[0])[0] = 0xAA;
        _machine.Frame(_mfns[2])[0] = 0xBB;
        cursor.TryRead(0UL, out byte first).Should().BeTrue();
        first.Should().Be(0xAA);

        _physMap.Set(0, _mfns[2], P2mType.Ram);                 // the guest moved gfn 0 elsewhere
        cursor.TryRead(0UL, out byte moved).Should().BeTrue();
        moved.Should().Be(0xBB);

        _physMap.Clear(0);                                       // and then removed it
        cursor.TryRead(0UL, out byte _).Should().BeFalse();
        cursor.TryWrite(0UL, (byte)1).Should().BeFalse();
        cursor.Dispose();
        _frames.ReferenceCount(_mfns[0]).Should().Be(1);
        _frames.ReferenceCount(_mfns[2]).Should().Be(1);
    }

    [Fact]
    public void A_Read_Only_Grant_Mapping_Reads_But_Never_Writes()
    {
        _frames.TryAllocate(Other, out var foreign).Should().BeTrue();
        _machine.Frame(foreign)[8] = 0x5A;
        _physMap.Set(3, foreign, P2mType.GrantMapRo);
        var cursor = new GuestPageCursor(_memory);
        cursor.TryRead(0x3008UL, out byte value).Should().BeTrue();
        value.Should().Be(0x5A);
        cursor.TryWrite(0x3008UL, (byte)0).Should().BeFalse();
        _machine.Frame(foreign)[8].Should().Be(0x5A);
        cursor.Dispose();
        _frames.ReferenceCount(foreign).Should().Be(1);
    }

    [Fact]
    public void An_Access_Across_A_Page_Boundary_Reads_Both_Pages()
    {
        _machine.Frame(_mfns[0])[4095] = 0x01;
        _machine.Frame(_mfns[1])[0] = 0x02;
        var cursor = new GuestPageCursor(_memory);
        cursor.TryRead(4095UL, out ushort both).Should().BeTrue();
        both.Should().Be(0x0201);
        cursor.TryRead(0x2FFEUL, out ulong _).Should().BeFalse("gfn 3 is a hole");
        cursor.Dispose();
    }
}
