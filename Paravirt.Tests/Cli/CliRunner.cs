using System.CommandLine;
using System.Text;
using Paravirt.Cli;

namespace Paravirt.Tests.Cli;

/// <summary>Runs <c>paravirt</c> commands in-process through the CLI's parser, with their own stdin, stdout and stderr.</summary>
internal static class CliRunner
{
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    public static Task<int> InvokeAsync(string[] args, TextWriter output, TextWriter error, Stream? stdin, CancellationToken ct) =>
        CliRoot.Build(stdin ?? Stream.Null).Parse(args).InvokeAsync(
            new InvocationConfiguration { Output = output, Error = error, ProcessTerminationTimeout = null }, ct);

    public static async Task<(int Exit, string Out, string Err)> RunAsync(string[] args, Stream? stdin = null)
    {
        var ct = TestContext.Current.CancellationToken;
        var output = new WatchedWriter();
        var error = new WatchedWriter();
        int exit;
        try
        {
            exit = await InvokeAsync(args, output, error, stdin, ct).WaitAsync(Bound, ct);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"paravirt {string.Join(' ', args)} did not finish within {Bound.TotalSeconds} s; stdout: {output}; stderr: {error}");
        }

        return (exit, output.ToString(), error.ToString());
    }
}

/// <summary>A thread-safe StringWriter whose text can be awaited.</summary>
internal sealed class WatchedWriter : StringWriter
{
    private readonly Lock _lock = new();
    private readonly List<(string Text, TaskCompletionSource Seen)> _waits = [];

    public override void Write(char value) => Append(() => base.Write(value));

    public override void Write(string? value) => Append(() => base.Write(value));

    public override void Write(char[] buffer, int index, int count) => Append(() => base.Write(buffer, index, count));

    public override void WriteLine(string? value) => Append(() => base.WriteLine(value));

    public override void WriteLine() => Append(base.WriteLine);

    public override Task WriteAsync(string? value)
    {
        Write(value);
        return Task.CompletedTask;
    }

    public override Task WriteLineAsync(string? value)
    {
        WriteLine(value);
        return Task.CompletedTask;
    }

    public override string ToString()
    {
        lock (_lock)
        {
            return base.ToString();
        }
    }

    /// <summary>Completes once the text contains <paramref name="text"/>; a bounded wait that says what it saw.</summary>
    public async Task WaitForAsync(string text, CancellationToken ct)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (GetStringBuilder().ToString().Contains(text, StringComparison.Ordinal))
            {
                return;
            }

            _waits.Add((text, seen));
        }

        try
        {
            await seen.Task.WaitAsync(CliRunner.Bound, ct);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"'{text}' was not written within {CliRunner.Bound.TotalSeconds} s; the text is: {this}");
        }
    }

    private void Append(Action write)
    {
        lock (_lock)
        {
            write();
            var all = GetStringBuilder().ToString();
            foreach (var w in _waits.Where(w => all.Contains(w.Text, StringComparison.Ordinal)).ToList())
            {
                w.Seen.TrySetResult();
                _waits.Remove(w);
            }
        }
    }
}
