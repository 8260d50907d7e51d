using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;

namespace Paravirt.Core.Console;

/// <summary>
/// One domain's console as the host sees it. Output arrives from two sources, the early
/// <c>CONSOLEIO_write</c> hypercall and the PV console ring (drained by the console backend); both
/// go through <see cref="Write"/> under one lock, so their bytes keep the order in which they
/// arrived. That one ordered stream has two views, each bounded by
/// <see cref="Domains.DomainLimits.ConsoleBufferBytes"/> on its own:
/// <list type="bullet">
/// <item><see cref="Output"/>, the raw bytes as a <see cref="PipeReader"/>. While the host has
/// <c>ConsoleBufferBytes</c> or more unread, further output is dropped and counted in
/// <see cref="DroppedBytes"/> until it has read half of it (the pipe's pause/resume thresholds).</item>
/// <item>the lines (<see cref="ReadLinesAsync"/>, <see cref="TryReadLine"/>), split at '\n': when
/// the host does not read them the oldest are dropped and counted in <see cref="DroppedLines"/>.</item>
/// </list>
/// A host reads whichever view it wants; the other fills up and then drops. Neither view ever makes
/// the guest wait for the host: a guest cannot grow host memory without bound, and a host that
/// never reads cannot stall a guest (as xenconsoled's default <c>--overflow-data=discard</c>).
/// Input goes the other way through <see cref="Input"/>: the backend moves it into the ring's
/// <c>in</c> half as the guest makes room, and the host's <c>FlushAsync</c> waits while more than
/// <see cref="InputBufferBytes"/> are still waiting, so no input byte is lost.
/// </summary>
public sealed class DomainConsole
{
    /// <summary>A partial line is flushed as a line once it reaches this length.</summary>
    public const int MaxLineBytes = 4096;

    /// <summary>Input bytes the host may have written and the guest not yet taken before <c>Input.FlushAsync</c> waits.</summary>
    public const int InputBufferBytes = 4096;

    private readonly Channel<string> _lines;
    private readonly Lock _lock = new();
    private readonly byte[] _partial = new byte[MaxLineBytes];
    private readonly int _budgetBytes;
    private readonly Pipe _output;
    private readonly Pipe _input;
    private Task? _outputPaused;
    private bool _outputReaderGone;
    private bool _closed;
    private int _inputClosed;
    private int _partialLength;
    private long _bufferedBytes;
    private long _dropped;
    private long _droppedBytes;
    private long _bytesWritten;
    private long _inputDelivered;
    private string? _ringError;
    private IDisposable? _backend;

    public DomainConsole(int budgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(budgetBytes, 1);
        _budgetBytes = budgetBytes;
        _lines = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
        // The writer's continuation only completes the flush task that ends a pause: run it inline
        // when the host reads, so the pause ends as soon as the host has read half the budget.
        _output = new Pipe(new PipeOptions(writerScheduler: PipeScheduler.Inline, pauseWriterThreshold: budgetBytes, resumeWriterThreshold: Math.Max(1, budgetBytes / 2), useSynchronizationContext: false));
        _input = new Pipe(new PipeOptions(pauseWriterThreshold: InputBufferBytes, resumeWriterThreshold: InputBufferBytes / 2, useSynchronizationContext: false));
    }

    /// <summary>
    /// The guest's output bytes (early <c>console_io</c> output and ring output, in order of arrival),
    /// raw as the guest wrote them except that <c>console_io</c> keeps only what Xen keeps (printable
    /// ASCII, tab, newline). Completes after the last byte once the domain is destroyed.
    /// </summary>
    public PipeReader Output => _output.Reader;

    /// <summary>
    /// Input for the guest, moved into the console ring's <c>in</c> half as the guest consumes it.
    /// <c>FlushAsync</c> waits while <see cref="InputBufferBytes"/> or more wait for the guest; its
    /// result is completed once the domain is gone, and it throws once the console was stopped for a
    /// protocol error (<see cref="RingError"/>).
    /// </summary>
    public PipeWriter Input => _input.Writer;

    /// <summary>Lines dropped because the host read too slowly.</summary>
    public long DroppedLines => Interlocked.Read(ref _dropped);

    /// <summary>Output bytes dropped from <see cref="Output"/> because the host read too slowly.</summary>
    public long DroppedBytes => Interlocked.Read(ref _droppedBytes);

    /// <summary>Every byte the guest wrote (console_io and ring).</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <summary>Input bytes the backend has put into the guest's <c>in</c> ring.</summary>
    public long InputBytesDelivered => Interlocked.Read(ref _inputDelivered);

    /// <summary>Why the console backend stopped serving the ring (the guest broke the ring protocol), or null while it serves.</summary>
    public string? RingError => Volatile.Read(ref _ringError);

    /// <summary>Appends guest output to both views. Never blocks the guest.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }

            _bytesWritten += bytes.Length;
            WritePipeLocked(bytes);
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

    /// <summary>The backend serving the console ring (tests).</summary>
    internal IDisposable? Backend => Volatile.Read(ref _backend);

    /// <summary>The backend's end of <see cref="Input"/>.</summary>
    internal PipeReader InputReader => _input.Reader;

    internal void CountInputDelivered(int count) => Interlocked.Add(ref _inputDelivered, count);

    /// <summary>Hands the console its backend, stopped by <see cref="StopBackend"/>.</summary>
    internal void AttachBackend(IDisposable backend)
    {
        if (Interlocked.CompareExchange(ref _backend, backend, null) is not null)
        {
            throw new InvalidOperationException("the console already has a backend");
        }
    }

    /// <summary>Stops the backend (it drains the ring a last time and releases its page and port).</summary>
    internal void StopBackend() => Interlocked.Exchange(ref _backend, null)?.Dispose();

    /// <summary>
    /// The backend stopped serving the ring: recorded in <see cref="RingError"/>, and the host's
    /// input writer fails with it. Output through console_io goes on.
    /// </summary>
    internal void ReportRingError(string reason)
    {
        Interlocked.CompareExchange(ref _ringError, reason, null);
        CompleteInput(new InvalidOperationException($"the console ring was stopped: {reason}"));
    }

    /// <summary>Ends both views: flushes a partial line, completes readers, and refuses further input.</summary>
    internal void Close()
    {
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            if (_partialLength > 0)
            {
                EmitLocked();
            }

            _lines.Writer.TryComplete();
            _output.Writer.Complete();
        }

        CompleteInput(null);
    }

    private void CompleteInput(Exception? error)
    {
        if (Interlocked.Exchange(ref _inputClosed, 1) == 0)
        {
            _input.Reader.Complete(error);
        }
    }

    private void WritePipeLocked(ReadOnlySpan<byte> bytes)
    {
        if (_outputReaderGone || bytes.IsEmpty)
        {
            return;
        }

        // Paused: the host has ConsoleBufferBytes unread and has not yet read down to half of it.
        if (_outputPaused is { IsCompleted: false })
        {
            _droppedBytes += bytes.Length;
            return;
        }

        _outputPaused = null;
        try
        {
            var writer = _output.Writer;
            writer.Write(bytes);
            var flush = writer.FlushAsync();
            if (!flush.IsCompleted)
            {
                _outputPaused = flush.AsTask();
            }
            else if (flush.Result.IsCompleted)
            {
                _outputReaderGone = true; // the host completed Output: nobody will read it
            }
        }
        catch (Exception)
        {
            // The host completed Output with an exception of its own, which the flush rethrows:
            // nobody will read it; the guest is not to see the host's error.
            _outputReaderGone = true;
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
