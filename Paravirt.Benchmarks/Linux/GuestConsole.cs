using System.Text;
using Paravirt.Core.Domains;

namespace Paravirt.Benchmarks.Linux;

/// <summary>Collects a domain's console output as it comes (the Linux benchmarks read their guests' timestamps from it).</summary>
internal sealed class GuestConsole
{
    private readonly StringBuilder _seen = new();

    public GuestConsole(Domain domain) => Completed = Task.Run(async () =>
    {
        var output = domain.Console.Output;
        while (true)
        {
            var result = await output.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                lock (_seen)
                {
                    _seen.Append(Encoding.Latin1.GetString(segment.Span));
                }
            }

            output.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return;
            }
        }
    });

    /// <summary>Ends once the console is closed (the domain destroyed).</summary>
    public Task Completed { get; }

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

    /// <summary>The last <paramref name="characters"/> characters seen, for an error message.</summary>
    public string Tail(int characters = 3000)
    {
        var text = Text;
        return text[^Math.Min(characters, text.Length)..];
    }
}
