using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory.Pv;

namespace Paravirt.Tests.Memory.Pv;

/// <summary>
/// Grants of a classic PV domain's frames and page types: a writable grant mapping or a grant copy
/// into a frame holds a writable type (as Xen's map_grant_ref and gnttab_copy_claim_buf do), so a
/// page table granted to a backend cannot be written through the grant, and a page a backend has
/// mapped writable cannot become a page table.
/// </summary>
public sealed class PvGrantTests : IDisposable
{
    private const ulong P = PvTestDomain.P;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 32 });

    public void Dispose() => _hv.Dispose();

    /// <summary>Grants <paramref name="mfn"/> to domain 0 as v1 entry <paramref name="gref"/>, written straight into the grant frame.</summary>
    private void Grant(PvTestDomain d, uint gref, ulong mfn)
    {
        d.Domain.Memory.TryWrite(d.Buffer2, new gnttab_setup_table { dom = Xen.DOMID_SELF, nr_frames = 1, frame_list = d.Buffer2 + 0x100 }).Should().BeTrue();
        d.Call(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_setup_table, d.Buffer2, 1).Should().Be(0);
        d.Domain.Memory.TryRead(d.Buffer2 + 0x100, out ulong grantFrame).Should().BeTrue();
        _hv.Frames.OwnerOf(grantFrame).Should().Be(d.Domain.Id, "setup_table names the frame by MFN for a classic PV domain");
        var entry = _hv.Machine.Frame(grantFrame).Slice((int)gref * 8, 8);
        BitConverter.TryWriteBytes(entry[2..], (ushort)0).Should().BeTrue();
        BitConverter.TryWriteBytes(entry[4..], (uint)mfn).Should().BeTrue();
        BitConverter.TryWriteBytes(entry, (ushort)GrantTable.GTF_permit_access).Should().BeTrue();
    }

    [Fact]
    public void A_Granted_Page_Table_Cannot_Be_Written_By_Copy_Or_Mapped_Writable()
    {
        var d = new PvTestDomain(_hv);
        var l1 = d.NewUnmappedPage();
        d.Write(l1, 0, d.Entry(d.NewUnmappedPage(), P));
        PvMemory.PinTable(d.Domain, d.Mfn(l1), 1).Should().Be(0);
        var before = d.Read(l1, 0);
        Grant(d, 5, d.Mfn(l1));

        _hv.HostGrants.CopyTo(d.Domain, 5, 0, new byte[8]).Should().Be(GrantStatus.GeneralError);
        var map = () => _hv.HostGrants.Map(d.Domain, 5, readOnly: false);
        map.Should().Throw<GrantException>();
        using (var ro = _hv.HostGrants.Map(d.Domain, 5, readOnly: true))
        {
            BitConverter.ToUInt64(ro.Bytes[..8]).Should().Be(before, "reading a granted page table is fine");
        }

        d.Read(l1, 0).Should().Be(before);
        _hv.Frames.Types.CountOf(d.Mfn(l1)).Should().Be(1, "only the pin");
    }

    [Fact]
    public void A_Page_A_Backend_Maps_Writable_Cannot_Become_A_Page_Table_Until_Unmapped()
    {
        var d = new PvTestDomain(_hv);
        var page = d.NewUnmappedPage();
        Grant(d, 6, d.Mfn(page));
        _hv.HostGrants.CopyTo(d.Domain, 6, 0, new byte[8]).Should().Be(GrantStatus.Okay);
        _hv.Frames.Types.CountOf(d.Mfn(page)).Should().Be(0, "the copy's writable type went with the copy");

        var mapping = _hv.HostGrants.Map(d.Domain, 6, readOnly: false);
        PvMemory.PinTable(d.Domain, d.Mfn(page), 1).Should().Be(-(long)Errno.EINVAL);
        mapping.Dispose();
        PvMemory.PinTable(d.Domain, d.Mfn(page), 1).Should().Be(0);
    }
}
