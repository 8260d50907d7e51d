using System.Runtime.InteropServices;
using System.Text;
using Paravirt.Core.Abi;
using Paravirt.Core.Cpu;
using XenVersionConsts = Paravirt.Core.Abi.XenVersion;

namespace Paravirt.Guest;

/// <summary>An entry of the E820 memory map returned by XENMEM_memory_map (20 bytes each, packed, as INT 15h E820 lays them out).</summary>
/// <param name="Address">Start of the range.</param>
/// <param name="Size">Length in bytes.</param>
/// <param name="Type">1 = RAM, 2 = reserved, ...</param>
public readonly record struct E820Range(ulong Address, ulong Size, uint Type);

/// <summary>
/// Typed wrappers for the hypercalls Paravirt implements, one method per hypercall and sub-op, as
/// a PV kernel's <c>hypercall.h</c> has them. Each writes its Xen-layout argument struct into this
/// vCPU's argument area in guest memory, passes the guest address in the x86-64 PV registers
/// (rdi, rsi, rdx, r10, r8) through <see cref="IHypercallGate.Hypercall"/>, and reads OUT fields
/// back. Results are Xen's: 0 or a non-negative value on success, a negative Xen errno
/// (<see cref="Errno"/>) on failure. Nothing here throws for a guest-visible error.
/// One instance per vCPU, used only on that vCPU.
/// </summary>
public sealed class Hypercalls
{
    private readonly ArgStack _args;

    internal Hypercalls(IGuestCpu cpu, ArgStack args)
    {
        Cpu = cpu;
        _args = args;
    }

    /// <summary>The vCPU these calls are made on.</summary>
    public IGuestCpu Cpu { get; }

    private IGuestPhysicalMemory Mem => Cpu.Memory;

    /// <summary>A raw hypercall: number and the five register arguments.</summary>
    public long Raw(int nr, ulong a1 = 0, ulong a2 = 0, ulong a3 = 0, ulong a4 = 0, ulong a5 = 0) =>
        Cpu.Hypercall((ulong)nr, a1, a2, a3, a4, a5);

    /// <summary>Writes <paramref name="arg"/> to the argument area, calls <c>nr(cmd, &amp;arg, extra)</c>, reads it back.</summary>
    private long WithArg<T>(int nr, ulong cmd, ref T arg, ulong extra = 0)
        where T : unmanaged
    {
        using var f = _args.Push(Marshal.SizeOf<T>());
        Mem.Write(f.Address, arg);
        var rc = Raw(nr, cmd, f.Address, extra);
        arg = Mem.Read<T>(f.Address);
        return rc;
    }

    /// <summary>As <see cref="WithArg{T}"/> for an array of <paramref name="args"/> (grant ops, multicall): count in the third register.</summary>
    private long WithArray<T>(int nr, ulong cmd, Span<T> args, bool countFirst = false)
        where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(args);
        using var f = _args.Push(bytes.Length);
        Mem.Write(f.Address, bytes);
        var rc = countFirst ? Raw(nr, f.Address, (ulong)args.Length) : Raw(nr, cmd, f.Address, (ulong)args.Length);
        Mem.Read(f.Address, bytes);
        return rc;
    }

    // ---------------------------------------------------------------- xen_version (17)

    /// <summary>XENVER_version: (major &lt;&lt; 16) | minor.</summary>
    public long XenVersion() => Raw(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_version);

    /// <summary>XENVER_extraversion, _capabilities, _changeset or _commandline: a NUL-terminated string of the sub-op's size.</summary>
    public long XenVersionString(int cmd, out string value)
    {
        var size = cmd switch
        {
            XenVersionConsts.XENVER_extraversion => XenVersionConsts.XEN_EXTRAVERSION_LEN,
            XenVersionConsts.XENVER_capabilities => XenVersionConsts.XEN_CAPABILITIES_INFO_LEN,
            XenVersionConsts.XENVER_changeset => XenVersionConsts.XEN_CHANGESET_INFO_LEN,
            XenVersionConsts.XENVER_commandline => 1024,
            _ => throw new ArgumentOutOfRangeException(nameof(cmd), cmd, "not a string sub-op of xen_version"),
        };
        using var f = _args.Push(size);
        var rc = Raw(Xen.__HYPERVISOR_xen_version, (ulong)cmd, f.Address);
        Span<byte> buffer = stackalloc byte[size];
        Mem.Read(f.Address, buffer);
        var end = buffer.IndexOf((byte)0);
        value = rc < 0 ? "" : Encoding.UTF8.GetString(end < 0 ? buffer : buffer[..end]);
        return rc;
    }

    /// <summary>XENVER_compile_info.</summary>
    public long XenVersionCompileInfo(out xen_compile_info info)
    {
        info = default;
        return WithArg(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_compile_info, ref info);
    }

    /// <summary>XENVER_platform_parameters: <c>virt_start</c>.</summary>
    public long XenVersionPlatformParameters(out ulong virtStart)
    {
        var p = default(xen_platform_parameters);
        var rc = WithArg(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_platform_parameters, ref p);
        virtStart = p.virt_start;
        return rc;
    }

    /// <summary>XENVER_get_features: submap <paramref name="index"/> of the XENFEAT_* bitmap.</summary>
    public long GetFeatures(uint index, out uint submap)
    {
        var fi = new xen_feature_info { submap_idx = index };
        var rc = WithArg(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_get_features, ref fi);
        submap = fi.submap;
        return rc;
    }

    /// <summary>XENVER_pagesize.</summary>
    public long XenVersionPageSize() => Raw(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_pagesize);

    /// <summary>XENVER_guest_handle: the domain's 16-byte UUID.</summary>
    public long XenVersionGuestHandle(Span<byte> handle16)
    {
        using var f = _args.Push(16);
        var rc = Raw(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_guest_handle, f.Address);
        Mem.Read(f.Address, handle16[..16]);
        return rc;
    }

    /// <summary>XENVER_build_id into <paramref name="buffer"/>; returns the id's length.</summary>
    public long XenVersionBuildId(Span<byte> buffer)
    {
        using var f = _args.Push(4 + buffer.Length);
        Mem.Write(f.Address, (uint)buffer.Length);
        var rc = Raw(Xen.__HYPERVISOR_xen_version, XenVersionConsts.XENVER_build_id, f.Address);
        if (rc > 0)
        {
            Mem.Read(f.Address + 4, buffer[..(int)Math.Min(rc, buffer.Length)]);
        }

        return rc;
    }

    // ---------------------------------------------------------------- console_io (18)

    /// <summary>CONSOLEIO_write: <paramref name="text"/> to the hypervisor's console (the emergency console; Xen keeps printable ASCII).</summary>
    public long ConsoleWrite(ReadOnlySpan<byte> text)
    {
        var done = 0;
        while (done < text.Length)
        {
            var n = Math.Min(text.Length - done, Math.Min(1024, _args.Free - 16));
            using var f = _args.Push(n);
            Mem.Write(f.Address, text.Slice(done, n));
            var rc = Raw(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_write, (ulong)n, f.Address);
            if (rc < 0)
            {
                return rc;
            }

            done += n;
        }

        return 0;
    }

    /// <summary>CONSOLEIO_read (the hardware domain's; a domU gets -EPERM).</summary>
    public long ConsoleRead(Span<byte> buffer)
    {
        using var f = _args.Push(buffer.Length);
        var rc = Raw(Xen.__HYPERVISOR_console_io, Xen.CONSOLEIO_read, (ulong)buffer.Length, f.Address);
        if (rc > 0)
        {
            Mem.Read(f.Address, buffer[..(int)Math.Min(rc, buffer.Length)]);
        }

        return rc;
    }

    // ---------------------------------------------------------------- sched_op (29)

    /// <summary>SCHEDOP_yield.</summary>
    public long SchedYield() => Raw(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_yield);

    /// <summary>SCHEDOP_block: clears evtchn_upcall_mask and sleeps until an event is pending (the PV <c>sti; hlt</c>).</summary>
    public long SchedBlock() => Raw(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_block);

    /// <summary>SCHEDOP_shutdown with a <c>SHUTDOWN_*</c> reason. Does not return for poweroff/reboot/crash.</summary>
    public long SchedShutdown(uint reason)
    {
        var s = new sched_shutdown { reason = reason };
        return WithArg(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown, ref s);
    }

    /// <summary>SCHEDOP_shutdown_code: latch the code a later shutdown reports.</summary>
    public long SchedShutdownCode(uint reason)
    {
        var s = new sched_shutdown { reason = reason };
        return WithArg(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_shutdown_code, ref s);
    }

    /// <summary>SCHEDOP_poll: sleeps until one of <paramref name="ports"/> is pending or system time reaches <paramref name="timeoutNs"/> (0 = none).</summary>
    public long SchedPoll(ReadOnlySpan<uint> ports, ulong timeoutNs)
    {
        var portBytes = MemoryMarshal.AsBytes(ports);
        using var list = _args.Push(portBytes.Length);
        Mem.Write(list.Address, portBytes);
        var p = new sched_poll { ports = list.Address, nr_ports = (uint)ports.Length, timeout = timeoutNs };
        return WithArg(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_poll, ref p);
    }

    /// <summary>SCHEDOP_remote_shutdown (needs privilege over the other domain).</summary>
    public long SchedRemoteShutdown(ushort domid, uint reason)
    {
        var r = new sched_remote_shutdown { domain_id = domid, reason = reason };
        return WithArg(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_remote_shutdown, ref r);
    }

    /// <summary>SCHEDOP_watchdog: id 0 creates (returns the id), timeout 0 destroys, else pokes.</summary>
    public long SchedWatchdog(uint id, uint timeoutSeconds)
    {
        var w = new sched_watchdog { id = id, timeout = timeoutSeconds };
        return WithArg(Xen.__HYPERVISOR_sched_op, Sched.SCHEDOP_watchdog, ref w);
    }

    // ---------------------------------------------------------------- set_timer_op (15)

    /// <summary>set_timer_op: this vCPU's single-shot timer at absolute system time <paramref name="deadlineNs"/> (0 cancels); it raises VIRQ_TIMER.</summary>
    public long SetTimerOp(ulong deadlineNs) => Raw(Xen.__HYPERVISOR_set_timer_op, deadlineNs);

    // ---------------------------------------------------------------- vcpu_op (24)

    private long VcpuOpCall(int cmd, int vcpu, ulong arg = 0) => Raw(Xen.__HYPERVISOR_vcpu_op, (ulong)cmd, (ulong)vcpu, arg);

    private long VcpuOpCall<T>(int cmd, int vcpu, ref T arg)
        where T : unmanaged
    {
        using var f = _args.Push(Marshal.SizeOf<T>());
        Mem.Write(f.Address, arg);
        var rc = VcpuOpCall(cmd, vcpu, f.Address);
        arg = Mem.Read<T>(f.Address);
        return rc;
    }

    /// <summary>VCPUOP_initialise: give a down vCPU its first context.</summary>
    public long VcpuInitialise(int vcpu, in vcpu_guest_context context)
    {
        var c = context;
        return VcpuOpCall(VcpuOp.VCPUOP_initialise, vcpu, ref c);
    }

    /// <summary>VCPUOP_up.</summary>
    public long VcpuUp(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_up, vcpu);

    /// <summary>VCPUOP_down.</summary>
    public long VcpuDown(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_down, vcpu);

    /// <summary>VCPUOP_is_up: 1 if up, 0 if down.</summary>
    public long VcpuIsUp(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_is_up, vcpu);

    /// <summary>VCPUOP_get_runstate_info.</summary>
    public long VcpuGetRunstateInfo(int vcpu, out vcpu_runstate_info info)
    {
        info = default;
        return VcpuOpCall(VcpuOp.VCPUOP_get_runstate_info, vcpu, ref info);
    }

    /// <summary>VCPUOP_register_runstate_memory_area at guest address <paramref name="address"/> (0 stops updates).</summary>
    public long VcpuRegisterRunstateArea(int vcpu, ulong address)
    {
        var a = new vcpu_register_runstate_memory_area { addr = new() { v = address } };
        return VcpuOpCall(VcpuOp.VCPUOP_register_runstate_memory_area, vcpu, ref a);
    }

    /// <summary>VCPUOP_set_periodic_timer.</summary>
    public long VcpuSetPeriodicTimer(int vcpu, ulong periodNs)
    {
        var t = new vcpu_set_periodic_timer { period_ns = periodNs };
        return VcpuOpCall(VcpuOp.VCPUOP_set_periodic_timer, vcpu, ref t);
    }

    /// <summary>VCPUOP_stop_periodic_timer.</summary>
    public long VcpuStopPeriodicTimer(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_stop_periodic_timer, vcpu);

    /// <summary>VCPUOP_set_singleshot_timer (calling vCPU only).</summary>
    public long VcpuSetSingleshotTimer(int vcpu, ulong timeoutAbsNs, uint flags = 0)
    {
        var t = new vcpu_set_singleshot_timer { timeout_abs_ns = timeoutAbsNs, flags = flags };
        return VcpuOpCall(VcpuOp.VCPUOP_set_singleshot_timer, vcpu, ref t);
    }

    /// <summary>VCPUOP_stop_singleshot_timer (calling vCPU only).</summary>
    public long VcpuStopSingleshotTimer(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_stop_singleshot_timer, vcpu);

    /// <summary>VCPUOP_register_vcpu_info: move the vCPU's vcpu_info into frame <paramref name="frame"/> (GFN or MFN) at <paramref name="offset"/>.</summary>
    public long VcpuRegisterVcpuInfo(int vcpu, ulong frame, uint offset)
    {
        var r = new vcpu_register_vcpu_info { mfn = frame, offset = offset };
        return VcpuOpCall(VcpuOp.VCPUOP_register_vcpu_info, vcpu, ref r);
    }

    /// <summary>VCPUOP_register_vcpu_time_memory_area: a secondary vcpu_time_info copy at <paramref name="address"/>.</summary>
    public long VcpuRegisterTimeArea(int vcpu, ulong address)
    {
        var a = new vcpu_register_time_memory_area { addr = new() { v = address } };
        return VcpuOpCall(VcpuOp.VCPUOP_register_vcpu_time_memory_area, vcpu, ref a);
    }

    /// <summary>VCPUOP_send_nmi.</summary>
    public long VcpuSendNmi(int vcpu) => VcpuOpCall(VcpuOp.VCPUOP_send_nmi, vcpu);

    /// <summary>VCPUOP_get_physid (hardware domain only: -EINVAL for a domU).</summary>
    public long VcpuGetPhysId(int vcpu, out ulong physId)
    {
        var p = default(vcpu_get_physid);
        var rc = VcpuOpCall(VcpuOp.VCPUOP_get_physid, vcpu, ref p);
        physId = p.phys_id;
        return rc;
    }

    // ---------------------------------------------------------------- memory_op (12)

    /// <summary>XENMEM_add_to_physmap (translated guests): make page <paramref name="idx"/> of <paramref name="space"/> appear at <paramref name="gpfn"/>.</summary>
    public long AddToPhysmap(uint space, ulong idx, ulong gpfn, ushort size = 0)
    {
        var x = new xen_add_to_physmap { domid = Xen.DOMID_SELF, space = space, idx = idx, gpfn = gpfn, size = size };
        return WithArg(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_add_to_physmap, ref x);
    }

    /// <summary>XENMEM_remove_from_physmap (translated guests).</summary>
    public long RemoveFromPhysmap(ulong gpfn)
    {
        var x = new xen_remove_from_physmap { domid = Xen.DOMID_SELF, gpfn = gpfn };
        return WithArg(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_remove_from_physmap, ref x);
    }

    private long Reservation(int op, Span<ulong> extents, uint order)
    {
        var bytes = MemoryMarshal.AsBytes(extents);
        using var list = _args.Push(bytes.Length);
        Mem.Write(list.Address, bytes);
        var r = new xen_memory_reservation { extent_start = list.Address, nr_extents = (ulong)extents.Length, extent_order = order, domid = Xen.DOMID_SELF };
        var rc = WithArg(Xen.__HYPERVISOR_memory_op, (ulong)op, ref r);
        Mem.Read(list.Address, bytes);
        return rc;
    }

    /// <summary>XENMEM_increase_reservation: returns extents done; classic PV gets their MFNs in <paramref name="frames"/>.</summary>
    public long IncreaseReservation(Span<ulong> frames, uint order = 0) => Reservation(XenMem.XENMEM_increase_reservation, frames, order);

    /// <summary>XENMEM_decrease_reservation: gives back the pages named in <paramref name="frames"/> (GFNs translated, MFNs classic); returns extents done.</summary>
    public long DecreaseReservation(Span<ulong> frames, uint order = 0) => Reservation(XenMem.XENMEM_decrease_reservation, frames, order);

    /// <summary>XENMEM_populate_physmap: backs the GPFNs in <paramref name="gpfns"/> with RAM (classic PV gets the MFNs written back); returns extents done.</summary>
    public long PopulatePhysmap(Span<ulong> gpfns, uint order = 0) => Reservation(XenMem.XENMEM_populate_physmap, gpfns, order);

    private long MemoryDomainStat(int op)
    {
        var d = new xen_memory_domain { domid = Xen.DOMID_SELF };
        return WithArg(Xen.__HYPERVISOR_memory_op, (ulong)op, ref d);
    }

    /// <summary>XENMEM_current_reservation: pages the domain has.</summary>
    public long CurrentReservation() => MemoryDomainStat(XenMem.XENMEM_current_reservation);

    /// <summary>XENMEM_maximum_reservation: pages the domain may have.</summary>
    public long MaximumReservation() => MemoryDomainStat(XenMem.XENMEM_maximum_reservation);

    /// <summary>XENMEM_maximum_gpfn.</summary>
    public long MaximumGpfn() => MemoryDomainStat(XenMem.XENMEM_maximum_gpfn);

    /// <summary>XENMEM_maximum_ram_page: one past the highest machine frame.</summary>
    public long MaximumRamPage() => Raw(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_maximum_ram_page);

    /// <summary>XENMEM_machphys_mapping: where the M2P table is in a PV guest's address space.</summary>
    public long MachphysMapping(out xen_machphys_mapping mapping)
    {
        mapping = default;
        return WithArg(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_machphys_mapping, ref mapping);
    }

    /// <summary>XENMEM_memory_map: the domain's pseudo-physical E820 map (at most <paramref name="maxEntries"/> entries).</summary>
    public long MemoryMap(out E820Range[] ranges, int maxEntries = 32)
    {
        const int EntrySize = 20;
        ranges = [];
        using var buffer = _args.Push(maxEntries * EntrySize);
        var map = new xen_memory_map { nr_entries = (uint)maxEntries, buffer = buffer.Address };
        var rc = WithArg(Xen.__HYPERVISOR_memory_op, XenMem.XENMEM_memory_map, ref map);
        if (rc < 0)
        {
            return rc;
        }

        var n = (int)Math.Min(map.nr_entries, (uint)maxEntries);
        var bytes = new byte[n * EntrySize];
        Mem.Read(buffer.Address, bytes);
        ranges = new E820Range[n];
        for (var i = 0; i < n; i++)
        {
            var e = bytes.AsSpan(i * EntrySize);
            ranges[i] = new E820Range(BitConverter.ToUInt64(e), BitConverter.ToUInt64(e[8..]), BitConverter.ToUInt32(e[16..]));
        }

        return rc;
    }

    // ---------------------------------------------------------------- vm_assist (21)

    /// <summary>vm_assist(VMASST_CMD_enable/disable, VMASST_TYPE_*).</summary>
    public long VmAssist(uint cmd, uint type) => Raw(Xen.__HYPERVISOR_vm_assist, cmd, type);

    // ---------------------------------------------------------------- callback_op (30)

    /// <summary>CALLBACKOP_register: <paramref name="type"/> (CALLBACKTYPE_*) at guest address <paramref name="address"/>.</summary>
    public long RegisterCallback(ushort type, ulong address, ushort flags = 0)
    {
        var r = new callback_register { type = type, flags = flags, address = address };
        return WithArg(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_register, ref r);
    }

    /// <summary>CALLBACKOP_unregister (only the NMI callback can be).</summary>
    public long UnregisterCallback(ushort type)
    {
        var u = new callback_unregister { type = type };
        return WithArg(Xen.__HYPERVISOR_callback_op, Callback.CALLBACKOP_unregister, ref u);
    }

    // ---------------------------------------------------------------- multicall (13)

    /// <summary>multicall: runs <paramref name="calls"/> in order; each entry's <c>result</c> is written back.</summary>
    public long Multicall(Span<multicall_entry> calls) => WithArray(Xen.__HYPERVISOR_multicall, 0, calls, countFirst: true);

    // ---------------------------------------------------------------- event_channel_op (32)

    private long Evtchn<T>(int cmd, ref T arg)
        where T : unmanaged => WithArg(Xen.__HYPERVISOR_event_channel_op, (ulong)cmd, ref arg);

    /// <summary>EVTCHNOP_alloc_unbound: a new local port that <paramref name="remoteDomain"/> may bind.</summary>
    public long EvtchnAllocUnbound(ushort remoteDomain, out uint port)
    {
        var a = new evtchn_alloc_unbound { dom = Xen.DOMID_SELF, remote_dom = remoteDomain };
        var rc = Evtchn(EventChannel.EVTCHNOP_alloc_unbound, ref a);
        port = a.port;
        return rc;
    }

    /// <summary>EVTCHNOP_bind_interdomain: connect a new local port to <paramref name="remotePort"/> of <paramref name="remoteDomain"/>.</summary>
    public long EvtchnBindInterdomain(ushort remoteDomain, uint remotePort, out uint localPort)
    {
        var b = new evtchn_bind_interdomain { remote_dom = remoteDomain, remote_port = remotePort };
        var rc = Evtchn(EventChannel.EVTCHNOP_bind_interdomain, ref b);
        localPort = b.local_port;
        return rc;
    }

    /// <summary>EVTCHNOP_bind_virq: VIRQ_* on <paramref name="vcpu"/>.</summary>
    public long EvtchnBindVirq(uint virq, uint vcpu, out uint port)
    {
        var b = new evtchn_bind_virq { virq = virq, vcpu = vcpu };
        var rc = Evtchn(EventChannel.EVTCHNOP_bind_virq, ref b);
        port = b.port;
        return rc;
    }

    /// <summary>EVTCHNOP_bind_ipi: a port whose sends interrupt <paramref name="vcpu"/>.</summary>
    public long EvtchnBindIpi(uint vcpu, out uint port)
    {
        var b = new evtchn_bind_ipi { vcpu = vcpu };
        var rc = Evtchn(EventChannel.EVTCHNOP_bind_ipi, ref b);
        port = b.port;
        return rc;
    }

    /// <summary>EVTCHNOP_close.</summary>
    public long EvtchnClose(uint port)
    {
        var c = new evtchn_close { port = port };
        return Evtchn(EventChannel.EVTCHNOP_close, ref c);
    }

    /// <summary>EVTCHNOP_send: notify the other end of <paramref name="port"/>.</summary>
    public long EvtchnSend(uint port)
    {
        var s = new evtchn_send { port = port };
        return Evtchn(EventChannel.EVTCHNOP_send, ref s);
    }

    /// <summary>EVTCHNOP_status of one of our ports.</summary>
    public long EvtchnStatus(uint port, out evtchn_status status)
    {
        status = new evtchn_status { dom = Xen.DOMID_SELF, port = port };
        return Evtchn(EventChannel.EVTCHNOP_status, ref status);
    }

    /// <summary>EVTCHNOP_bind_vcpu: deliver <paramref name="port"/> to <paramref name="vcpu"/>.</summary>
    public long EvtchnBindVcpu(uint port, uint vcpu)
    {
        var b = new evtchn_bind_vcpu { port = port, vcpu = vcpu };
        return Evtchn(EventChannel.EVTCHNOP_bind_vcpu, ref b);
    }

    /// <summary>EVTCHNOP_unmask: Xen clears the mask and re-raises a pending event.</summary>
    public long EvtchnUnmask(uint port)
    {
        var u = new evtchn_unmask { port = port };
        return Evtchn(EventChannel.EVTCHNOP_unmask, ref u);
    }

    /// <summary>EVTCHNOP_reset: close all our ports (and leave the FIFO ABI).</summary>
    public long EvtchnReset()
    {
        var r = new evtchn_reset { dom = Xen.DOMID_SELF };
        return Evtchn(EventChannel.EVTCHNOP_reset, ref r);
    }

    /// <summary>EVTCHNOP_init_control: switch to the FIFO ABI with <paramref name="vcpu"/>'s control block in frame <paramref name="frame"/>.</summary>
    public long EvtchnInitControl(ulong frame, uint offset, uint vcpu, out byte linkBits)
    {
        var c = new evtchn_init_control { control_gfn = frame, offset = offset, vcpu = vcpu };
        var rc = Evtchn(EventChannel.EVTCHNOP_init_control, ref c);
        linkBits = c.link_bits;
        return rc;
    }

    /// <summary>EVTCHNOP_expand_array: one more page of FIFO event words.</summary>
    public long EvtchnExpandArray(ulong frame)
    {
        var e = new evtchn_expand_array { array_gfn = frame };
        return Evtchn(EventChannel.EVTCHNOP_expand_array, ref e);
    }

    /// <summary>EVTCHNOP_set_priority (FIFO).</summary>
    public long EvtchnSetPriority(uint port, uint priority)
    {
        var p = new evtchn_set_priority { port = port, priority = priority };
        return Evtchn(EventChannel.EVTCHNOP_set_priority, ref p);
    }

    // ---------------------------------------------------------------- grant_table_op (20)

    /// <summary>grant_table_op(<paramref name="cmd"/>, ops, count) on an array of op structs; each op's status is written back.</summary>
    public long GrantTableOp<T>(int cmd, Span<T> ops)
        where T : unmanaged => WithArray(Xen.__HYPERVISOR_grant_table_op, (ulong)cmd, ops);

    /// <summary>GNTTABOP_setup_table: grow to <paramref name="frames"/>.Length frames and get their numbers (GFNs, ~0 when not placed, if translated; MFNs for classic PV).</summary>
    public long GnttabSetupTable(Span<ulong> frames, out short status)
    {
        var bytes = MemoryMarshal.AsBytes(frames);
        using var list = _args.Push(bytes.Length);
        var op = new gnttab_setup_table { dom = Xen.DOMID_SELF, nr_frames = (uint)frames.Length, frame_list = list.Address };
        var rc = WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_setup_table, ref op, 1);
        status = op.status;
        Mem.Read(list.Address, bytes);
        return rc;
    }

    /// <summary>GNTTABOP_query_size.</summary>
    public long GnttabQuerySize(out uint frames, out uint maxFrames, out short status)
    {
        var op = new gnttab_query_size { dom = Xen.DOMID_SELF };
        var rc = WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_query_size, ref op, 1);
        (frames, maxFrames, status) = (op.nr_frames, op.max_nr_frames, op.status);
        return rc;
    }

    /// <summary>GNTTABOP_set_version (1 or 2); <paramref name="current"/> is the version in effect afterwards.</summary>
    public long GnttabSetVersion(uint version, out uint current)
    {
        var op = new gnttab_set_version { version = version };
        var rc = WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_set_version, ref op, 1);
        current = op.version;
        return rc;
    }

    /// <summary>GNTTABOP_get_version.</summary>
    public long GnttabGetVersion(out uint version)
    {
        var op = new gnttab_get_version { dom = Xen.DOMID_SELF };
        var rc = WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_get_version, ref op, 1);
        version = op.version;
        return rc;
    }

    /// <summary>GNTTABOP_get_status_frames (v2).</summary>
    public long GnttabGetStatusFrames(Span<ulong> frames, out short status)
    {
        var bytes = MemoryMarshal.AsBytes(frames);
        using var list = _args.Push(bytes.Length);
        var op = new gnttab_get_status_frames { dom = Xen.DOMID_SELF, nr_frames = (uint)frames.Length, frame_list = list.Address };
        var rc = WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_get_status_frames, ref op, 1);
        status = op.status;
        Mem.Read(list.Address, bytes);
        return rc;
    }

    /// <summary>GNTTABOP_map_grant_ref (one op).</summary>
    public long GnttabMapGrantRef(ref gnttab_map_grant_ref op) => WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_map_grant_ref, ref op, 1);

    /// <summary>GNTTABOP_unmap_grant_ref (one op).</summary>
    public long GnttabUnmapGrantRef(ref gnttab_unmap_grant_ref op) => WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_unmap_grant_ref, ref op, 1);

    /// <summary>GNTTABOP_copy on a batch.</summary>
    public long GnttabCopy(Span<gnttab_copy> ops) => GrantTableOp(GrantTable.GNTTABOP_copy, ops);

    /// <summary>GNTTABOP_swap_grant_ref (one op).</summary>
    public long GnttabSwapGrantRef(ref gnttab_swap_grant_ref op) => WithArg(Xen.__HYPERVISOR_grant_table_op, GrantTable.GNTTABOP_swap_grant_ref, ref op, 1);
}
