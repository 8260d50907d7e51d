using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Backends.XenBus;
using Paravirt.Core.Domains;
using Paravirt.Core.XenStore;
using Paravirt.Tests.Domains;
using Paravirt.Tests.Support;

namespace Paravirt.Tests.Backends;

/// <summary>
/// The backend end of a XenBus device against a frontend played by a managed guest through its own
/// xenstore ring (so the store's permissions apply to it as to a real PV kernel).
/// </summary>
public sealed class XenBusBackendTests : IDisposable
{
    private readonly Hypervisor hv = new(new HypervisorOptions { MemoryMiB = 64 });

    public void Dispose() => hv.Dispose();

    private static string S(XenbusState s) => ((int)s).ToString(CultureInfo.InvariantCulture);

    /// <summary>A frontend driver as Linux's xenbus_probe_frontend has it, on the guest's store ring.</summary>
    private sealed class Frontend(GuestXenStore xs, string frontendPath, string backendPath)
    {
        private bool watching;

        public string FrontendPath { get; } = frontendPath;

        public string BackendPath { get; } = backendPath;

        public XsMessage Call(xsd_sockmsg_type type, params string[] args) => xs.Call(type, args);

        public static string Text(XsMessage m) => Encoding.Latin1.GetString(m.Payload).TrimEnd('\0');

        public string? Read(string path) => xs.ReadString(path);

        public void Write(string key, string value) => xs.WriteString($"{FrontendPath}/{key}", value);

        public void SwitchState(XenbusState s) => Write("state", S(s));

        /// <summary>Blocks (SCHEDOP_poll) until <paramref name="path"/> reads <paramref name="value"/>.</summary>
        public void WaitFor(string path, string value) => WaitUntil(path, v => v == value);

        /// <summary>Waits (on watch events) until <paramref name="done"/> holds for the node's value.</summary>
        public void WaitUntil(string path, Func<string?, bool> done)
        {
            if (xs.Call(xsd_sockmsg_type.XS_WATCH, path, path).Kind == xsd_sockmsg_type.XS_ERROR)
            {
                throw new InvalidOperationException($"watch of {path} refused");
            }

            while (!done(Read(path)))
            {
                xs.NextEvent();
            }

            xs.Call(xsd_sockmsg_type.XS_UNWATCH, path, path);
        }

        public void WaitBackend(XenbusState s)
        {
            if (!watching)
            {
                xs.Call(xsd_sockmsg_type.XS_WATCH, BackendPath + "/state", "be");
                watching = true;
            }

            while (Read(BackendPath + "/state") != S(s))
            {
                xs.NextEvent();
            }
        }

        /// <summary>Publishes ring-ref and event-channel, then Initialised, as netfront/blkfront do.</summary>
        public void Connect(string ringRef, string port)
        {
            WaitBackend(XenbusState.InitWait);
            Write("ring-ref", ringRef);
            Write("event-channel", port);
            SwitchState(XenbusState.Initialised);
            WaitBackend(XenbusState.Connected);
        }
    }

    private sealed class Recorder
    {
        public ConcurrentQueue<IReadOnlyDictionary<string, string>> Connects { get; } = new();

        public int Disconnects;

        public TaskCompletionSource Disconnected { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ConcurrentQueue<string> Log { get; } = new();

        public XenBusBackendOptions Options(Action<string>? onLog = null) => new()
        {
            Features = new Dictionary<string, string> { ["feature-rx-copy"] = "1", ["feature-sg"] = "1" },
            FrontendKeys = ["ring-ref", "event-channel"],
            Connect = (req, _) =>
            {
                Connects.Enqueue(req.FrontendKeys);
                return Task.CompletedTask;
            },
            Disconnect = (_, _) =>
            {
                Interlocked.Increment(ref Disconnects);
                Disconnected.TrySetResult();
                return Task.CompletedTask;
            },
            Log = m =>
            {
                Log.Enqueue(m);
                onLog?.Invoke(m);
            },
        };
    }

    private async Task<(Domain Domain, XenBusBackendDevice Device)> RunFrontendAsync(XenBusBackendOptions options, Action<Frontend> body, Domain? domain = null)
    {
        var d = domain ?? hv.CreateDomain(new DomainConfig { Name = $"fe-{Guid.NewGuid():N}", MemoryMiB = 4 });
        var dev = XenBusBackendDevice.Create(hv, d.Id, "vif", 0, options);
        Exception? failure = null;
        d.Start(new DelegateKernel((cpu, si) =>
        {
            try
            {
                body(new Frontend(new GuestXenStore(new GuestContext(cpu, si)), dev.FrontendPath, dev.BackendPath));
            }
            catch (Exception e) when (e.GetType().Name != "VcpuExitException")
            {
                failure = e;
            }

            DomainLifecycleTests.ShutdownFrom(cpu, si, Sched.SHUTDOWN_poweroff);
        }));
        await d.ExitWithinAsync();
        if (failure is not null)
        {
            ExceptionDispatchInfo.Throw(failure);
        }

        return (d, dev);
    }

    [Fact]
    public async Task Create_Lays_Out_Both_Directories_As_Libxl_Does()
    {
        var d = hv.CreateDomain(new DomainConfig { Name = "layout", MemoryMiB = 4 });
        await using var dev = XenBusBackendDevice.Create(hv, d.Id, "vbd", 51712, new Recorder().Options());
        var fe = d.Id.ToString(CultureInfo.InvariantCulture);
        var xs = hv.XenStore;

        dev.FrontendPath.Should().Be($"/local/domain/{fe}/device/vbd/51712");
        dev.BackendPath.Should().Be($"/local/domain/0/backend/vbd/{fe}/51712");
        xs.Read(dev.FrontendPath + "/backend").Should().Be(dev.BackendPath);
        xs.Read(dev.FrontendPath + "/backend-id").Should().Be("0");
        xs.Read(dev.FrontendPath + "/state").Should().Be(S(XenbusState.Initialising));
        xs.Read(dev.BackendPath + "/frontend").Should().Be(dev.FrontendPath);
        xs.Read(dev.BackendPath + "/frontend-id").Should().Be(fe);
        xs.Read(dev.BackendPath + "/online").Should().Be("1");
        xs.Read(dev.BackendPath + "/feature-rx-copy").Should().Be("1");
        xs.Read(dev.BackendPath + "/state").Should().Be(S(XenbusState.InitWait), "the backend wrote its features and waits for the frontend");
        dev.State.Should().Be(XenbusState.InitWait);
        xs.GetPerms(dev.FrontendPath).Should().Equal("n" + fe, "r0");
        xs.GetPerms(dev.FrontendPath + "/state").Should().Equal("n" + fe, "r0");
        xs.GetPerms(dev.BackendPath).Should().Equal("n0", "r" + fe);
        xs.GetPerms(dev.BackendPath + "/state").Should().Equal("n0", "r" + fe);
    }

    [Fact]
    public async Task The_Handshake_Reaches_Connected_With_The_Frontends_Keys()
    {
        var rec = new Recorder();
        string? feature = null;
        var (d, dev) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.WaitBackend(XenbusState.InitWait);
            feature = f.Read(f.BackendPath + "/feature-sg");
            f.Connect("8", "5");
            f.SwitchState(XenbusState.Connected);
        });

        feature.Should().Be("1", "the frontend reads the backend's features");
        rec.Connects.Should().ContainSingle().Which.Should().BeEquivalentTo(new Dictionary<string, string> { ["ring-ref"] = "8", ["event-channel"] = "5" });
        dev.State.Should().Be(XenbusState.Connected);
        hv.XenStore.Read(dev.BackendPath + "/state").Should().Be(S(XenbusState.Connected));
        await dev.DestroyAsync();
        d.Destroy();
    }

    [Fact]
    public async Task Frontend_Closing_Alone_Disconnects_And_Leaves_The_Backend_Closing_Until_The_Frontend_Is_Closed()
    {
        // Linux's xenbus_dev_shutdown: the frontend goes Closing and waits for the backend's
        // Closing (5 s, then "timeout closing device"); it never goes Closed.
        var rec = new Recorder();
        string? afterClosing = null;
        var (d, dev) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.Connect("8", "5");
            f.SwitchState(XenbusState.Closing);
            var state = f.BackendPath + "/state";
            f.WaitUntil(state, v => v == S(XenbusState.Closing) || v == S(XenbusState.Closed));
            afterClosing = f.Read(state);
        });

        afterClosing.Should().Be(S(XenbusState.Closing), "the backend answers Closing with Closing, as blkback and netback do");
        rec.Disconnects.Should().Be(1, "the device is disconnected before the backend says Closing");
        dev.State.Should().Be(XenbusState.Closing, "Closed waits for the frontend's Closed");
        await dev.DestroyAsync();
        rec.Disconnects.Should().Be(1, "a disconnected device is not disconnected twice");
        d.Destroy();
    }

    [Fact]
    public async Task Frontend_Closing_Disconnects_And_The_Backend_Goes_Closed()
    {
        var rec = new Recorder();
        var (d, dev) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.Connect("8", "5");
            f.SwitchState(XenbusState.Closing);
            f.WaitBackend(XenbusState.Closing);
            f.SwitchState(XenbusState.Closed);
            f.WaitBackend(XenbusState.Closed);
        });

        rec.Disconnects.Should().Be(1);
        dev.State.Should().Be(XenbusState.Closed);
        await dev.DestroyAsync();
        rec.Disconnects.Should().Be(1, "a closed device is not disconnected twice");
        d.Destroy();
    }

    [Fact]
    public async Task After_Closed_The_Frontend_Can_Reconnect()
    {
        var rec = new Recorder();
        var (d, dev) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.Connect("8", "5");
            f.SwitchState(XenbusState.Closing);
            f.WaitBackend(XenbusState.Closing);
            f.SwitchState(XenbusState.Closed);
            f.WaitBackend(XenbusState.Closed);
            f.SwitchState(XenbusState.Initialising); // e.g. the driver reloaded, or resume
            f.Connect("9", "6");
        });

        rec.Connects.Select(k => k["ring-ref"]).Should().Equal("8", "9");
        rec.Connects.Select(k => k["event-channel"]).Should().Equal("5", "6");
        rec.Disconnects.Should().Be(1);
        dev.State.Should().Be(XenbusState.Connected);
        await dev.DestroyAsync();
        rec.Disconnects.Should().Be(2, "destroying a connected device disconnects it");
        d.Destroy();
    }

    [Fact]
    public async Task Garbage_Frontend_States_Are_Ignored()
    {
        var rec = new Recorder();
        var d = hv.CreateDomain(new DomainConfig { Name = "garbage", MemoryMiB = 4 });
        var ack = HostXenStore.DomainPath(d.Id) + "/data/ignored";
        var ignored = 0;
        string[] garbage = ["banana", "99", "-1", "", "4x", " 4", "0x4"];

        // Each ignored value is acknowledged to the guest so it writes the next only after the backend looked.
        var options = rec.Options(m =>
        {
            if (m.Contains("ignoring", StringComparison.Ordinal))
            {
                hv.XenStore.Write(ack, Interlocked.Increment(ref ignored).ToString(CultureInfo.InvariantCulture));
            }
        });
        var (_, dev) = await RunFrontendAsync(options, f =>
        {
            f.WaitBackend(XenbusState.InitWait);
            for (var i = 0; i < garbage.Length; i++)
            {
                f.Write("state", garbage[i]);
                // At least one more "ignoring": the backend may look at a value twice (its watch's
                // initial event can arrive after the first write), which is fine.
                var atLeast = i + 1;
                f.WaitUntil(ack, v => int.TryParse(v, CultureInfo.InvariantCulture, out var n) && n >= atLeast);
            }

            f.Connect("8", "5");
        }, d);

        dev.IgnoredStates.Should().BeGreaterThanOrEqualTo(garbage.Length);
        rec.Log.Should().HaveCountGreaterThanOrEqualTo(garbage.Length);
        rec.Connects.Should().ContainSingle("the host went on after the garbage");
        dev.State.Should().Be(XenbusState.Connected);
        await dev.DestroyAsync();
        d.Destroy();
    }

    [Fact]
    public async Task Destroy_Removes_Both_Directories()
    {
        var rec = new Recorder();
        var (d, dev) = await RunFrontendAsync(rec.Options(), f => f.Connect("8", "5"));

        await dev.DestroyAsync();

        hv.XenStore.Read(dev.FrontendPath).Should().BeNull();
        hv.XenStore.Read(dev.BackendPath).Should().BeNull();
        rec.Disconnects.Should().Be(1);
        d.Destroy();
    }

    [Fact]
    public async Task A_Frontend_Cannot_Write_The_Backends_Directory()
    {
        var rec = new Recorder();
        XsMessage state = default, newKey = default, rm = default, perms = default;
        string? readable = null;
        var (d, dev) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.WaitBackend(XenbusState.InitWait);
            readable = f.Read(f.BackendPath + "/frontend-id");
            state = f.Call(xsd_sockmsg_type.XS_WRITE, f.BackendPath + "/state", S(XenbusState.Connected));
            newKey = f.Call(xsd_sockmsg_type.XS_WRITE, f.BackendPath + "/evil", "1");
            rm = f.Call(xsd_sockmsg_type.XS_RM, f.BackendPath);
            perms = f.Call(xsd_sockmsg_type.XS_SET_PERMS, f.BackendPath, "n" + f.FrontendPath.Split('/')[3]);
        });

        readable.Should().NotBeNull("the backend directory is readable by the frontend");
        foreach (var m in new[] { state, newKey, rm, perms })
        {
            m.Kind.Should().Be(xsd_sockmsg_type.XS_ERROR);
            Frontend.Text(m).Should().Be("EACCES");
        }

        hv.XenStore.Read(dev.BackendPath + "/state").Should().Be(S(XenbusState.InitWait));
        hv.XenStore.Read(dev.BackendPath + "/evil").Should().BeNull();
        rec.Connects.Should().BeEmpty();
        await dev.DestroyAsync();
        d.Destroy();
    }

    [Fact]
    public async Task Destroying_The_Frontends_Domain_Disconnects_The_Backend()
    {
        var rec = new Recorder();
        var (d, dev) = await RunFrontendAsync(rec.Options(), f => f.Connect("8", "5"));

        d.Destroy(); // the frontend directory goes with the domain's home

        await rec.Disconnected.Task.WaitAsync(GuestRunner.Timeout, TestContext.Current.CancellationToken);
        rec.Disconnects.Should().Be(1);
        await dev.DestroyAsync();
        hv.XenStore.Read(dev.BackendPath).Should().BeNull();
        rec.Disconnects.Should().Be(1);
        rec.Connects.Should().ContainSingle("a vanished frontend is not offered a new connection");
    }

    [Fact]
    public async Task A_Failing_Connect_Or_A_Missing_Key_Is_Reported_And_The_Backend_Closes()
    {
        var rec = new Recorder();
        var failing = new XenBusBackendOptions
        {
            FrontendKeys = ["ring-ref"],
            Connect = (_, _) => throw new InvalidOperationException("no ring"),
            Log = rec.Log.Enqueue,
        };
        var (d, dev) = await RunFrontendAsync(failing, f =>
        {
            f.WaitBackend(XenbusState.InitWait);
            f.Write("ring-ref", "8");
            f.SwitchState(XenbusState.Initialised);
            f.WaitBackend(XenbusState.Closing);
        });

        dev.State.Should().Be(XenbusState.Closing);
        hv.XenStore.Read(dev.BackendPath + "/error").Should().Contain("no ring");
        await dev.DestroyAsync();
        d.Destroy();

        var (d2, dev2) = await RunFrontendAsync(rec.Options(), f =>
        {
            f.WaitBackend(XenbusState.InitWait);
            f.Write("ring-ref", "8"); // no event-channel
            f.SwitchState(XenbusState.Initialised);
            f.WaitBackend(XenbusState.Closing);
        });

        hv.XenStore.Read(dev2.BackendPath + "/error").Should().Contain("event-channel");
        rec.Connects.Should().BeEmpty();
        await dev2.DestroyAsync();
        d2.Destroy();
    }
}
