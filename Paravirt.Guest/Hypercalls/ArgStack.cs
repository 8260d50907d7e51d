using Paravirt.Core.Cpu;

namespace Paravirt.Guest;

/// <summary>
/// A vCPU's scratch area for hypercall argument structs, used as a stack: a C kernel keeps these
/// on its kernel stack, so an upcall that arrives on the way out of a hypercall (and makes
/// hypercalls of its own) never overwrites the arguments the interrupted code is about to read
/// back. Frames are 16-byte aligned.
/// </summary>
internal sealed class ArgStack(IGuestPhysicalMemory memory, ulong baseAddress, int size)
{
    private int _top;

    public IGuestPhysicalMemory Memory { get; } = memory;

    public ulong Base { get; } = baseAddress;

    public int Size { get; } = size;

    /// <summary>Space still free.</summary>
    public int Free => Size - _top;

    /// <summary>Takes <paramref name="bytes"/> bytes; dispose the frame to give them back (LIFO).</summary>
    public ArgFrame Push(int bytes)
    {
        var rounded = (bytes + 15) & ~15;
        if (rounded > Size - _top)
        {
            throw new InvalidOperationException($"hypercall argument area exhausted: {bytes} bytes wanted, {Size - _top} of {Size} free");
        }

        var frame = new ArgFrame(this, Base + (ulong)_top, _top);
        _top += rounded;
        return frame;
    }

    internal void Pop(int previousTop) => _top = previousTop;
}

/// <summary>A frame of an <see cref="ArgStack"/>: <see cref="Address"/> is guest memory for one hypercall's arguments.</summary>
internal readonly ref struct ArgFrame
{
    private readonly ArgStack _stack;
    private readonly int _previousTop;

    internal ArgFrame(ArgStack stack, ulong address, int previousTop)
    {
        _stack = stack;
        Address = address;
        _previousTop = previousTop;
    }

    public ulong Address { get; }

    public void Dispose() => _stack.Pop(_previousTop);
}
