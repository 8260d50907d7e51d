using System.Runtime.ExceptionServices;
using Paravirt.Core.Abi;
using Paravirt.Core.Domains;
using Paravirt.Tests.Domains;

namespace Paravirt.Tests.Support;

/// <summary>Runs a <see cref="TestBlkFront"/> body in a managed domain and brings its outcome back to the test.</summary>
public static class BlockGuest
{
    /// <summary><paramref name="bytes"/> bytes of a seeded pseudo-random pattern: the data block tests write and check.</summary>
    public static byte[] Pattern(int bytes, int seed)
    {
        var b = new byte[bytes];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>A domain big enough for a full ring of 11-page requests.</summary>
    public static DomainConfig Config(string name) => new() { Name = $"{name}-{Guid.NewGuid():N}", MemoryMiB = 8 };

    /// <summary>Starts <paramref name="domain"/> running <paramref name="body"/> against its vbd <paramref name="devid"/>; the guest powers off when the body returns.</summary>
    public static Task<Exception?> Start(Domain domain, Action<TestBlkFront> body, uint devid = 51712) =>
        RawGuest.Start(domain, g => new TestBlkFront(g, devid), body);

    /// <summary>Runs the body to its end (bounded) and rethrows what failed inside the guest.</summary>
    public static Task<DomainExit> RunAsync(Domain domain, Action<TestBlkFront> body, uint devid = 51712) =>
        RawGuest.RunAsync(domain, g => new TestBlkFront(g, devid), body);
}
