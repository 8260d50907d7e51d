using Paravirt.Core.Abi;
using Paravirt.Core.Domains;

namespace Paravirt.Core.Hypercalls;

/// <summary>
/// <c>__HYPERVISOR_multicall(call_list, nr_calls)</c>: runs each <c>multicall_entry</c> in order and
/// stores its result in the entry's <c>result</c> field. Each entry is copied out once, just before
/// it runs (so an earlier entry may change a later one, as in Xen), through a cursor that holds the
/// list's page between entries instead of taking a frame reference per access. A multicall
/// inside a multicall answers -EINVAL in that entry (Xen forbids re-entry). The batch is bounded by the domain's limit; Xen preempts long batches with a continuation,
/// which a managed vCPU does not need.
/// </summary>
internal static unsafe class MulticallOp
{
    private static readonly int EntrySize = System.Runtime.InteropServices.Marshal.SizeOf<multicall_entry>();
    private static readonly int ResultOffset = (int)System.Runtime.InteropServices.Marshal.OffsetOf<multicall_entry>(nameof(multicall_entry.result));

    public static long Handle(Vcpu vcpu, ulong callList, ulong nrCalls, ulong a3, ulong a4, ulong a5)
    {
        if (vcpu.InMulticall)
        {
            return Result.Err(Errno.EINVAL);
        }

        var count = (uint)nrCalls;
        if (count > (uint)vcpu.Domain.Limits.MaxMulticallEntries)
        {
            return Result.Err(Errno.EINVAL);
        }

        var table = vcpu.Domain.Hypervisor.Hypercalls;
        var meterRow = vcpu.Domain.Meter.HypercallRow(vcpu.Id);
        var domain = vcpu.Domain;
        vcpu.InMulticall = true;
        var list = vcpu.OpenCursor();
        try
        {
            for (var i = 0u; i < count; i++)
            {
                var entryAddress = callList + (i * (ulong)EntrySize);
                if (!list.TryRead(entryAddress, out multicall_entry call))
                {
                    return Result.Err(Errno.EFAULT);
                }

                DomainMeter.CountHypercall(meterRow, call.op);
                var result = table.Invoke(vcpu, call.op, call.args[0], call.args[1], call.args[2], call.args[3], call.args[4]);
                if (!list.TryWrite(entryAddress + (ulong)ResultOffset, (ulong)result))
                {
                    return Result.Err(Errno.EFAULT);
                }

                if (!domain.IsAlive)
                {
                    break; // an entry shut the domain down
                }
            }
        }
        finally
        {
            list.Dispose();
            vcpu.InMulticall = false;
        }

        return Result.Ok;
    }
}
