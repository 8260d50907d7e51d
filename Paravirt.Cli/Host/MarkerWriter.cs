namespace Paravirt.Cli.Host;

/// <summary>
/// Passes text through to another writer and calls <paramref name="seen"/> once, the first time the
/// text written so far contains <paramref name="marker"/> (also when it spans several writes):
/// how <c>run --profile-from TEXT</c> starts the profile at a point the guest's console shows.
/// </summary>
internal sealed class MarkerWriter(TextWriter inner, string marker, Action seen) : TextWriter
{
    private string _tail = "";
    private bool _fired;

    /// <summary>Whether the marker has been written.</summary>
    public bool Seen => _fired;

    public override System.Text.Encoding Encoding => inner.Encoding;

    public override void Write(char value) => Write([value], 0, 1);

    public override void Write(string? value)
    {
        if (value is not null)
        {
            Write(value.ToCharArray(), 0, value.Length);
        }
    }

    public override void Write(char[] buffer, int index, int count)
    {
        inner.Write(buffer, index, count);
        if (_fired || marker.Length == 0)
        {
            return;
        }

        // Only the last marker.Length - 1 characters can start a match that the next write completes.
        var text = _tail + new string(buffer, index, count);
        if (text.Contains(marker, StringComparison.Ordinal))
        {
            _fired = true;
            _tail = "";
            seen();
            return;
        }

        _tail = text.Length < marker.Length ? text : text[^(marker.Length - 1)..];
    }

    public override void Flush() => inner.Flush();

    public override Task FlushAsync() => inner.FlushAsync();
}
