using Iced.Intel;

namespace Paravirt.Core.Cpu.Interpreter;

// SSE/SSE2: the moves and integer/float operations compilers emit for memcpy, memset and simple
// scalar float code.
public sealed partial class X86Interpreter
{
    private void ExecuteSse(in Instruction ins)
    {
        switch (ins.Mnemonic)
        {
            default:
                throw Unimplemented(in ins);
        }
    }
}
