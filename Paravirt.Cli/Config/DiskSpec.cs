using Paravirt.Core.Backends.Block;

namespace Paravirt.Cli.Config;

/// <summary>
/// One entry of <c>disk = [ ... ]</c>, parsed by xl-disk-configuration(5): comma-separated
/// <c>key=value</c> pairs, flags and positional parameters (<c>target</c>, <c>format</c>,
/// <c>vdev</c>, <c>access</c>, in that order, each at most once; an empty one takes its default);
/// <c>target=</c> takes the whole rest of the spec, commas included. The deprecated form
/// <c>[format:]target,vdev[:devtype],access</c> is recognised when the target carries a prefix
/// (<c>file:</c>, <c>phy:</c>, <c>tap:aio:</c>, <c>raw:</c> …) or the second positional is a vdev
/// rather than a format.
/// </summary>
/// <param name="Target">The image file (a relative path is taken from the config file's folder).</param>
/// <param name="Vdev">The guest's name for the disk (<c>xvda</c> …), see xen-vbd-interface(7).</param>
/// <param name="ReadOnly">access=ro/r, or a cdrom.</param>
/// <param name="Format">Always <c>raw</c> here: other formats are refused.</param>
/// <param name="IsCdrom">devtype=cdrom.</param>
internal sealed record DiskSpec(string Target, string Vdev, bool ReadOnly, string Format, bool IsCdrom)
{
    private static readonly string[] Positional = ["target", "format", "vdev", "access"];
    private static readonly string[] Formats = ["raw", "qcow", "qcow2", "vhd", "qed"];
    private static readonly string[] IgnoredPrefixes = ["tapdisk", "tap2", "tap", "aio", "ioemu", "file", "phy"];
    private static readonly string[] ScriptPrefixes = ["iscsi", "nbd", "enbd", "drbd"];
    private static readonly string[] IgnoredFlags = ["discard", "no-discard", "direct-io-safe", "trusted", "untrusted"];
    private static readonly string[] KnownKeys = ["target", "format", "vdev", "access", "devtype", "backend", "backendtype", "script", "specification"];

    /// <summary>Parses one DISKSPEC; errors are <see cref="FormatException"/> (what was wrong; expected …), or <see cref="NotSupportedException"/> for valid specs this build cannot serve.</summary>
    public static DiskSpec Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        // Pass 1: the parameters in order, as (key or null for positional, value); flags apart.
        var tokens = new List<(string? Key, string Value)>();
        string? devtype = null;
        var pos = 0;
        while (pos <= spec.Length)
        {
            while (pos < spec.Length && char.IsWhiteSpace(spec[pos]))
            {
                pos++;
            }

            if (spec.AsSpan(pos).StartsWith("target="))
            {
                tokens.Add(("target", spec[(pos + "target=".Length)..]));
                break;
            }

            var comma = spec.IndexOf(',', pos);
            var part = (comma < 0 ? spec[pos..] : spec[pos..comma]).TrimEnd();
            pos = comma < 0 ? spec.Length + 1 : comma + 1;
            var eq = part.IndexOf('=');
            if (eq > 0)
            {
                var key = part[..eq];
                if (!KnownKeys.Contains(key))
                {
                    throw new FormatException($"'{key}' is not a disk parameter; expected {string.Join(", ", KnownKeys)}, or a flag ({string.Join(", ", IgnoredFlags)}, cdrom)");
                }

                if (key == "devtype")
                {
                    devtype = part[(eq + 1)..];
                }
                else
                {
                    tokens.Add((key, part[(eq + 1)..]));
                }
            }
            else if (part == "cdrom")
            {
                devtype = "cdrom";
            }
            else if (!IgnoredFlags.Contains(part))
            {
                // Advisory flags (discard, trusted, …) are blkback's to decide; the rest is positional.
                tokens.Add((null, part));
            }
        }

        // The first positional may carry deprecated prefixes: "file:", "tap:aio:", "raw:" …
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var prefixed = false;
        var firstPositional = tokens.FindIndex(t => t.Key is null);
        if (firstPositional >= 0)
        {
            var first = tokens[firstPositional].Value;
            while (first.IndexOf(':') is > 0 and var colon)
            {
                var prefix = first[..colon];
                if (IgnoredPrefixes.Contains(prefix))
                {
                    prefixed = true;
                }
                else if (Formats.Contains(prefix))
                {
                    prefixed = true;
                    tokens.Add(("format", prefix));
                }
                else if (ScriptPrefixes.Contains(prefix))
                {
                    throw new NotSupportedException($"the '{prefix}:' block script is not supported; expected a raw image file");
                }
                else
                {
                    break;
                }

                first = first[(colon + 1)..];
            }

            tokens[firstPositional] = (null, first);
        }

        // The deprecated order is target, vdev, access: chosen by a prefix, or a second positional that is a vdev, not a format.
        var positional = tokens.Where(t => t.Key is null).Select(t => t.Value).ToList();
        var deprecated = prefixed || (positional.Count >= 2 && positional[1].Length > 0 && !Formats.Contains(positional[1])
            && VirtualDeviceNumber.TryParse(positional[1].Split(':')[0], out _));
        var names = deprecated ? ["target", "vdev", "access"] : Positional;

        // Pass 2: in order. A positional takes the next parameter not yet specified; an empty one
        // specifies its default. Only target= may follow an empty positional target.
        var specified = new HashSet<string>(StringComparer.Ordinal);
        var next = 0;
        foreach (var (key, value) in tokens)
        {
            string name;
            if (key is null)
            {
                while (next < names.Length && specified.Contains(names[next]))
                {
                    next++;
                }

                if (next >= names.Length)
                {
                    throw new FormatException($"too many positional parameters ('{value}' is left over); expected at most target, format, vdev, access");
                }

                name = names[next++];
            }
            else
            {
                name = key;
                if (specified.Contains(name) && !(name == "target" && values.GetValueOrDefault("target", "").Length == 0))
                {
                    throw new FormatException($"'{name}' is given twice; expected each parameter at most once (positionally or by name)");
                }
            }

            specified.Add(name);
            if (value.Length > 0)
            {
                values[name] = value;
            }
        }

        if (values.TryGetValue("vdev", out var vdevText) && vdevText.IndexOf(':') is > 0 and var c)
        {
            devtype ??= vdevText[(c + 1)..];
            values["vdev"] = vdevText[..c];
        }

        if (devtype is not null and not "cdrom")
        {
            throw new FormatException($"devtype '{devtype}' is not known; expected devtype=cdrom or none");
        }

        var format = values.GetValueOrDefault("format") is { Length: > 0 } f ? f : "raw";
        if (!Formats.Contains(format))
        {
            throw new FormatException($"format '{format}' is not known; expected one of {string.Join(", ", Formats)}");
        }

        if (format != "raw")
        {
            throw new NotSupportedException($"format '{format}' is not supported; expected raw (blkback serves the image's bytes as they are)");
        }

        if (!values.TryGetValue("vdev", out var vdev) || vdev.Length == 0)
        {
            throw new FormatException("the disk has no vdev; expected the guest's name for it, e.g. 'file:disk.img,xvda,w' or 'vdev=xvda, target=disk.img'");
        }

        if (!VirtualDeviceNumber.TryParse(vdev, out _))
        {
            throw new FormatException($"'{vdev}' is not a virtual device name; expected xvd<letters>[partition], d<N>[p<M>], sd<x>, hd<x> (xen-vbd-interface(7))");
        }

        var cdrom = devtype == "cdrom";
        var access = values.GetValueOrDefault("access") is { Length: > 0 } a ? a : cdrom ? "r" : "rw";
        var readOnly = access switch
        {
            "ro" or "r" => true,
            "rw" or "w" => false,
            _ => throw new FormatException($"access '{access}' is not known; expected ro, r, rw or w"),
        };

        if (values.ContainsKey("script") || values.GetValueOrDefault("backend") is { Length: > 0 } and not "0" and not "Domain-0")
        {
            throw new NotSupportedException("block scripts and driver domains are not supported; expected the image to be served by the host (domain 0)");
        }

        if (values.GetValueOrDefault("specification") is { Length: > 0 } spec2 && spec2 != "xen")
        {
            throw new NotSupportedException($"specification '{spec2}' is not supported; expected xen (io/blkif.h)");
        }

        var target = values.GetValueOrDefault("target") ?? "";
        if (target.Length == 0)
        {
            throw new FormatException(cdrom
                ? "an empty cdrom drive is not supported; expected a target image"
                : "the disk has no target; expected an image file path, e.g. 'file:disk.img,xvda,w' or 'vdev=xvda, target=disk.img'");
        }

        return new DiskSpec(target, vdev, readOnly || cdrom, format, cdrom);
    }
}
