using Paravirt.Core.Memory;

namespace Paravirt.Tests.Memory;

public sealed class GuestMemoryTests : IDisposable
{
    private const ushort Me = 1;
    private const ushort Other = 2;
    private const int Page = MachineMemory.PageSize;

    private readonly MachineMemory _machine = new(16);
    private readonly FrameTable _frames;
    private readonly PhysMap _physMap = new(8);
    private readonly GuestMemory _memory;
    private readonly ulong[] _mfns = new ulong[4];

    public GuestMemoryTests()
    {
        _frames = new FrameTable(_machine);
        _memory = new GuestMemory(_frames, _physMap, Me);

        // Allocate five frames and keep four of them, so that gfn 0 and gfn 1 sit on
        // machine frames that are not next to each other.
        Span<ulong> all = stackalloc ulong[5];
        _frames.TryAllocateMany(Me, all).Should().BeTrue();
        _mfns[0] = all[0];
        _mfns[1] = all[2];
        _mfns[2] = all[3];
        _mfns[3] = all[4];
        _frames.Release(all[1]);
        for (var gfn = 0; gfn < _mfns.Length; gfn++)
        {
            _physMap.Set((ulong)gfn, _mfns[gfn], P2mType.Ram);
        }
    }

    public void Dispose() => _machine.Dispose();

    private Span<byte> MachineFrame(int gfn) => _machine.Frame(_mfns[gfn]);

    [Fact]
    public void Written_Bytes_Read_Back_Unchanged()
    {
        byte[] data = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        _memory.TryWrite(0x123, data).Should().BeTrue();
        var back = new byte[data.Length];
        _memory.TryRead(0x123, back).Should().BeTrue();
        back.Should().Equal(data);
        MachineFrame(0).Slice(0x123, data.Length).ToArray().Should().Equal(data, "gfn 0 is backed by its machine frame");
    }

    [Fact]
    public void A_Struct_Round_Trips_Through_The_Generic_Accessors()
    {
        _memory.TryWrite(0x2008UL, 0x1122_3344_5566_7788UL).Should().BeTrue();
        _memory.TryRead(0x2008UL, out ulong value).Should().BeTrue();
        value.Should().Be(0x1122_3344_5566_7788UL);
    }

    [Fact]
    public void Machine_Frames_Of_Gfn_0_And_1_Are_Not_Adjacent()
    {
        (_mfns[1] - _mfns[0]).Should().BeGreaterThan(1UL, "the page-crossing tests rely on it");
    }

    [Fact]
    public void Write_Across_A_Page_Boundary_Splits_Over_Both_Frames()
    {
        var data = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();
        _memory.TryWrite(Page - 6, data).Should().BeTrue();
        MachineFrame(0)[(Page - 6)..].ToArray().Should().Equal(data[..6]);
        MachineFrame(1)[..10].ToArray().Should().Equal(data[6..]);
    }

    [Fact]
    public void Read_Across_A_Page_Boundary_Joins_Both_Frames()
    {
        MachineFrame(0)[(Page - 3)..].Fill(0xAA);
        MachineFrame(1)[..5].Fill(0xBB);
        var back = new byte[8];
        _memory.TryRead(Page - 3, back).Should().BeTrue();
        back.Should().Equal(0xAA, 0xAA, 0xAA, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB);
    }

    [Fact]
    public void A_Copy_Spanning_Several_Pages_Round_Trips()
    {
        var data = new byte[(2 * Page) + 100];
        new Random(42).NextBytes(data);
        _memory.TryWrite(Page - 50, data).Should().BeTrue();
        var back = new byte[data.Length];
        _memory.TryRead(Page - 50, back).Should().BeTrue();
        back.Should().Equal(data);
    }

    [Fact]
    public void Unmapped_Gfn_Returns_False_Without_Throwing()
    {
        var buffer = new byte[8];
        _memory.TryRead(5UL * Page, buffer).Should().BeFalse("gfn 5 is a hole in the dense range");
        _memory.TryWrite(5UL * Page, buffer).Should().BeFalse();
        _memory.TryRead(1UL << 50, buffer).Should().BeFalse("far above the dense range");
        _memory.TryRead(PhysMap.MaxGfn << MachineMemory.PageShift, buffer).Should().BeFalse();
        _memory.TryRead(ulong.MaxValue & ~7UL, out ulong _).Should().BeFalse();
    }

    [Fact]
    public void A_Copy_Running_Off_The_End_Of_Ram_Fails_But_Keeps_The_Earlier_Pages()
    {
        var data = Enumerable.Repeat((byte)0x5A, 32).ToArray();
        var end = (ulong)_mfns.Length * Page;
        _memory.TryWrite(end - 16, data).Should().BeFalse();
        MachineFrame(3)[(Page - 16)..].ToArray().Should().OnlyContain(b => b == 0x5A, "as copy_to_guest, the part before the fault is written");
        _memory.TryRead(end - 16, new byte[32]).Should().BeFalse();
    }

    [Fact]
    public void An_Address_Range_That_Wraps_Around_The_Address_Space_Is_Refused()
    {
        // gfn 0 is mapped, so a copy that wrapped instead of failing would land in it.
        var buffer = new byte[32];
        _memory.TryRead(ulong.MaxValue - 15, buffer).Should().BeFalse();
        _memory.TryWrite(ulong.MaxValue - 15, buffer).Should().BeFalse();
        _memory.TryRead(ulong.MaxValue, new byte[2]).Should().BeFalse();
        _memory.TryClear(ulong.MaxValue - 7, 64).Should().BeFalse();
        MachineFrame(0).ToArray().Should().OnlyContain(b => b == 0, "nothing wrapped into gfn 0");
    }

    [Fact]
    public void An_Empty_Copy_Succeeds_Anywhere()
    {
        _memory.TryRead(ulong.MaxValue, []).Should().BeTrue();
        _memory.TryWrite(1UL << 60, []).Should().BeTrue();
    }

    [Fact]
    public void TryClear_Zeroes_A_Range_Across_Pages()
    {
        MachineFrame(0).Fill(0xFF);
        MachineFrame(1).Fill(0xFF);
        _memory.TryClear(Page - 300, 1000).Should().BeTrue();
        MachineFrame(0)[(Page - 300)..].ToArray().Should().OnlyContain(b => b == 0);
        MachineFrame(1)[..700].ToArray().Should().OnlyContain(b => b == 0);
        MachineFrame(1)[700].Should().Be(0xFF);
        MachineFrame(0)[Page - 301].Should().Be(0xFF);
    }

    [Fact]
    public void CompareExchange32_Swaps_Only_On_A_Match_And_Returns_The_Old_Value()
    {
        _memory.TryWrite(0x40UL, 7u).Should().BeTrue();
        _memory.TryCompareExchange32(0x40, 9, 8, out var original).Should().BeTrue();
        original.Should().Be(7u);
        _memory.TryRead(0x40, out uint unchanged).Should().BeTrue();
        unchanged.Should().Be(7u);
        _memory.TryCompareExchange32(0x40, 9, 7, out original).Should().BeTrue();
        original.Should().Be(7u);
        _memory.TryRead(0x40, out uint swapped).Should().BeTrue();
        swapped.Should().Be(9u);
    }

    [Fact]
    public void CompareExchange64_Swaps_Only_On_A_Match_And_Returns_The_Old_Value()
    {
        var gpa = Page + 0x80UL;
        _memory.TryWrite(gpa, 0xDEAD_BEEF_0000_0001UL).Should().BeTrue();
        _memory.TryCompareExchange64(gpa, 5, 0, out var original).Should().BeTrue();
        original.Should().Be(0xDEAD_BEEF_0000_0001UL);
        _memory.TryCompareExchange64(gpa, 5, 0xDEAD_BEEF_0000_0001UL, out original).Should().BeTrue();
        original.Should().Be(0xDEAD_BEEF_0000_0001UL);
        BitConverter.ToUInt64(MachineFrame(1).Slice(0x80, 8)).Should().Be(5UL);
    }

    [Fact]
    public void Or64_And_And64_Change_The_Word_And_Return_The_Old_Value()
    {
        _memory.TryWrite(0x100UL, 0b1010UL).Should().BeTrue();
        _memory.TryOr64(0x100, 0b0101, out var before).Should().BeTrue();
        before.Should().Be(0b1010UL);
        _memory.TryAnd64(0x100, 0b0110, out before).Should().BeTrue();
        before.Should().Be(0b1111UL);
        _memory.TryRead(0x100, out ulong now).Should().BeTrue();
        now.Should().Be(0b0110UL);
    }

    [Fact]
    public void Or32_And_And32_Change_The_Word_And_Return_The_Old_Value()
    {
        _memory.TryWrite(0x104UL, 0xF0u).Should().BeTrue();
        _memory.TryOr32(0x104, 0x0F, out var before).Should().BeTrue();
        before.Should().Be(0xF0u);
        _memory.TryAnd32(0x104, 0x3C, out before).Should().BeTrue();
        before.Should().Be(0xFFu);
        _memory.TryRead(0x104, out uint now).Should().BeTrue();
        now.Should().Be(0x3Cu);
    }

    [Fact]
    public void Test_And_Set_And_Test_And_Clear_Report_The_Previous_Bit()
    {
        const ulong gpa = 0x200;
        _memory.TryTestAndSetBit64(gpa, 63, out var wasSet).Should().BeTrue();
        wasSet.Should().BeFalse();
        _memory.TryTestAndSetBit64(gpa, 63, out wasSet).Should().BeTrue();
        wasSet.Should().BeTrue();
        _memory.TryRead(gpa, out ulong word).Should().BeTrue();
        word.Should().Be(1UL << 63);
        _memory.TryTestAndClearBit64(gpa, 63, out wasSet).Should().BeTrue();
        wasSet.Should().BeTrue();
        _memory.TryTestAndClearBit64(gpa, 63, out wasSet).Should().BeTrue();
        wasSet.Should().BeFalse();
        _memory.TryRead(gpa, out word).Should().BeTrue();
        word.Should().Be(0UL);
    }

    [Theory]
    [InlineData(0x101UL)]
    [InlineData(0x104UL)]
    [InlineData(0xFFCUL)]
    [InlineData(0xFFFUL)]
    public void Atomics_On_Misaligned_64_Bit_Words_Are_Refused(ulong gpa)
    {
        _memory.TryCompareExchange64(gpa, 1, 0, out _).Should().BeFalse();
        _memory.TryOr64(gpa, 1, out _).Should().BeFalse();
        _memory.TryAnd64(gpa, 1, out _).Should().BeFalse();
        _memory.TryTestAndSetBit64(gpa, 0, out _).Should().BeFalse();
        _memory.TryTestAndClearBit64(gpa, 0, out _).Should().BeFalse();
        MachineFrame(0).ToArray().Should().OnlyContain(b => b == 0, "a refused atomic leaves memory alone");
    }

    [Theory]
    [InlineData(0x101UL)]
    [InlineData(0x102UL)]
    [InlineData(0xFFEUL)]
    public void Atomics_On_Misaligned_32_Bit_Words_Are_Refused(ulong gpa)
    {
        _memory.TryCompareExchange32(gpa, 1, 0, out _).Should().BeFalse();
        _memory.TryOr32(gpa, 1, out _).Should().BeFalse();
        _memory.TryAnd32(gpa, 1, out _).Should().BeFalse();
    }

    [Fact]
    public void Atomics_On_Unmapped_Memory_Are_Refused()
    {
        const ulong hole = 6UL * Page;
        _memory.TryCompareExchange32(hole, 1, 0, out _).Should().BeFalse();
        _memory.TryCompareExchange64(hole, 1, 0, out _).Should().BeFalse();
        _memory.TryOr64(hole, 1, out _).Should().BeFalse();
        _memory.TryAnd64(hole, 1, out _).Should().BeFalse();
        _memory.TryTestAndSetBit64(ulong.MaxValue & ~7UL, 0, out _).Should().BeFalse();
    }

    [Theory]
    [InlineData(1, 0xEFUL)]
    [InlineData(2, 0xCDEFUL)]
    [InlineData(4, 0x89AB_CDEFUL)]
    [InlineData(8, 0x0123_4567_89AB_CDEFUL)]
    public void Volatile_Access_Writes_And_Reads_Exactly_Its_Size(int size, ulong expected)
    {
        const ulong gpa = 0x308;
        MachineFrame(0).Slice(0x300, 24).Fill(0x11);
        _memory.TryWriteVolatile(gpa, size, 0x0123_4567_89AB_CDEFUL).Should().BeTrue();
        _memory.TryReadVolatile(gpa, size, out var value).Should().BeTrue();
        value.Should().Be(expected);
        MachineFrame(0)[0x307].Should().Be(0x11, "nothing before the word is touched");
        MachineFrame(0)[0x308 + size].Should().Be(0x11, "nothing after the word is touched");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(-8)]
    public void Volatile_Access_Of_An_Unsupported_Size_Is_Refused(int size)
    {
        _memory.TryReadVolatile(0x100, size, out _).Should().BeFalse();
        _memory.TryWriteVolatile(0x100, size, 1).Should().BeFalse();
    }

    [Theory]
    [InlineData(2, 0x101UL)]
    [InlineData(4, 0x102UL)]
    [InlineData(8, 0x104UL)]
    [InlineData(8, 0xFFFUL)]
    public void Volatile_Access_To_A_Misaligned_Word_Is_Refused(int size, ulong gpa)
    {
        _memory.TryReadVolatile(gpa, size, out _).Should().BeFalse();
        _memory.TryWriteVolatile(gpa, size, 1).Should().BeFalse();
    }

    [Fact]
    public void A_Read_Only_Grant_Mapping_Allows_Reads_And_Refuses_Every_Write()
    {
        _frames.TryAllocate(Other, out var foreign).Should().BeTrue();
        _machine.Frame(foreign)[..8].Fill(0x42);
        const ulong gfn = 7;
        _physMap.Set(gfn, foreign, P2mType.GrantMapRo);
        const ulong gpa = gfn * Page;

        var back = new byte[8];
        _memory.TryRead(gpa, back).Should().BeTrue();
        back.Should().OnlyContain(b => b == 0x42);
        _memory.TryReadVolatile(gpa, 8, out var word).Should().BeTrue();
        word.Should().Be(0x4242_4242_4242_4242UL);

        _memory.TryWrite(gpa, new byte[] { 1 }).Should().BeFalse();
        _memory.TryWriteVolatile(gpa, 4, 1).Should().BeFalse();
        _memory.TryClear(gpa, 8).Should().BeFalse();
        _memory.TryCompareExchange64(gpa, 0, 0x4242_4242_4242_4242UL, out _).Should().BeFalse();
        _memory.TryOr64(gpa, 1, out _).Should().BeFalse();
        _memory.TryAnd64(gpa, 0, out _).Should().BeFalse();
        _machine.Frame(foreign)[..8].ToArray().Should().OnlyContain(b => b == 0x42, "the granting domain's page is unchanged");
        _frames.ReferenceCount(foreign).Should().Be(1, "failed and finished accesses put back every reference");
    }

    [Fact]
    public void A_Writable_Grant_Mapping_Reaches_The_Other_Domains_Frame()
    {
        _frames.TryAllocate(Other, out var foreign).Should().BeTrue();
        _physMap.Set(7, foreign, P2mType.GrantMapRw);
        _memory.TryWrite(7UL * Page, 0xABCDUL).Should().BeTrue();
        BitConverter.ToUInt64(_machine.Frame(foreign)[..8]).Should().Be(0xABCDUL);
    }

    [Fact]
    public void A_Ram_Entry_Pointing_At_Another_Domains_Frame_Is_Not_Accessible()
    {
        _frames.TryAllocate(Other, out var foreign).Should().BeTrue();
        _physMap.Set(6, foreign, P2mType.Ram);
        _memory.TryRead(6UL * Page, new byte[4]).Should().BeFalse("Ram entries must be owned by this domain");
        _memory.TryWrite(6UL * Page, new byte[4]).Should().BeFalse();
    }

    [Fact]
    public void A_Mapped_Frame_That_Was_Freed_Is_Not_Accessible()
    {
        _frames.TryAllocate(Me, out var mfn).Should().BeTrue();
        _physMap.Set(6, mfn, P2mType.Ram);
        _frames.Release(mfn);
        _memory.TryRead(6UL * Page, new byte[4]).Should().BeFalse("a free frame has no owner");
    }

    [Fact]
    public void Accesses_Leave_No_References_Behind()
    {
        _memory.TryWrite(Page - 4, new byte[8]).Should().BeTrue();
        _memory.TryRead(Page - 4, new byte[8]).Should().BeTrue();
        _memory.TryOr64(0, 1, out _).Should().BeTrue();
        _memory.TryReadVolatile(8, 4, out _).Should().BeTrue();
        _frames.ReferenceCount(_mfns[0]).Should().Be(1);
        _frames.ReferenceCount(_mfns[1]).Should().Be(1);
    }
}
