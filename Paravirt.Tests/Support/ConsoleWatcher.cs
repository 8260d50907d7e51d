using System.IO.Pipelines;
using System.Text;
using Paravirt.Core.Domains;

namespace Paravirt.Tests.Support;

/// <summary>
/// Collects a domain's console output as it comes and lets a test wait (bounded, woken by each
/// append, never by a timer) until it shows a given text: how the real-kernel tests follow a boot.
/// </summary>
internal sealed class ConsoleWatcher : IDisposable
{
    private readonly StringBuilder _seen = new();
    private readonly SemaphoreSlim _appended = new(0);

    public ConsoleWatcher(PipeReader output, CancellationToken ct) => Completed = CollectAsync(output, ct);

    /// <summary>The whole output, once the console is closed (the domain destroyed).</summary>
    public Task<string> Completed { get; }

    /// <summary>What has been seen so far.</summary>
    public string Text
    {
        get
        {
            lock (_seen)
            {
                return _seen.ToString();
            }
        }
    }

    /// <summary>Waits until the console shows <paramref name="wanted"/>, at most <paramref name="bound"/> or until <paramref name="domain"/> ends; fails saying what was seen.</summary>
    public async Task WaitForAsync(Domain domain, string wanted, TimeSpan bound, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + bound;
        while (!Text.Contains(wanted, StringComparison.Ordinal) && domain.Exit is null)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !await _appended.WaitAsync(left, ct))
            {
                break;
            }
        }

        Text.Should().Contain(wanted, $"the guest should print it within {bound.TotalMinutes} min (domain {domain.Exit?.ToString() ?? "running"}); the console so far:\n{Text}");
    }

    public void Dispose() => _appended.Dispose();

    private async Task<string> CollectAsync(PipeReader reader, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            foreach (var segment in result.Buffer)
            {
                lock (_seen)
                {
                    _seen.Append(Encoding.Latin1.GetString(segment.Span));
                }
            }

            reader.AdvanceTo(result.Buffer.End);
            _appended.Release();
            if (result.IsCompleted)
            {
                return Text;
            }
        }
    }
}
