using System.Globalization;

namespace Paravirt.Core.Backends.Block;

/// <summary>
/// The number a virtual block device is known by in XenStore (its devid, the frontend's
/// <c>virtual-device</c>), computed from a name as docs/man/xen-vbd-interface.7.pandoc specifies:
/// <c>xvd</c> disks and partitions up to 15 are <c>202 &lt;&lt; 8 | disk &lt;&lt; 4 | partition</c>,
/// larger ones <c>1 &lt;&lt; 28 | disk &lt;&lt; 8 | partition</c>; <c>d&lt;N&gt;p&lt;M&gt;</c> is the same disk as
/// <c>xvd</c>; <c>sd</c> is <c>8 &lt;&lt; 8 | disk &lt;&lt; 4 | partition</c>; <c>hd</c> disks 0–1 are
/// <c>3 &lt;&lt; 8 | disk &lt;&lt; 6 | partition</c> and 2–3 are <c>22 &lt;&lt; 8 | (disk-2) &lt;&lt; 6 | partition</c>.
/// A plain decimal (or 0x hexadecimal) number is taken as the number itself.
/// </summary>
public static class VirtualDeviceNumber
{
    private const int MaxXvdDisk = (1 << 20) - 1;

    /// <summary>The devid of <paramref name="vdev"/> (xvda → 51712); throws <see cref="ArgumentException"/> for a name that is not one.</summary>
    public static uint Parse(string vdev) =>
        TryParse(vdev, out var devid)
            ? devid
            : throw new ArgumentException(
                $"'{vdev}' is not a virtual device name: expected xvd<letters>[partition], d<disk>[p<partition>], sd<a-p>[1-15], hd<a-d>[1-63] or a number (see xen-vbd-interface(7))",
                nameof(vdev));

    public static bool TryParse(string? vdev, out uint devid)
    {
        devid = 0;
        if (string.IsNullOrEmpty(vdev))
        {
            return false;
        }

        if (char.IsAsciiDigit(vdev[0]))
        {
            return vdev.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                ? uint.TryParse(vdev.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out devid) && devid <= int.MaxValue
                : uint.TryParse(vdev, NumberStyles.None, CultureInfo.InvariantCulture, out devid) && devid <= int.MaxValue;
        }

        var s = vdev.AsSpan();
        if (s.StartsWith("xvd"))
        {
            return Letters(s[3..], MaxXvdDisk, out var disk, out var rest) && Partition(rest, 255, out var part) && Xvd(disk, part, out devid);
        }

        if (s[0] == 'd' && s.Length > 1 && char.IsAsciiDigit(s[1]))
        {
            var p = s.IndexOf('p');
            var diskText = p < 0 ? s[1..] : s[1..p];
            if (!Number(diskText, MaxXvdDisk, out var disk))
            {
                return false;
            }

            var part = 0;
            if (p >= 0 && (!Number(s[(p + 1)..], 255, out part)))
            {
                return false;
            }

            return Xvd(disk, part, out devid);
        }

        if (s.StartsWith("sd"))
        {
            if (Letters(s[2..], 15, out var disk, out var rest) && Partition(rest, 15, out var part))
            {
                devid = (uint)((8 << 8) | (disk << 4) | part);
                return true;
            }

            return false;
        }

        if (s.StartsWith("hd"))
        {
            if (Letters(s[2..], 3, out var disk, out var rest) && Partition(rest, 63, out var part))
            {
                devid = disk < 2 ? (uint)((3 << 8) | (disk << 6) | part) : (uint)((22 << 8) | ((disk - 2) << 6) | part);
                return true;
            }

            return false;
        }

        return false;
    }

    private static bool Xvd(int disk, int part, out uint devid)
    {
        devid = disk < 16 && part < 16
            ? (uint)((202 << 8) | (disk << 4) | part)
            : (uint)((1 << 28) | (disk << 8) | part);
        return true;
    }

    // Disk letters are bijective base 26: a..z are 0..25, aa is 26, …, as the xl config parser reads them.
    private static bool Letters(ReadOnlySpan<char> s, int max, out int disk, out ReadOnlySpan<char> rest)
    {
        disk = -1;
        var i = 0;
        long value = 0;
        while (i < s.Length && s[i] is >= 'a' and <= 'z')
        {
            value = (value * 26) + (s[i] - 'a' + 1);
            if (value - 1 > max)
            {
                rest = default;
                return false;
            }

            i++;
        }

        rest = s[i..];
        disk = (int)value - 1;
        return i > 0;
    }

    private static bool Partition(ReadOnlySpan<char> s, int max, out int part)
    {
        part = 0;
        return s.IsEmpty || (s[0] != '0' && Number(s, max, out part) && part > 0);
    }

    private static bool Number(ReadOnlySpan<char> s, int max, out int value)
    {
        value = 0;
        if (s.IsEmpty || s.Length > 7 || (s.Length > 1 && s[0] == '0'))
        {
            return false;
        }

        foreach (var c in s)
        {
            if (!char.IsAsciiDigit(c))
            {
                return false;
            }

            value = (value * 10) + (c - '0');
        }

        return value <= max;
    }
}
