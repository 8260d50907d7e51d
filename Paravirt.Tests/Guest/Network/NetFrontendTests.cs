using System.Buffers.Binary;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.Network;
using Paravirt.Core.Domains;
using Paravirt.Guest;

namespace Paravirt.Tests.Guest.Network;

/// <summary>netfront on the guest stub against the host's netback and switch.</summary>
public sealed class NetFrontendTests : IDisposable
{
    private static readonly MacAddress HostMac = MacAddress.Parse("02:00:00:00:00:01");
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 96 });

    public void Dispose() => hv.Dispose();

    [Fact]
    public async Task Connect_Runs_The_Handshake_And_The_Vif_Has_Libxls_Nodes()
    {
        var sw = hv.Switch("br0");
        var mac = MacAddress.Parse("00:16:3e:12:34:56");
        var d = hv.CreateDomain(NetKernel.Config("hs"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = mac, RateBytesPerSecond = 1_000_000 });
        string? feMac = null;
        bool connected = false;
        XenbusState own = default, back = default;
        await NetKernel.RunAsync(d, rt =>
        {
            var fe = NetFrontend.Connect(rt);
            (feMac, connected, own, back) = (fe.MacText, fe.IsConnected, fe.Device.OwnState, fe.Device.BackendState);
            fe.Mac.ToArray().Should().Equal(0x00, 0x16, 0x3e, 0x12, 0x34, 0x56);
            fe.Close();
        });

        feMac.Should().Be("00:16:3e:12:34:56");
        connected.Should().BeTrue();
        own.Should().Be(XenbusState.Connected);
        back.Should().Be(XenbusState.Connected);
        vif.DevId.Should().Be(0);
        vif.FrontendPath.Should().Be($"/local/domain/{d.Id}/device/vif/0");
        vif.BackendPath.Should().Be($"/local/domain/0/backend/vif/{d.Id}/0");
        var xs = hv.XenStore;
        xs.Read(vif.BackendPath + "/mac").Should().Be("00:16:3e:12:34:56");
        xs.Read(vif.BackendPath + "/bridge").Should().Be("br0");
        xs.Read(vif.BackendPath + "/handle").Should().Be("0");
        xs.Read(vif.BackendPath + "/type").Should().Be("vif");
        xs.Read(vif.BackendPath + "/rate").Should().Be("50000,50000", "1 MB/s over libxl's default 50 ms window");
        xs.Read(vif.BackendPath + "/feature-rx-copy").Should().Be("1");
        xs.Read(vif.BackendPath + "/feature-sg").Should().Be("1");
        xs.Read(vif.BackendPath + "/frontend-id").Should().Be(d.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        xs.Read(vif.FrontendPath + "/mac").Should().Be("00:16:3e:12:34:56");
        xs.Read(vif.FrontendPath + "/handle").Should().Be("0");
        xs.Read(vif.FrontendPath + "/backend").Should().Be(vif.BackendPath);
        xs.Read(vif.FrontendPath + "/request-rx-copy").Should().Be("1");
        xs.Read(vif.FrontendPath + "/tx-ring-ref").Should().NotBeNull();
        xs.Read(vif.FrontendPath + "/rx-ring-ref").Should().NotBeNull();
        xs.Read(vif.FrontendPath + "/event-channel").Should().NotBeNull();
        xs.Read(vif.FrontendPath + "/feature-no-csum-offload").Should().Be("1", "the stub hands frames to its program as they are: checksums must come finished");
        xs.Read(vif.FrontendPath + "/feature-sg").Should().BeNull("one buffer per frame");
        xs.Read(vif.FrontendPath + "/feature-gso-tcpv4").Should().BeNull("GSO frames come as segments");
        xs.Read(vif.BackendPath + "/feature-gso-tcpv4").Should().Be("1");
        xs.Read(vif.BackendPath + "/feature-ctrl-ring").Should().Be("1");
        vif.Stats.Connects.Should().Be(1);
        vif.CreditBytes.Should().Be(50_000);
        await vif.WaitForDisconnectAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        vif.Stats.Disconnects.Should().Be(1);
        sw.Ports.Should().BeEmpty("a closed vif leaves the switch");
        d.Destroy();
        await vif.Detached.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        xs.Read(vif.BackendPath + "/state").Should().BeNull();
        hv.HostGrants.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task The_Host_Endpoint_Talks_To_A_Guest_Both_Ways()
    {
        var sw = hv.Switch("br0");
        using var host = sw.ConnectHost(HostMac);
        var guestMac = MacAddress.Parse("00:16:3e:00:00:07");
        var d = hv.CreateDomain(NetKernel.Config("echo"));
        await using var vif = d.AttachNic(sw, new NicOptions { Mac = guestMac });
        var kernel = NetKernel.Start(d, rt =>
        {
            // An echo server: answer each frame to its sender with the payload reversed, until "bye".
            using var fe = NetFrontend.Connect(rt);
            var frame = new byte[NetFrontend.MaxFrameBytes];
            while (true)
            {
                var n = fe.Receive(frame);
                var payload = frame.AsSpan(14, n - 14);
                var bye = payload.SequenceEqual("bye"u8);
                payload.Reverse();
                frame.AsSpan(6, 6).CopyTo(frame); // to whoever sent it
                fe.Mac.CopyTo(frame.AsSpan(6));
                fe.Send(frame.AsSpan(0, n));
                if (bye)
                {
                    fe.Flush();
                    return;
                }
            }
        });

        await vif.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        var buffer = new byte[VirtualSwitch.MaxFrameBytes];
        var rng = new Random(5);
        for (var i = 0; i < 50; i++)
        {
            var payload = new byte[rng.Next(1, 1501)];
            rng.NextBytes(payload);
            host.Send(guestMac, NetKernel.EtherType, payload);
            var n = await host.ReceiveAsync(buffer, TestContext.Current.CancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
            n.Should().Be(14 + payload.Length);
            MacAddress.Read(buffer).Should().Be(HostMac);
            MacAddress.Read(buffer.AsSpan(6)).Should().Be(guestMac);
            BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(12)).Should().Be(NetKernel.EtherType);
            Array.Reverse(payload);
            buffer.AsSpan(14, payload.Length).ToArray().Should().Equal(payload);
        }

        host.Send(guestMac, NetKernel.EtherType, "bye"u8);
        await kernel.WaitAsync(d);
        (await host.ReceiveAsync(buffer, TestContext.Current.CancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken)).Should().Be(17);
        vif.Stats.RxPackets.Should().Be(51);
        vif.Stats.TxPackets.Should().Be(51);
        vif.Stats.TxErrors.Should().Be(0);
        d.Meter.NetPacketsReceived.Should().Be(51);
        d.Meter.NetPacketsSent.Should().Be(51);
        d.Meter.NetBytesSent.Should().Be(d.Meter.NetBytesReceived, "every frame came back the same length");
        host.Stats.FramesIn.Should().Be(51);
        host.Stats.Dropped.Should().Be(0);
    }

    [Fact]
    public async Task A_Gso_Frame_From_Another_Guest_Reaches_The_Stub_As_Checksummed_Segments()
    {
        var sw = hv.Switch("br-gso");
        var stubMac = MacAddress.Parse("00:16:3e:00:00:08");
        var stub = hv.CreateDomain(NetKernel.Config("stub"));
        await using var stubVif = stub.AttachNic(sw, new NicOptions { Mac = stubMac });
        var segments = new List<byte[]>();
        var kernel = NetKernel.Start(stub, rt =>
        {
            using var fe = NetFrontend.Connect(rt);
            var frame = new byte[NetFrontend.MaxFrameBytes];
            var payload = 0;
            while (payload < 20000)
            {
                var n = fe.Receive(frame);
                segments.Add(frame[..n]);
                payload += n - 66;
            }
        });
        await stubVif.WaitForConnectAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);

        var senderMac = MacAddress.Parse("00:16:3e:00:00:09");
        var gso = Backends.Network.TestPackets.Tcp(stubMac, senderMac, false, 1, 2, 3, Backends.Network.TestPackets.Ack, 20000);
        var sender = hv.CreateDomain(NetKernel.Config("sender", 16));
        await using var senderVif = sender.AttachNic(sw, new NicOptions { Mac = senderMac }); // the switch takes frames from the vif's own MAC only
        await Backends.Network.TestNetFront.RunAsync(sender, f =>
        {
            f.Connect().Should().BeTrue();
            f.SendFrame(gso, 0, Netif.NETTXF_csum_blank, Backends.Network.TestNetFront.Gso(1448, Netif.XEN_NETIF_GSO_TYPE_TCPV4))
                .Should().OnlyContain(r => r.status == Netif.NETIF_RSP_OKAY || r.status == Netif.NETIF_RSP_NULL);
        });
        await kernel.WaitAsync(stub);

        Backends.Network.TcpSegmenterTests.ShouldBeSegmentsOf(segments, gso, 1448, fullChecksums: true);
        stubVif.Stats.RxSegmented.Should().Be(1);
        stubVif.Stats.RxChecksumsCompleted.Should().Be(segments.Count);
    }
}
