using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Network;

/// <summary>
/// A vif's control ring (io/netif.h "Control ring", netback's <c>xenvif_ctrl_action</c>): the
/// frontend sets how received frames are hashed to its queues. Requests are copied out once and
/// answered in order with netback's statuses: the hash algorithm (none or Toeplitz), the hash types
/// (only with an algorithm), a key of up to 40 bytes and a mapping table of up to 128 queue numbers
/// (each below the number of queues), both read by grant copy from the start of a granted page.
/// Anything else, grant-mapping requests included, is XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED. A
/// request producer more than a ring ahead is fatal, as on the data rings.
/// </summary>
internal sealed class NetifControlRing
{
    private readonly NetifConnection _vif;
    private readonly HostGrantMapping _mapping;
    private readonly HostEventChannel _channel;
    private readonly BackRing<xen_netif_ctrl_request, xen_netif_ctrl_response> _ring;
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;

    public NetifControlRing(NetifConnection vif, HostGrantMapping mapping, HostEventChannel channel)
    {
        _vif = vif;
        _mapping = mapping;
        _channel = channel;
        _ring = new BackRing<xen_netif_ctrl_request, xen_netif_ctrl_response>(new Block.GrantPageMemory(mapping).Memory);
    }

    public void Start() => _loop = Task.Run(RunAsync);

    public async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
    }

    public void Release()
    {
        _channel.Dispose();
        _mapping.Dispose();
        _stop.Dispose();
    }

    private async Task RunAsync()
    {
        try
        {
            // Requests queued before the connection are served at once; then one pass per event.
            do
            {
                if (!ServeRequests())
                {
                    return;
                }
            }
            while (await _channel.WaitAsync(_stop.Token).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
#pragma warning disable CA1031 // a failure here must not fault the disconnect that awaits it: report it
        catch (Exception e)
#pragma warning restore CA1031
        {
            _vif.Owner.Log($"the control ring stopped: {e}");
        }
    }

    /// <summary>Answers every published request; false after a fatal protocol error.</summary>
    private bool ServeRequests()
    {
        while (!_stop.IsCancellationRequested)
        {
            var status = _ring.TryTakeRequest(out var request);
            if (status == RingStatus.ProtocolError)
            {
                _vif.Owner.OnProtocolError($"the frontend's control request producer is more than a ring ({_ring.Size} entries) ahead of the responses (io/ring.h: RING_REQUEST_PROD_OVERFLOW)");
                return false;
            }

            if (status == RingStatus.Empty)
            {
                if (_ring.PushResponses())
                {
                    Notify();
                }

                if (!_ring.FinalCheckForRequests())
                {
                    return true;
                }

                continue;
            }

            var code = Process(request, out var data);
            Interlocked.Increment(ref _vif.Owner.Counters.ControlRequests);
            _ring.TryQueueResponse(new xen_netif_ctrl_response { id = request.id, type = request.type, status = code, data = data });
        }

        return true;
    }

    /// <summary>netback's <c>process_ctrl_request</c>: a status and a result word.</summary>
    private uint Process(in xen_netif_ctrl_request request, out uint data)
    {
        data = 0;
        var d = MemoryMarshal.Cast<xen_netif_ctrl_request, uint>(new ReadOnlySpan<xen_netif_ctrl_request>(in request))[1..4];
        var hash = _vif.Hash;
        switch (request.type)
        {
            case Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM:
                if (d[0] is not (Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_NONE or Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ))
                {
                    return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                }

                _vif.Hash = hash.WithAlgorithm((int)d[0]);
                return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;

            case Netif.XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS:
                if (hash.Algorithm == Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_NONE)
                {
                    return Netif.XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;
                }

                data = NetifHashSettings.AllTypes;
                return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;

            case Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS:
                if ((d[0] & ~NetifHashSettings.AllTypes) != 0 || hash.Algorithm == Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_NONE)
                {
                    return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                }

                _vif.Hash = hash.WithFlags(d[0]);
                return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;

            case Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_KEY:
                {
                    // data[0]: grant of the page holding the key from its start; data[1]: its length.
                    if (d[1] > NetifHashSettings.MaxKeyBytes)
                    {
                        return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                    }

                    Span<byte> key = stackalloc byte[(int)d[1]];
                    if (key.Length > 0 && !CopyIn(d[0], key))
                    {
                        return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                    }

                    _vif.Hash = hash.WithKey(key);
                    return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;
                }

            case Netif.XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE:
                data = NetifHashSettings.MaxMappingSize;
                return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;

            case Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE:
                if (d[0] > NetifHashSettings.MaxMappingSize)
                {
                    return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                }

                _vif.Hash = hash.WithMappingSize((int)d[0]);
                return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;

            case Netif.XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING:
                {
                    // data[0]: grant of the page holding the entries from its start; data[1]: how many; data[2]: the first entry's index.
                    var (length, offset) = (d[1], d[2]);
                    if ((ulong)offset + length > (ulong)hash.Mapping.Length || length > MachineMemory.PageSize / sizeof(uint))
                    {
                        return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                    }

                    Span<byte> bytes = stackalloc byte[(int)length * sizeof(uint)];
                    Span<uint> entries = stackalloc uint[(int)length];
                    if (bytes.Length > 0 && !CopyIn(d[0], bytes))
                    {
                        return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
                    }

                    for (var i = 0; i < entries.Length; i++)
                    {
                        entries[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes[(i * 4)..]);
                        if (entries[i] >= (uint)_vif.QueueCount)
                        {
                            return Netif.XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER; // the mapping stays as it was
                        }
                    }

                    _vif.Hash = hash.WithMapping((int)offset, entries);
                    return Netif.XEN_NETIF_CTRL_STATUS_SUCCESS;
                }

            default:
                // XEN_NETIF_CTRL_TYPE_INVALID, the grant-mapping requests netback does not implement, unknown types.
                return Netif.XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;
        }
    }

    private bool CopyIn(uint gref, Span<byte> into)
    {
        var owner = _vif.Owner;
        return GrantOps.HostCopyOut(owner.Hypervisor.HostDomain, owner.Domain, gref, 0, into) == GrantStatus.Okay;
    }

    private void Notify()
    {
        try
        {
            _channel.Notify();
        }
        catch (Exception e) when (e is XenException or ObjectDisposedException)
        {
            // The guest's end is gone: nobody to tell.
        }
    }
}
