using System.Buffers.Binary;
using System.Globalization;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// An Ethernet MAC address (48 bits, held in the low bits of a <see cref="ulong"/>, first octet
/// most significant). The group bit (bit 0 of the first octet) marks multicast and broadcast.
/// </summary>
public readonly record struct MacAddress
{
    private readonly ulong _value;

    private MacAddress(ulong value) => _value = value & 0xFFFF_FFFF_FFFFUL;

    /// <summary>ff:ff:ff:ff:ff:ff.</summary>
    public static MacAddress Broadcast { get; } = new(0xFFFF_FFFF_FFFFUL);

    /// <summary>The 48-bit value, first octet most significant.</summary>
    public ulong Value => _value;

    /// <summary>The group bit is set: multicast or broadcast (flooded by a switch).</summary>
    public bool IsMulticast => (_value & 0x0100_0000_0000UL) != 0;

    public bool IsBroadcast => _value == 0xFFFF_FFFF_FFFFUL;

    public static MacAddress FromValue(ulong value) =>
        value <= 0xFFFF_FFFF_FFFFUL ? new MacAddress(value) : throw new ArgumentOutOfRangeException(nameof(value), value, "a MAC address has 48 bits");

    /// <summary>The six octets at the start of <paramref name="octets"/>.</summary>
    public static MacAddress Read(ReadOnlySpan<byte> octets) =>
        new(((ulong)BinaryPrimitives.ReadUInt16BigEndian(octets) << 32) | BinaryPrimitives.ReadUInt32BigEndian(octets[2..]));

    /// <summary>Writes the six octets at the start of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)(_value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(destination[2..], (uint)_value);
    }

    /// <summary>A random unicast address in Xen's OUI 00:16:3e (as libxl generates one).</summary>
    public static MacAddress RandomXen() => new(0x0016_3E00_0000UL | (uint)Random.Shared.Next(0, 1 << 24));

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (libxl's <c>mac</c> node format; hex digits, either case).</summary>
    public static MacAddress Parse(string text) =>
        TryParse(text, out var mac) ? mac : throw new FormatException($"'{text}' is not a MAC address: expected six hex octets separated by ':' (00:16:3e:01:02:03)");

    public static bool TryParse(string? text, out MacAddress mac)
    {
        mac = default;
        if (text is null || text.Length != 17)
        {
            return false;
        }

        ulong v = 0;
        for (var i = 0; i < 6; i++)
        {
            if (i > 0 && text[(i * 3) - 1] != ':')
            {
                return false;
            }

            if (!byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b))
            {
                return false;
            }

            v = (v << 8) | b;
        }

        mac = new MacAddress(v);
        return true;
    }

    /// <summary>Lower-case <c>aa:bb:cc:dd:ee:ff</c>, as libxl writes it.</summary>
    public override string ToString()
    {
        Span<byte> b = stackalloc byte[6];
        Write(b);
        return string.Create(CultureInfo.InvariantCulture, $"{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}:{b[4]:x2}:{b[5]:x2}");
    }
}
