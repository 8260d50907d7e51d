using System.Globalization;
using System.Text;

namespace Paravirt.Core.Domains;

/// <summary>
/// A readable per-vCPU trace, like xentrace's formatted output: one line per hypercall (name,
/// arguments, result), exception or event delivered to a guest, each stamped with the host's
/// monotonic time and <c>dNvM</c>. Set <see cref="HypervisorOptions.Trace"/> to record; when it is
/// null the engines test one field and record nothing. Thread-safe: vCPUs write whole lines.
/// </summary>
public sealed class HypervisorTrace : IDisposable
{
    private readonly Lock _lock = new();
    private readonly TextWriter _writer;
    private readonly long _start = System.Diagnostics.Stopwatch.GetTimestamp();
    private readonly bool _ownsWriter;

    /// <summary>Writes to <paramref name="writer"/>; it is disposed with the trace when <paramref name="ownsWriter"/>.</summary>
    public HypervisorTrace(TextWriter writer, bool ownsWriter = false)
    {
        ArgumentNullException.ThrowIfNull(writer);
        _writer = writer;
        _ownsWriter = ownsWriter;
    }

    /// <summary>A trace into a new file at <paramref name="path"/>.</summary>
    public static HypervisorTrace ToFile(string path) =>
        new(new StreamWriter(path, append: false, new UTF8Encoding(false), bufferSize: 1 << 16), ownsWriter: true);

    /// <summary>Lines written so far.</summary>
    public long Lines { get; private set; }

    /// <summary>A hypercall and what it answered.</summary>
    public void Hypercall(Vcpu vcpu, ulong nr, ulong a1, ulong a2, ulong a3, ulong a4, ulong a5, long result)
    {
        var name = (nr < int.MaxValue ? Hypercalls.HypercallTable.XenName((int)nr) : null) ?? $"#{nr}";
        Write(vcpu, string.Create(CultureInfo.InvariantCulture, $"hypercall {name}(0x{a1:x}, 0x{a2:x}, 0x{a3:x}, 0x{a4:x}, 0x{a5:x}) = {Result(result)}"));
    }

    /// <summary>An exception, software interrupt, event upcall or syscall bounced to the guest's handler.</summary>
    public void Bounce(Vcpu vcpu, string what, ulong rip, ulong handler, uint? errorCode, ulong? cr2)
    {
        var code = errorCode is { } c ? string.Create(CultureInfo.InvariantCulture, $" error 0x{c:x}") : "";
        var fault = cr2 is { } a ? string.Create(CultureInfo.InvariantCulture, $" cr2 0x{a:x}") : "";
        Write(vcpu, string.Create(CultureInfo.InvariantCulture, $"bounce {what} at rip 0x{rip:x}{code}{fault} -> 0x{handler:x}"));
    }

    /// <summary>Anything else worth a line: a crash, an unimplemented instruction, a refused MSR.</summary>
    public void Note(Vcpu vcpu, string text) => Write(vcpu, text);

    public void Flush()
    {
        lock (_lock)
        {
            _writer.Flush();
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _writer.Flush();
            if (_ownsWriter)
            {
                _writer.Dispose();
            }
        }
    }

    private static string Result(long result) =>
        result < 0 && result >= -4096 && Enum.IsDefined((Abi.Errno)(-result))
            ? $"-{(Abi.Errno)(-result)}"
            : result.ToString(CultureInfo.InvariantCulture);

    private void Write(Vcpu vcpu, string text)
    {
        var seconds = System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalSeconds;
        lock (_lock)
        {
            _writer.Write(string.Create(CultureInfo.InvariantCulture, $"[{seconds,12:F6}] d{vcpu.Domain.Id}v{vcpu.Id} "));
            _writer.WriteLine(text);
            Lines++;
        }
    }
}
