using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Core.Grants;
using Paravirt.Tests.Grants;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Security;

/// <summary>
/// Grant revoke races: the guest keeps granting a page and ending access as Linux's
/// gnttab_end_foreign_access_ref does (compare-exchange the flags to 0 only while GTF_reading and
/// GTF_writing are clear) while two host threads map, write and unmap it and grant-copy into it.
/// Outcomes only, never timings: once a revoke succeeded no host write lands in the page, and a
/// read-only grant next to it is never written nor write-pinned.
/// </summary>
public sealed class GrantRaceTests : IDisposable
{
    private const int HostOpsPerThread = 25_000;
    private const uint Writable = 20;
    private const uint ReadOnly = 21;
    private const byte Marker = 0xEE;

    private readonly Hypervisor _hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => _hv.Dispose();

    private static byte Pattern(int i) => (byte)((i * 7) + 3);

    [Fact]
    public async Task After_A_Successful_Revoke_No_Host_Write_Lands_And_A_Read_Only_Grant_Is_Never_Written()
    {
        var ct = TestContext.Current.CancellationToken;
        using var ready = new SemaphoreSlim(0);
        var hostDone = 0;
        long rounds = 0, endAttempts = 0, lateWrites = 0, roWritePins = 0, roChanged = 0;
        var before = _hv.FreeFrames;
        var d = _hv.CreateDomain(new DomainConfig { Name = "revoker", MemoryMiB = 4 });
        d.Start(new DelegateKernel((cpu, si) =>
        {
            var g = new GuestContext(cpu, si);
            var table = GuestGrants.MapFrame(g);
            var w = GuestGrants.DataPage(g, 0, 0) << 12;
            var r = GuestGrants.DataPage(g, 1, 0) << 12;
            var expected = new byte[4096];
            for (var i = 0; i < expected.Length; i++)
            {
                expected[i] = Pattern(i);
            }

            g.Cpu.Memory.Write(r, (ReadOnlySpan<byte>)expected);
            GuestGrants.GrantV1(g, table, ReadOnly, 0, r >> 12, readOnly: true);
            var zero = new byte[4096];
            var seen = new byte[4096];
            ready.Release();
            var deadline = Environment.TickCount64 + (long)GuestRunner.Timeout.TotalMilliseconds;
            while (Volatile.Read(ref hostDone) == 0 && Environment.TickCount64 < deadline)
            {
                GuestGrants.GrantV1(g, table, Writable, 0, w >> 12);
                Thread.SpinWait(200); // let the host use the grant
                while (true)
                {
                    endAttempts++;
                    if (GuestGrants.EndForeignAccessV1(g, table, Writable))
                    {
                        break;
                    }

                    if ((GuestGrants.FlagsV1(g, table, ReadOnly) & GrantTable.GTF_writing) != 0)
                    {
                        roWritePins++;
                    }

                    Thread.SpinWait(20);
                }

                // Revoked: the page is ours again. Clear it, give the host time to misbehave, then look.
                g.Cpu.Memory.Write(w, (ReadOnlySpan<byte>)zero);
                Thread.SpinWait(200);
                g.Cpu.Memory.Read(w, seen);
                if (!seen.AsSpan().SequenceEqual(zero))
                {
                    lateWrites++;
                }

                g.Cpu.Memory.Read(r, seen);
                if (!seen.AsSpan().SequenceEqual(expected))
                {
                    roChanged++;
                }

                rounds++;
            }

            Domains.DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        (await ready.WaitAsync(GuestRunner.Timeout, ct)).Should().BeTrue();

        long mappedWrites = 0, copiesIn = 0, roReads = 0;
        var refusals = new long[2];
        var unexpected = new List<string>();
        void Unexpected(string what)
        {
            lock (unexpected)
            {
                unexpected.Add(what);
            }
        }

        // Thread 0 maps, writes the marker through the mapping, and unmaps; it also tries to write-map the read-only grant.
        var mapper = Task.Run(() =>
        {
            var marker = new byte[256];
            Array.Fill(marker, Marker);
            for (var i = 0; i < HostOpsPerThread; i++)
            {
                try
                {
                    if ((i & 3) == 3)
                    {
                        using var ro = _hv.HostGrants.Map(d, ReadOnly, readOnly: true);
                        if (ro.Bytes[i % 4096] != Pattern(i % 4096))
                        {
                            Unexpected($"read-only page changed at {i % 4096}");
                        }

                        roReads++;
                        continue;
                    }

                    using var m = _hv.HostGrants.Map(d, Writable, readOnly: false);
                    marker.CopyTo(m.WritableBytes[(i % 15 * 256)..]);
                    mappedWrites++;
                }
                catch (GrantException e) when (e.Status == GrantStatus.GeneralError)
                {
                    refusals[0]++; // revoked (or not yet re-granted): Xen's _set_status refusal
                }

                if ((i & 7) == 0)
                {
                    try
                    {
                        _hv.HostGrants.Map(d, ReadOnly, readOnly: false).Dispose();
                        Unexpected("a read-only grant was mapped writable");
                    }
                    catch (GrantException e) when (e.Status == GrantStatus.GeneralError)
                    {
                    }
                }
            }
        }, ct);

        // Thread 1 grant-copies the marker into the page, and the read-only page's bytes over it; copies into the read-only grant must fail.
        var copier = Task.Run(() =>
        {
            var marker = new byte[64];
            Array.Fill(marker, Marker);
            for (var i = 0; i < HostOpsPerThread; i++)
            {
                var rc = (i % 4) switch
                {
                    0 or 1 => _hv.HostGrants.CopyTo(d, Writable, i % 63 * 64, marker),
                    2 => _hv.HostGrants.Copy(new GrantReference(d, ReadOnly, 128), new GrantReference(d, Writable, 1024), 512),
                    _ => _hv.HostGrants.CopyTo(d, ReadOnly, i % 4000, marker[..8]),
                };
                if (i % 4 == 3)
                {
                    if (rc != GrantStatus.GeneralError)
                    {
                        Unexpected($"copy into the read-only grant gave {rc}");
                    }
                }
                else if (rc == GrantStatus.Okay)
                {
                    copiesIn++;
                }
                else if (rc == GrantStatus.GeneralError)
                {
                    refusals[1]++;
                }
                else
                {
                    Unexpected($"copy into the writable grant gave {rc}");
                }
            }
        }, ct);

        try
        {
            await Task.WhenAll(mapper, copier).WaitAsync(GuestRunner.Timeout, ct);
        }
        finally
        {
            Volatile.Write(ref hostDone, 1);
        }

        (await d.ExitWithinAsync()).State.Should().Be(DomainState.Shutdown);
        _hv.HostGrants.MappingCount.Should().Be(0);
        d.Destroy();
        _hv.FreeFrames.Should().Be(before, "no pin or frame reference leaked");

        unexpected.Should().BeEmpty();
        lateWrites.Should().Be(0, "no host write lands in a page whose grant the guest has ended");
        roChanged.Should().Be(0, "the read-only page's contents never change");
        roWritePins.Should().Be(0, "a read-only grant never shows GTF_writing");
        rounds.Should().BeGreaterThan(0);
        (mappedWrites + roReads + refusals[0]).Should().Be(HostOpsPerThread);
        (copiesIn + refusals[1]).Should().Be(HostOpsPerThread * 3 / 4);
        var operations = (2L * HostOpsPerThread) + endAttempts + rounds;
        operations.Should().BeGreaterThanOrEqualTo(50_000);
        TestContext.Current.SendDiagnosticMessage($"grant race: {operations} operations; {rounds} revokes after {endAttempts} attempts; {mappedWrites} mapped writes, {copiesIn} copies in, {refusals[0] + refusals[1]} refusals");
    }
}
