using Paravirt.Core.Domains;

namespace Paravirt.Cli.Config;

/// <summary>What to do when a domain ends a certain way (xl.cfg's <c>on_poweroff</c>, <c>on_reboot</c>, <c>on_crash</c>).</summary>
internal enum LifecycleAction
{
    /// <summary>Destroy the domain.</summary>
    Destroy,

    /// <summary>Destroy it and create a new one with the same configuration.</summary>
    Restart,

    /// <summary>Keep it (its state and table row) until the host ends.</summary>
    Preserve,
}

/// <summary>A disk line item with the config line it came from.</summary>
internal sealed record DiskEntry(DiskSpec Spec, int Line);

/// <summary>A vif line item with the config line it came from.</summary>
internal sealed record VifEntry(VifSpec Spec, int Line);

/// <summary>
/// A domain as an xl.cfg file describes it (the keys paravirt uses; others are warned about and
/// ignored, as xl ignores what it does not know). Made with <see cref="Load"/> or <see cref="Parse"/>.
/// </summary>
internal sealed record DomainSpec
{
    private static readonly string[] Actions = ["destroy", "restart", "preserve"];
    private static readonly string[] OtherActions = ["rename-restart", "coredump-destroy", "coredump-restart", "soft-reset"];

    public required string File { get; init; }

    public required string Name { get; init; }

    public required KernelSpec Kernel { get; init; }

    /// <summary>The line of <c>kernel = ...</c>, for errors found when the kernel is loaded.</summary>
    public int KernelLine { get; init; }

    public int MemoryMiB { get; init; } = 128;

    public int? MaxMemoryMiB { get; init; }

    public int Vcpus { get; init; } = 1;

    public string CommandLine { get; init; } = "";

    /// <summary>The ramdisk (initrd) file of a PV kernel image (<c>ramdisk = "FILE"</c>, <c>--ramdisk</c>), or null.</summary>
    public string? Ramdisk { get; init; }

    public IReadOnlyList<DiskEntry> Disks { get; init; } = [];

    public IReadOnlyList<VifEntry> Vifs { get; init; } = [];

    public LifecycleAction OnPoweroff { get; init; } = LifecycleAction.Destroy;

    public LifecycleAction OnReboot { get; init; } = LifecycleAction.Restart;

    public LifecycleAction OnCrash { get; init; } = LifecycleAction.Destroy;

    /// <summary>Keys present in the file that paravirt does not use, with their lines (for warnings).</summary>
    public IReadOnlyList<XlSetting> Ignored { get; init; } = [];

    /// <summary>The core's domain configuration.</summary>
    public DomainConfig ToDomainConfig() => new()
    {
        Name = Name,
        MemoryMiB = MemoryMiB,
        MaxMemoryMiB = MaxMemoryMiB,
        Vcpus = Vcpus,
        CommandLine = CommandLine,
    };

    /// <summary>The name <c>run --kernel</c> shows in place of a config file in its messages.</summary>
    public const string CommandLineSource = "command line";

    /// <summary>
    /// The domain <c>paravirt run --kernel FILE [--memory MiB] [--disk IMG]… [--cmdline TEXT] [--ramdisk FILE]</c>
    /// describes: named after the kernel file (or <paramref name="name"/>); each <c>--disk</c> is an
    /// image path (served raw, read-write, as xvda, xvdb … in order) or a full xl disk spec.
    /// </summary>
    /// <exception cref="ConfigException">A value is invalid (the message names the option).</exception>
    public static DomainSpec ForKernel(string kernel, int? memoryMiB, IReadOnlyList<string> disks, string? cmdline, string? ramdisk, string? name, string baseDirectory, int? vcpus = null)
    {
        const string file = CommandLineSource;
        if (string.IsNullOrEmpty(kernel))
        {
            throw new ConfigException(file, 0, "--kernel is empty", "--kernel FILE, a PV kernel image");
        }

        name ??= Path.GetFileNameWithoutExtension(kernel);
        if (name.Length == 0 || name.Any(c => char.IsControl(c) || c == '/'))
        {
            throw new ConfigException(file, 0, $"--name \"{name}\" is empty or has '/' or control characters", "a domain name such as \"web1\"");
        }

        if (memoryMiB is { } m && (m < 1 || m > 1 << 20))
        {
            throw new ConfigException(file, 0, $"--memory {m} is out of range", $"1 to {1 << 20} MiB");
        }

        if (vcpus is { } v && (v < 1 || v > DomainLimits.Default.MaxVcpus))
        {
            throw new ConfigException(file, 0, $"--vcpus {v} is out of range", $"1 to {DomainLimits.Default.MaxVcpus} vCPUs");
        }

        var entries = new List<DiskEntry>();
        for (var i = 0; i < disks.Count; i++)
        {
            var d = disks[i];
            var text = d.Contains(',', StringComparison.Ordinal) || d.Contains('=', StringComparison.Ordinal)
                ? d
                : $"format=raw, vdev=xvd{(char)('a' + i)}, access=rw, target={d}";
            try
            {
                var disk = DiskSpec.Parse(text);
                disk = disk with { Target = Path.GetFullPath(disk.Target, baseDirectory) };
                if (entries.Any(e => e.Spec.Vdev == disk.Vdev))
                {
                    throw new ConfigException(file, 0, $"--disk '{d}': vdev {disk.Vdev} is used twice", "one disk per vdev");
                }

                entries.Add(new DiskEntry(disk, 0));
            }
            catch (FormatException e)
            {
                throw new ConfigException(file, 0, $"--disk '{d}': {e.Message}", "an image path or an xl disk spec");
            }
            catch (NotSupportedException e)
            {
                throw new ConfigException(file, 0, $"--disk '{d}': {e.Message}", "a raw image", notSupported: true);
            }
        }

        cmdline ??= "";
        if (System.Text.Encoding.UTF8.GetByteCount(cmdline) >= Core.Abi.Xen.MAX_GUEST_CMDLINE)
        {
            throw new ConfigException(file, 0, $"--cmdline is {System.Text.Encoding.UTF8.GetByteCount(cmdline)} bytes", $"fewer than {Core.Abi.Xen.MAX_GUEST_CMDLINE} (start_info.cmd_line)");
        }

        return new DomainSpec
        {
            File = file,
            Name = name,
            Kernel = new ImageKernel(Path.GetFullPath(kernel, baseDirectory)),
            MemoryMiB = memoryMiB ?? 128,
            Vcpus = vcpus ?? 1,
            CommandLine = cmdline,
            Ramdisk = ramdisk is null ? null : Path.GetFullPath(ramdisk, baseDirectory),
            Disks = entries,
        };
    }

    /// <summary>Reads and parses a config file.</summary>
    /// <exception cref="ConfigException">The file cannot be read or is not a valid configuration.</exception>
    public static DomainSpec Load(string path)
    {
        string text;
        try
        {
            text = System.IO.File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ConfigException(path, 0, $"cannot read the file ({e.Message})", "a readable xl.cfg-style file");
        }

        return Parse(text, path, Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".");
    }

    /// <summary>Parses config text; <paramref name="baseDirectory"/> anchors relative paths.</summary>
    /// <exception cref="ConfigException">The text is not a valid configuration.</exception>
    public static DomainSpec Parse(string text, string file, string baseDirectory)
    {
        var settings = XlConfigFile.Parse(text, file);
        string? name = null;
        KernelSpec? kernel = null;
        int kernelLine = 0, memory = 128, vcpus = 1;
        int? maxmem = null;
        string? cmdline = null, extra = null, root = null, ramdisk = null;
        var ramdiskLine = 0;
        var disks = new List<DiskEntry>();
        var vifs = new List<VifEntry>();
        var on = new Dictionary<string, LifecycleAction>();
        var ignored = new List<XlSetting>();
        foreach (var s in settings)
        {
            switch (s.Key)
            {
                case "name":
                    name = String(s);
                    if (name.Length == 0 || name.Any(c => char.IsControl(c) || c == '/'))
                    {
                        throw Error(s, $"name \"{name}\" is empty or has '/' or control characters", "a domain name such as \"web1\"");
                    }

                    break;
                case "type":
                    if (String(s) != "pv")
                    {
                        throw new ConfigException(file, s.Line, $"type \"{String(s)}\" is not supported", "type = \"pv\" (paravirt runs PV guests only)", notSupported: true);
                    }

                    break;
                case "memory":
                    memory = Int(s, 1, 1 << 20, "MiB");
                    break;
                case "maxmem":
                    maxmem = Int(s, 1, 1 << 20, "MiB");
                    break;
                case "vcpus":
                    vcpus = Int(s, 1, DomainLimits.Default.MaxVcpus, "vCPUs");
                    break;
                case "kernel":
                    kernelLine = s.Line;
                    try
                    {
                        kernel = KernelSpec.Parse(String(s), baseDirectory);
                    }
                    catch (FormatException e)
                    {
                        throw Split(s.Line, e.Message);
                    }

                    break;
                case "cmdline":
                    cmdline = String(s);
                    break;
                case "extra":
                    extra = String(s);
                    break;
                case "root":
                    root = String(s);
                    break;
                case "ramdisk":
                    ramdisk = String(s);
                    ramdiskLine = s.Line;
                    if (ramdisk.Length == 0)
                    {
                        throw Error(s, "ramdisk is empty", "ramdisk = \"FILE\", the initrd of a PV kernel image");
                    }

                    ramdisk = Path.GetFullPath(ramdisk, baseDirectory);
                    break;
                case "disk":
                    foreach (var item in Strings(s))
                    {
                        try
                        {
                            var disk = DiskSpec.Parse(item.Text);
                            disk = disk with { Target = Path.GetFullPath(disk.Target, baseDirectory) };
                            if (disks.Any(d => d.Spec.Vdev == disk.Vdev))
                            {
                                throw new ConfigException(file, item.Line, $"disk '{item.Text}': vdev {disk.Vdev} is used twice", "one disk per vdev");
                            }

                            disks.Add(new DiskEntry(disk, item.Line));
                        }
                        catch (FormatException e)
                        {
                            throw Split(item.Line, $"disk '{item.Text}': {e.Message}");
                        }
                        catch (NotSupportedException e)
                        {
                            throw Split(item.Line, $"disk '{item.Text}': {e.Message}", notSupported: true);
                        }
                    }

                    break;
                case "vif":
                    foreach (var item in Strings(s))
                    {
                        try
                        {
                            vifs.Add(new VifEntry(VifSpec.Parse(item.Text), item.Line));
                        }
                        catch (FormatException e)
                        {
                            throw Split(item.Line, $"vif '{item.Text}': {e.Message}");
                        }
                    }

                    break;
                case "on_poweroff" or "on_reboot" or "on_crash":
                    var action = String(s);
                    if (OtherActions.Contains(action))
                    {
                        throw new ConfigException(file, s.Line, $"{s.Key} = \"{action}\" is not supported", "destroy, restart or preserve", notSupported: true);
                    }

                    if (!Actions.Contains(action))
                    {
                        throw Error(s, $"{s.Key} = \"{action}\" is not an action", "destroy, restart or preserve");
                    }

                    on[s.Key] = Enum.Parse<LifecycleAction>(action, ignoreCase: true);
                    break;
                default:
                    ignored.Add(s);
                    break;
            }
        }

        if (name is null)
        {
            throw new ConfigException(file, 0, "there is no name", "a line name = \"NAME\"");
        }

        if (kernel is null)
        {
            throw new ConfigException(file, 0, "there is no kernel", "a line kernel = \"managed:NAME\" (built-in managed guests: " + string.Join(", ", Guests.ManagedGuests.All.Select(g => g.Name)) + ")");
        }

        if (ramdisk is not null && kernel is not ImageKernel)
        {
            throw new ConfigException(file, ramdiskLine, "a ramdisk is given for a managed guest", "ramdisk only with kernel = \"FILE\", a PV kernel image");
        }

        if (maxmem is { } max && max < memory)
        {
            var line = settings.First(s => s.Key == "maxmem").Line;
            throw new ConfigException(file, line, $"maxmem {max} is below memory {memory}", "maxmem >= memory (MiB)");
        }

        // xl.cfg: cmdline replaces root= and extra=.
        var commandLine = cmdline ?? string.Join(' ', new[] { root is null ? null : "root=" + root, extra }.Where(p => !string.IsNullOrEmpty(p)));
        if (System.Text.Encoding.UTF8.GetByteCount(commandLine) >= Core.Abi.Xen.MAX_GUEST_CMDLINE)
        {
            var line = settings.First(s => s.Key is "cmdline" or "extra" or "root").Line;
            throw new ConfigException(file, line, $"the command line is {System.Text.Encoding.UTF8.GetByteCount(commandLine)} bytes", $"fewer than {Core.Abi.Xen.MAX_GUEST_CMDLINE} (start_info.cmd_line)");
        }

        return new DomainSpec
        {
            File = file,
            Name = name,
            Kernel = kernel,
            KernelLine = kernelLine,
            MemoryMiB = memory,
            MaxMemoryMiB = maxmem,
            Vcpus = vcpus,
            CommandLine = commandLine,
            Ramdisk = ramdisk,
            Disks = disks,
            Vifs = vifs,
            OnPoweroff = on.GetValueOrDefault("on_poweroff", LifecycleAction.Destroy),
            OnReboot = on.GetValueOrDefault("on_reboot", LifecycleAction.Restart),
            OnCrash = on.GetValueOrDefault("on_crash", LifecycleAction.Destroy),
            Ignored = ignored,
        };

        string String(XlSetting s) => s.Value is XlString str
            ? str.Text
            : throw Error(s, $"{s.Key} is {s.Value.Kind}", $"{s.Key} = \"...\" (a quoted string)");

        int Int(XlSetting s, int min, int max, string unit)
        {
            if (s.Value is not XlNumber n)
            {
                throw Error(s, $"{s.Key} is {s.Value.Kind}", $"{s.Key} = a number of {unit}, without quotes");
            }

            return n.Value >= min && n.Value <= max
                ? (int)n.Value
                : throw Error(s, $"{s.Key} = {n.Value} is out of range", $"{min} to {max} {unit}");
        }

        IEnumerable<XlString> Strings(XlSetting s)
        {
            if (s.Value is not XlList list)
            {
                throw Error(s, $"{s.Key} is {s.Value.Kind}", $"{s.Key} = [ 'SPEC', 'SPEC', ... ] (a list of quoted strings)");
            }

            foreach (var item in list.Items)
            {
                yield return item as XlString
                    ?? throw new ConfigException(file, item.Line, $"an item of {s.Key} is {item.Kind}", $"{s.Key} = [ 'SPEC', ... ] (quoted strings)");
            }
        }

        ConfigException Error(XlSetting s, string what, string expected) => new(file, s.Line, what, expected);

        // Spec parsers say "what; expected …": keep the two halves apart for the FILE:LINE form.
        ConfigException Split(int line, string message, bool notSupported = false)
        {
            var i = message.LastIndexOf("; expected ", StringComparison.Ordinal);
            return i < 0
                ? new ConfigException(file, line, message, "a valid value", notSupported)
                : new ConfigException(file, line, message[..i], message[(i + "; expected ".Length)..], notSupported);
        }
    }
}
