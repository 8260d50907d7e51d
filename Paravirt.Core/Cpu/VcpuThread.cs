using Paravirt.Core.Domains;

namespace Paravirt.Core.Cpu;

/// <summary>
/// The host thread of one vCPU, whatever engine runs its guest code: started running, it leaves
/// guest code quietly when the domain stops (<see cref="VcpuExitException"/>), crashes only its own
/// domain if the engine throws, and always leaves the vCPU offline and down with no thread.
/// </summary>
internal static class VcpuThread
{
    public static Thread Start(Domain domain, Vcpu vcpu, string name, Action body, Func<Exception, string> crashReason)
    {
        var thread = new Thread(() => Run(domain, vcpu, body, crashReason))
        {
            IsBackground = true,
            Name = name,
        };
        vcpu.SetRunstate(Vcpu.RUNSTATE_running);
        vcpu.UpdateTimeInfo();
        thread.Start();
        return thread;
    }

    private static void Run(Domain domain, Vcpu vcpu, Action body, Func<Exception, string> crashReason)
    {
        try
        {
            body();
        }
        catch (VcpuExitException)
        {
            // The domain shut down, crashed or is being destroyed: the vCPU leaves guest code.
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            domain.Crash(crashReason(e));
        }
        finally
        {
            vcpu.SetRunstate(Vcpu.RUNSTATE_offline);
            lock (domain.VcpuLock)
            {
                // A secondary entry that returns leaves the vCPU down; VCPUOP_up enters it afresh.
                vcpu.HasThread = false;
                vcpu.SetDown(true);
            }
        }
    }
}
