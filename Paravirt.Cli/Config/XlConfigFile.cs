using System.Globalization;
using System.Text;

namespace Paravirt.Cli.Config;

/// <summary>A value in an xl.cfg file: a string, a number, or a list of values.</summary>
internal abstract record XlValue(int Line)
{
    public abstract string Kind { get; }
}

internal sealed record XlString(string Text, int Line) : XlValue(Line)
{
    public override string Kind => "a string";
}

internal sealed record XlNumber(long Value, int Line) : XlValue(Line)
{
    public override string Kind => "a number";
}

internal sealed record XlList(IReadOnlyList<XlValue> Items, int Line) : XlValue(Line)
{
    public override string Kind => "a list";
}

/// <summary>One <c>KEY = VALUE</c> setting and the line it started on.</summary>
internal sealed record XlSetting(string Key, XlValue Value, int Line);

/// <summary>
/// The syntax of an xl domain configuration file (xl.cfg(5), "SYNTAX"): <c>KEY = VALUE</c> pairs
/// separated by newlines or semicolons; a value is a string in single or double quotes, a number
/// (decimal, <c>0</c>-prefixed octal, <c>0x</c> hexadecimal), or a list <c>[ v, v, ... ]</c> that may
/// nest and span lines (a trailing comma is allowed); <c>#</c> starts a comment. A string may
/// contain <c>\\</c>, <c>\"</c> and <c>\'</c> escapes. This is only the syntax; the meaning of keys
/// is <see cref="DomainSpec"/>'s.
/// </summary>
internal sealed class XlConfigFile
{
    private readonly string _text;
    private readonly string _file;
    private int _pos;
    private int _line = 1;

    private XlConfigFile(string text, string file)
    {
        _text = text;
        _file = file;
    }

    /// <summary>Parses <paramref name="text"/>; errors name <paramref name="file"/> and the line.</summary>
    /// <exception cref="ConfigException">The text is not xl.cfg syntax.</exception>
    public static IReadOnlyList<XlSetting> Parse(string text, string file)
    {
        ArgumentNullException.ThrowIfNull(text);
        return new XlConfigFile(text, file).ParseAll();
    }

    private List<XlSetting> ParseAll()
    {
        var settings = new List<XlSetting>();
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        while (true)
        {
            SkipSpaceAndComments(newlines: true, semicolons: true);
            if (_pos >= _text.Length)
            {
                return settings;
            }

            var line = _line;
            var key = ReadKey();
            SkipSpaceAndComments(newlines: false, semicolons: false);
            if (Peek() != '=')
            {
                throw Error(line, $"'{key}' is not followed by '='", "KEY = VALUE");
            }

            _pos++;
            SkipSpaceAndComments(newlines: false, semicolons: false);
            if (_pos >= _text.Length || Peek() is '\n' or ';')
            {
                throw Error(line, $"'{key} =' has no value", "a \"string\", a number or a [ list ] after '='");
            }

            var value = ReadValue(key);
            SkipSpaceAndComments(newlines: false, semicolons: false);
            if (_pos < _text.Length && Peek() is not ('\n' or ';'))
            {
                throw Error(_line, $"unexpected '{Peek()}' after the value of '{key}'", "one KEY = VALUE per line (or separated by ';')");
            }

            if (seen.TryGetValue(key, out var first))
            {
                throw Error(line, $"'{key}' is set twice (first on line {first})", "each key at most once");
            }

            seen.Add(key, line);
            settings.Add(new XlSetting(key, value, line));
        }
    }

    private char Peek() => _text[_pos];

    private void SkipSpaceAndComments(bool newlines, bool semicolons)
    {
        while (_pos < _text.Length)
        {
            var c = _text[_pos];
            if (c == '#')
            {
                while (_pos < _text.Length && _text[_pos] != '\n')
                {
                    _pos++;
                }
            }
            else if (c is ' ' or '\t' or '\r')
            {
                _pos++;
            }
            else if ((c == '\n' && newlines) || (c == ';' && semicolons))
            {
                if (c == '\n')
                {
                    _line++;
                }

                _pos++;
            }
            else
            {
                return;
            }
        }
    }

    private string ReadKey()
    {
        var start = _pos;
        if (!(char.IsAsciiLetter(Peek()) || Peek() == '_'))
        {
            throw Error(_line, $"unexpected '{Peek()}' where a key should start", "KEY = VALUE, a key being letters, digits and '_'");
        }

        while (_pos < _text.Length && (char.IsAsciiLetterOrDigit(Peek()) || Peek() == '_'))
        {
            _pos++;
        }

        return _text[start.._pos];
    }

    private XlValue ReadValue(string key)
    {
        var line = _line;
        var c = Peek();
        if (c is '"' or '\'')
        {
            return new XlString(ReadString(c), line);
        }

        if (c == '[')
        {
            return ReadList(key);
        }

        if (char.IsAsciiDigit(c) || c == '-')
        {
            return new XlNumber(ReadNumber(), line);
        }

        var word = new StringBuilder();
        while (_pos < _text.Length && !char.IsWhiteSpace(Peek()) && Peek() is not (';' or ',' or ']' or '#'))
        {
            word.Append(Peek());
            _pos++;
        }

        throw Error(line, $"'{word}' is not a value (strings need quotes)", $"{key} = \"{word}\", a number, or a [ list ]");
    }

    private string ReadString(char quote)
    {
        var line = _line;
        _pos++;
        var s = new StringBuilder();
        while (true)
        {
            if (_pos >= _text.Length || Peek() == '\n')
            {
                throw Error(line, $"the string starting with {quote} is not closed on its line", $"a closing {quote}");
            }

            var c = Peek();
            _pos++;
            if (c == quote)
            {
                return s.ToString();
            }

            if (c == '\\' && _pos < _text.Length && Peek() is '\\' or '"' or '\'')
            {
                s.Append(Peek());
                _pos++;
                continue;
            }

            s.Append(c);
        }
    }

    private long ReadNumber()
    {
        var line = _line;
        var start = _pos;
        while (_pos < _text.Length && (char.IsAsciiLetterOrDigit(Peek()) || Peek() == '-'))
        {
            _pos++;
        }

        var token = _text[start.._pos];
        var negative = token.StartsWith('-');
        var digits = negative ? token[1..] : token;
        bool ok;
        long value;
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            ok = long.TryParse(digits.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value) && digits.Length > 2;
        }
        else if (digits.Length > 1 && digits[0] == '0')
        {
            ok = TryOctal(digits.AsSpan(1), out value);
        }
        else
        {
            ok = long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        }

        if (!ok)
        {
            throw Error(line, $"'{token}' is not a number", "decimal digits, 0-prefixed octal or 0x-prefixed hexadecimal (strings need quotes)");
        }

        return negative ? -value : value;
    }

    private static bool TryOctal(ReadOnlySpan<char> digits, out long value)
    {
        value = 0;
        foreach (var d in digits)
        {
            if (d is < '0' or > '7' || value > (long.MaxValue >> 3))
            {
                return false;
            }

            value = (value << 3) | (long)(d - '0');
        }

        return true;
    }

    private XlList ReadList(string key)
    {
        var line = _line;
        _pos++; // '['
        var items = new List<XlValue>();
        while (true)
        {
            SkipSpaceAndComments(newlines: true, semicolons: false);
            if (_pos >= _text.Length)
            {
                throw Error(line, $"the list of '{key}' is not closed", "']' after the last item");
            }

            if (Peek() == ']')
            {
                _pos++;
                return new XlList(items, line);
            }

            items.Add(ReadValue(key));
            SkipSpaceAndComments(newlines: true, semicolons: false);
            if (_pos >= _text.Length)
            {
                throw Error(line, $"the list of '{key}' is not closed", "']' after the last item");
            }

            if (Peek() == ',')
            {
                _pos++;
            }
            else if (Peek() != ']')
            {
                throw Error(_line, $"unexpected '{Peek()}' in the list of '{key}'", "',' between items and ']' at the end");
            }
        }
    }

    private ConfigException Error(int line, string what, string expected) => new(_file, line, what, expected);
}
