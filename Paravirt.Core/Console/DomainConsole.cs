using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;

namespace Paravirt.Core.Console;

/// <summary>
/// One domain's console output as a stream of lines for the host. Bytes arrive from the guest
/// (<c>CONSOLEIO_write</c> now, the PV console ring later), are split at '\n', and are kept in a
/// bounded buffer: when the host does not read fast enough the oldest lines are dropped and
/// counted, so a chatty guest cannot exhaust the host.
/// </summary>
public sealed class DomainConsole
{
    /// <summary>A partial line is flushed as a line once it reaches this length.</summary>
    public const int MaxLineBytes = 4096;

    private readonly Channel<string> _lines;
    private readonly Lock _lock = new();
    private readonly byte[] _partial = new byte[MaxLineBytes];
    private readonly int _budgetBytes;
    private int _partialLength;
    private long _bufferedBytes;
    private long _dropped;
    private long _bytesWritten;

    public DomainConsole(int budgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(budgetBytes, 1);
        _budgetBytes = budgetBytes;
        _lines = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    }

    /// <summary>Lines dropped because the host read too slowly.</summary>
    public long DroppedLines => Interlocked.Read(ref _dropped);

    /// <summary>Every byte the guest wrote.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <summary>Appends guest output. Never blocks the guest.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            _bytesWritten += bytes.Length;
            foreach (var b in bytes)
            {
                if (b == (byte)'\n' || _partialLength == MaxLineBytes)
                {
                    EmitLocked();
                    if (b == (byte)'\n')
                    {
                        continue;
                    }
                }

                if (b != (byte)'\r')
                {
                    _partial[_partialLength++] = b;
                }
            }
        }
    }

    /// <summary>Reads lines until the domain is gone (then the sequence ends after the last line).</summary>
    public async IAsyncEnumerable<string> ReadLinesAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (await _lines.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            while (_lines.Reader.TryRead(out var line))
            {
                Interlocked.Add(ref _bufferedBytes, -line.Length);
                yield return line;
            }
        }
    }

    /// <summary>Takes a line if one is ready.</summary>
    public bool TryReadLine(out string line)
    {
        if (_lines.Reader.TryRead(out line!))
        {
            Interlocked.Add(ref _bufferedBytes, -line.Length);
            return true;
        }

        return false;
    }

    /// <summary>Ends the stream: flushes a partial line and completes readers.</summary>
    internal void Close()
    {
        lock (_lock)
        {
            if (_partialLength > 0)
            {
                EmitLocked();
            }

            _lines.Writer.TryComplete();
        }
    }

    private void EmitLocked()
    {
        var line = Encoding.UTF8.GetString(_partial, 0, _partialLength);
        _partialLength = 0;
        // Make room: drop the oldest lines until the new one fits in the budget.
        while (Interlocked.Read(ref _bufferedBytes) + line.Length > _budgetBytes && _lines.Reader.TryRead(out var old))
        {
            Interlocked.Add(ref _bufferedBytes, -old.Length);
            _dropped++;
        }

        if (line.Length > _budgetBytes)
        {
            _dropped++;
            return;
        }

        if (_lines.Writer.TryWrite(line))
        {
            Interlocked.Add(ref _bufferedBytes, line.Length);
        }
    }
}
