using Paravirt.Cli.Config;

namespace Paravirt.Tests.Cli;

/// <summary>The xl.cfg-style parser of <c>paravirt run</c>: syntax, every key it uses, disk and vif specs, and its FILE:LINE errors.</summary>
public sealed class XlConfigTests
{
    private const string File = "dom.cfg";

    private static DomainSpec Parse(string text) => DomainSpec.Parse(text, File, "/base");

    private static ConfigException Fails(string text)
    {
        var act = () => Parse(text);
        return act.Should().Throw<ConfigException>().Which;
    }

    [Fact]
    public void A_Full_File_With_Comments_Quotes_Numbers_Lists_And_Semicolons_Parses()
    {
        var spec = Parse("""
            # a domain
            name = "web1"   # trailing comment
            memory = 0x20; maxmem = 0100
            vcpus = 2
            kernel = 'managed:hello'
            disk = [ 'file:/img/a.img,xvda,w',
                     "format=raw, vdev=xvdb, access=ro, target=/img/b.img",   # a second disk
                   ]
            on_poweroff = "destroy"
            on_reboot = "preserve"
            on_crash = "restart"
            extra = "shutdown=reboot"
            """);

        spec.Name.Should().Be("web1");
        spec.MemoryMiB.Should().Be(32, "0x20 is hexadecimal");
        spec.MaxMemoryMiB.Should().Be(64, "0100 is octal");
        spec.Vcpus.Should().Be(2);
        spec.Kernel.Should().BeOfType<BuiltinKernel>().Which.Guest.Name.Should().Be("hello");
        spec.KernelLine.Should().Be(5);
        spec.Disks.Select(d => (d.Spec.Target, d.Spec.Vdev, d.Spec.ReadOnly, d.Line)).Should().Equal(
            ("/img/a.img", "xvda", false, 6),
            ("/img/b.img", "xvdb", true, 7));
        spec.OnPoweroff.Should().Be(LifecycleAction.Destroy);
        spec.OnReboot.Should().Be(LifecycleAction.Preserve);
        spec.OnCrash.Should().Be(LifecycleAction.Restart);
        spec.CommandLine.Should().Be("shutdown=reboot");
        spec.Ignored.Should().BeEmpty();
        var config = spec.ToDomainConfig();
        (config.Name, config.MemoryMiB, config.MaxMemoryMiB, config.Vcpus, config.CommandLine).Should().Be(("web1", 32, 64, 2, "shutdown=reboot"));
    }

    [Fact]
    public void Defaults_Follow_Xl_And_Unknown_Keys_Are_Kept_For_A_Warning()
    {
        var spec = Parse("name='a'\nkernel='managed:echo'\nbootloader = \"pygrub\"\n");

        spec.MemoryMiB.Should().Be(128);
        spec.MaxMemoryMiB.Should().BeNull();
        spec.Vcpus.Should().Be(1);
        (spec.OnPoweroff, spec.OnReboot, spec.OnCrash).Should().Be((LifecycleAction.Destroy, LifecycleAction.Restart, LifecycleAction.Destroy));
        spec.Ignored.Should().ContainSingle().Which.Should().Match<XlSetting>(s => s.Key == "bootloader" && s.Line == 3);
    }

    [Fact]
    public void Cmdline_Replaces_Root_And_Extra()
    {
        Parse("name='a'\nkernel='managed:hello'\nroot='/dev/xvda1'\nextra='quiet'\n").CommandLine.Should().Be("root=/dev/xvda1 quiet");
        Parse("name='a'\nkernel='managed:hello'\nroot='/dev/xvda1'\nextra='quiet'\ncmdline='console=hvc0'\n").CommandLine.Should().Be("console=hvc0");
    }

    [Fact]
    public void Strings_Take_Escaped_Quotes_And_Relative_Paths_Are_From_The_Config_Folder()
    {
        var spec = Parse("name = \"say \\\"hi\\\"\"\nkernel = 'managed:hello'\ndisk = [ 'vdev=xvda, target=img/a,b.img' ]\n");
        spec.Name.Should().Be("say \"hi\"");
        spec.Disks[0].Spec.Target.Should().Be("/base/img/a,b.img", "target= takes the rest of the spec, commas included");
    }

    [Theory]
    [InlineData("file:/i.img,xvda,w", "/i.img", "xvda", false, false)]
    [InlineData("phy:/i.img,xvda,r", "/i.img", "xvda", true, false)]
    [InlineData("tap:aio:/i.img,xvdb,w", "/i.img", "xvdb", false, false)]
    [InlineData("raw:/i.img,hdc:cdrom,ro", "/i.img", "hdc", true, true)]
    [InlineData("/i.img,,hda", "/i.img", "hda", false, false)]
    [InlineData("/i.img,raw,hda,rw", "/i.img", "hda", false, false)]
    [InlineData("/i.img,,hdc,cdrom", "/i.img", "hdc", true, true)]
    [InlineData("/i.img,raw,hdc,devtype=cdrom", "/i.img", "hdc", true, true)]
    [InlineData("format=raw, vdev=xvdb, access=ro, target=/i.img", "/i.img", "xvdb", true, false)]
    [InlineData("vdev=xvdc, /i.img", "/i.img", "xvdc", false, false)]
    [InlineData("  /i.img , raw , xvdd , w , discard, trusted", "/i.img", "xvdd", false, false)]
    [InlineData(",,xvde,,target=/i.img", "/i.img", "xvde", false, false)]
    [InlineData(",raw,xvdf,r,target=/i,j.img", "/i,j.img", "xvdf", true, false)]
    public void Every_Disk_Spec_Form_Of_Xl_Disk_Configuration_Parses(string text, string target, string vdev, bool readOnly, bool cdrom)
    {
        var d = DiskSpec.Parse(text);
        (d.Target, d.Vdev, d.ReadOnly, d.IsCdrom, d.Format).Should().Be((target, vdev, readOnly, cdrom, "raw"));
    }

    [Theory]
    [InlineData("vdev=xvda", "the disk has no target")]
    [InlineData("/i.img", "the disk has no vdev")]
    [InlineData("/i.img,raw,xvda,x", "access 'x' is not known; expected ro, r, rw or w")]
    [InlineData("/i.img,raw,xvda,w,extra", "too many positional parameters ('extra' is left over)")]
    [InlineData("vdev=xvda,vdev=xvdb,target=/i.img", "'vdev' is given twice")]
    [InlineData("colour=red,/i.img,,xvda", "'colour' is not a disk parameter")]
    [InlineData("/i.img,raw,floppy", "'floppy' is not a virtual device name")]
    [InlineData("/i.img,,xvda,w,target=/j.img", "'target' is given twice")]
    [InlineData("vdev=floppy,target=/i.img", "'floppy' is not a virtual device name")]
    [InlineData("/i.img,raw,xvda,w,devtype=tape", "devtype 'tape' is not known")]
    [InlineData(",,hdc,cdrom", "an empty cdrom drive is not supported")]
    public void Bad_Disk_Specs_Say_What_Was_Wrong_And_What_Was_Expected(string text, string message)
    {
        var act = () => DiskSpec.Parse(text);
        act.Should().Throw<FormatException>().WithMessage($"*{message}*");
    }

    [Theory]
    [InlineData("/i.img,qcow2,xvda,w", "format 'qcow2' is not supported")]
    [InlineData("nbd:host:1234,xvda,w", "the 'nbd:' block script is not supported")]
    [InlineData("/i.img,raw,xvda,w,backend=driverdom", "driver domains are not supported")]
    [InlineData("/i.img,raw,xvda,w,specification=virtio", "specification 'virtio' is not supported")]
    public void Valid_Disk_Specs_This_Build_Cannot_Serve_Are_Not_Supported(string text, string message)
    {
        var act = () => DiskSpec.Parse(text);
        act.Should().Throw<NotSupportedException>().WithMessage($"*{message}*");
    }

    [Fact]
    public void A_Vif_Spec_Is_Parsed_Into_Bridge_Mac_And_Rate()
    {
        var v = VifSpec.Parse("bridge=br0,mac=00:16:3E:0a:0b:0c,rate=10Mb/s");
        v.Bridge.Should().Be("br0");
        v.Mac.Should().Equal(0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c);
        v.MacText.Should().Be("00:16:3e:0a:0b:0c");
        v.Rate.Should().Be(new VifRate(1_250_000, 50_000), "10 megabits a second is 1.25 MB/s, replenished every 50 ms by default");

        VifSpec.Parse("rate=1MB/s@20ms").Rate!.BytesPerInterval.Should().Be(20_000, "xl-network-configuration(5)'s own example");
        VifSpec.Parse("rate=250KB/s").Rate.Should().Be(new VifRate(250_000, 50_000));
        VifSpec.Parse("rate=8b/s@1s").Rate.Should().Be(new VifRate(1, 1_000_000));
        VifSpec.Parse("rate=1Gb/s@2").Rate.Should().Be(new VifRate(125_000_000, 2_000_000), "xl's code takes a bare interval as seconds");
        VifSpec.Parse("rate=5KB/s@7m").Rate.Should().Be(new VifRate(5_000, 7_000), "xl accepts 'm' for ms");
        VifSpec.Parse("rate=5KB/s@300u").Rate.Should().Be(new VifRate(5_000, 300), "and 'u' for us");
        var plain = VifSpec.Parse("");
        (plain.Bridge, plain.Mac, plain.Rate).Should().Be(("xenbr0", null, null));
        VifSpec.Parse("model=rtl8139, mac=00:16:3e:00:00:01, trusted").Bridge.Should().Be("xenbr0");
        plain.Ips.Should().BeEmpty("no ip= lets the guest send from any IPv4 address");
        VifSpec.Parse("ip=10.0.0.2 10.0.0.3,bridge=br0").Ips.Select(a => a.ToString()).Should().Equal("10.0.0.2", "10.0.0.3");
    }

    [Theory]
    [InlineData("mac=00:16:3e:01:02", "mac '00:16:3e:01:02' is not a MAC address")]
    [InlineData("mac=01:16:3e:01:02:03", "is a multicast address")]
    [InlineData("rate=10Mb", "has no '/s'")]
    [InlineData("rate=10Xb/s", "has unit 'Xb'")]
    [InlineData("rate=0MB/s", "needs a positive number")]
    [InlineData("rate=10/s", "has unit ''")]
    [InlineData("rate=4294967296B/s", "needs a positive number")]
    [InlineData("rate=1MB/s@4295s", "rate interval '4295s' needs a positive number")]
    [InlineData("rate=1MB/s@20h", "rate interval '20h' has unit 'h'")]
    [InlineData("bridge=", "bridge is empty")]
    [InlineData("colour=red", "'colour' is not a vif keyword")]
    [InlineData("br0", "'br0' is not key=value")]
    [InlineData("bridge=a,bridge=b", "'bridge' is given twice")]
    [InlineData("ip=fe80::1", "ip 'fe80::1' is not an IPv4 address")]
    [InlineData("ip=10.1", "ip '10.1' is not an IPv4 address")]
    [InlineData("ip=", "ip is empty")]
    public void Bad_Vif_Specs_Say_What_Was_Wrong(string text, string message)
    {
        var act = () => VifSpec.Parse(text);
        act.Should().Throw<FormatException>().WithMessage($"*{message}*");
    }

    [Fact]
    public void The_Vif_List_Keeps_Each_Spec_And_Its_Line()
    {
        var spec = Parse("name='a'\nkernel='managed:hello'\nvif = [\n 'bridge=br0,mac=00:16:3e:00:00:01',\n 'bridge=br1' ]\n");
        spec.Vifs.Select(v => (v.Spec.Bridge, v.Line)).Should().Equal(("br0", 4), ("br1", 5));
    }

    [Fact]
    public void Kernel_Names_A_Builtin_Guest_A_Users_Assembly_Or_An_Image()
    {
        Parse("name='a'\nkernel='managed:bomb'\n").Kernel.Should().Be(new BuiltinKernel(Paravirt.Cli.Guests.ManagedGuests.Find("bomb")!));
        Parse("name='a'\nkernel='managed:lib/g.dll:My.Guests.Web'\n").Kernel.Should().Be(new AssemblyKernel("/base/lib/g.dll", "My.Guests.Web"));
        Parse("name='a'\nkernel='/boot/vmlinuz'\n").Kernel.Should().Be(new ImageKernel("/boot/vmlinuz"));
    }

    [Theory]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory\n", 3, "'memory' is not followed by '='", "KEY = VALUE")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory =\n", 3, "'memory =' has no value", "a \"string\", a number or a [ list ]")]
    [InlineData("name='a'\nkernel='managed:hello'\nextra = \"open\n", 3, "the string starting with \" is not closed on its line", "a closing \"")]
    [InlineData("name='a'\nkernel='managed:hello'\non_crash = restart\n", 3, "'restart' is not a value (strings need quotes)", "on_crash = \"restart\"")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = 12x\n", 3, "'12x' is not a number", "decimal digits")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = 09\n", 3, "'09' is not a number", "0-prefixed octal")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [ 'x',\n", 3, "the list of 'disk' is not closed", "']' after the last item")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [ 'x' 'y' ]\n", 3, "unexpected ''' in the list of 'disk'", "',' between items")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = 16 32\n", 3, "unexpected '3' after the value of 'memory'", "one KEY = VALUE per line")]
    [InlineData("name='a'\nkernel='managed:hello'\n= 3\n", 3, "unexpected '=' where a key should start", "KEY = VALUE")]
    [InlineData("name='a'\nkernel='managed:hello'\nname='b'\n", 3, "'name' is set twice (first on line 1)", "each key at most once")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = '16'\n", 3, "memory is a string", "memory = a number of MiB")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = 0\n", 3, "memory = 0 is out of range", "1 to 1048576 MiB")]
    [InlineData("name='a'\nkernel='managed:hello'\nvcpus = 1000\n", 3, "vcpus = 1000 is out of range", "1 to 128 vCPUs")]
    [InlineData("name='a'\nkernel='managed:hello'\nmemory = 64\nmaxmem = 32\n", 4, "maxmem 32 is below memory 64", "maxmem >= memory")]
    [InlineData("name = 5\nkernel='managed:hello'\n", 1, "name is a number", "name = \"...\"")]
    [InlineData("name = 'a/b'\nkernel='managed:hello'\n", 1, "name \"a/b\" is empty or has '/'", "a domain name")]
    [InlineData("name='a'\nkernel='managed:nope'\n", 2, "'nope' is not a built-in managed guest", "one of hello, echo, netecho, pingable, worker, bomb")]
    [InlineData("name='a'\nkernel='managed::T'\n", 2, "names no assembly or no type", "managed:PATH.dll:Namespace.Type")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = 'file:/i.img,xvda,w'\n", 3, "disk is a string", "disk = [ 'SPEC'")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [ 5 ]\n", 3, "an item of disk is a number", "quoted strings")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [\n'/i.img,raw,xvda,w',\n'/j.img,raw,xvda,w' ]\n", 5, "vdev xvda is used twice", "one disk per vdev")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [\n'/i.img,raw,xvda,bad' ]\n", 4, "disk '/i.img,raw,xvda,bad': access 'bad' is not known", "ro, r, rw or w")]
    [InlineData("name='a'\nkernel='managed:hello'\nvif = [ 'mac=zz' ]\n", 3, "vif 'mac=zz': mac 'zz' is not a MAC address", "six pairs of hex digits")]
    [InlineData("name='a'\nkernel='managed:hello'\non_reboot = 'explode'\n", 3, "on_reboot = \"explode\" is not an action", "destroy, restart or preserve")]
    public void A_Bad_Line_Is_Reported_As_File_Line_What_And_Expected(string text, int line, string what, string expected)
    {
        var e = Fails(text);
        e.Line.Should().Be(line);
        e.NotSupported.Should().BeFalse();
        e.Message.Should().StartWith($"{File}:{line}: ").And.Contain(what).And.Contain("; expected ").And.Contain(expected);
    }

    [Theory]
    [InlineData("kernel='managed:hello'\n", "there is no name", "name = \"NAME\"")]
    [InlineData("name='a'\n", "there is no kernel", "kernel = \"managed:NAME\"")]
    public void A_Missing_Key_Names_The_File(string text, string what, string expected)
    {
        var e = Fails(text);
        e.Line.Should().Be(0);
        e.Message.Should().Be($"{File}: {what}; expected {e.Message[(e.Message.IndexOf("; expected ", StringComparison.Ordinal) + 11)..]}")
            .And.Contain(expected);
    }

    [Theory]
    [InlineData("name='a'\nkernel='managed:hello'\ntype = 'hvm'\n", 3, "type \"hvm\" is not supported")]
    [InlineData("name='a'\nkernel='managed:hello'\non_crash = 'coredump-destroy'\n", 3, "on_crash = \"coredump-destroy\" is not supported")]
    [InlineData("name='a'\nkernel='managed:hello'\ndisk = [ '/i.img,qcow2,xvda,w' ]\n", 3, "format 'qcow2' is not supported")]
    public void Valid_Xl_Settings_This_Build_Cannot_Honour_Are_Marked_Not_Supported(string text, int line, string what)
    {
        var e = Fails(text);
        e.NotSupported.Should().BeTrue();
        e.Message.Should().StartWith($"{File}:{line}: ").And.Contain(what);
    }
}
