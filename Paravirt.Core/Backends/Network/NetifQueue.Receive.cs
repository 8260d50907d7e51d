using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Paravirt.Core.Abi.Io;
using Paravirt.Core.Domains;
using Paravirt.Core.Events;
using Paravirt.Core.Grants;
using Paravirt.Core.Memory;
using Paravirt.Core.Rings;

namespace Paravirt.Core.Backends.Network;

/// <summary>A queue's receive side (switch → guest), as netback's <c>xenvif_rx_action</c>.</summary>
internal sealed partial class NetifQueue
{
    private Progress ServiceRx()
    {
        var result = Progress.Idle;
        var answered = false;
        _rxNeeded = 0;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!_frames.TryPeek(out var buffer, out var length, out var meta))
            {
                break;
            }

            // What this frontend gets: the frame whole, or (a GSO frame it cannot take) its next segment.
            var segmenting = meta.IsGso && !_vif.TakesGsoFrames(meta.GsoType);
            var bytes = segmenting ? TcpSegmenter.Length(meta, _nextSegment) : length;
            var dataSlots = (bytes + PageSize - 1) / PageSize;
            var extras = (meta.IsGso && !segmenting ? 1 : 0) + (meta.HasHash ? 1 : 0);
            if (dataSlots > 1 && !_vif.Features.Sg)
            {
                Interlocked.Increment(ref _counters.RxDropped); // it cannot take a frame in more than one buffer
                Done(meta, segmenting, wholeFrame: true);
                continue;
            }

            if (_rxRing.CountRequests(out var available) == RingStatus.ProtocolError)
            {
                Overrun("receive");
                return Progress.Fatal;
            }

            if (available < dataSlots + extras)
            {
                if (Expired())
                {
                    Interlocked.Increment(ref _counters.RxExpired);
                    Done(meta, segmenting, wholeFrame: true);
                    continue;
                }

                _rxNeeded = dataSlots + extras; // wait for buffers
                break;
            }

            ReadOnlySpan<byte> data;
            FrameMeta delivered;
            if (segmenting)
            {
                if (_segment.Length < bytes)
                {
                    _segment = new byte[Math.Max(bytes, VirtualSwitch.MaxFrameBytes)]; // kept for the connection's life
                }

                var finish = !_vif.TakesPartialChecksum(meta.IsIPv6);
                TcpSegmenter.Write(buffer.AsSpan(0, length), meta, _nextSegment, _segment, finish, out delivered);
                if (finish)
                {
                    CountChecksumCompleted();
                }

                data = _segment.AsSpan(0, bytes);
            }
            else
            {
                delivered = meta;
                if (meta.Checksum == FrameChecksum.Partial && !_vif.TakesPartialChecksum(meta.IsIPv6))
                {
                    // The reader owns the queued buffer until it releases it: finish the checksum in place.
                    PacketHeaders.Complete(buffer.AsSpan(0, length), meta.L4Protocol, meta.L4Offset, meta.L4Length);
                    delivered = meta with { Checksum = FrameChecksum.None };
                    CountChecksumCompleted();
                }

                data = buffer.AsSpan(0, length);
            }

            if (!Deliver(data, delivered, gsoWhole: meta.IsGso && !segmenting))
            {
                return Progress.Fatal;
            }

            Done(meta, segmenting, wholeFrame: false);
            answered = true;
            if (n == Budget - 1)
            {
                result = Progress.More;
            }
        }

        if (answered && _rxRing.PushResponses())
        {
            Notify(_rxChannel);
        }

        return result;
    }

    private void CountChecksumCompleted()
    {
        Interlocked.Increment(ref _counters.RxChecksumsCompleted);
        Interlocked.Increment(ref _vif.ChecksumsCompleted);
    }

    /// <summary>The head frame (or its current segment) is done with: moves to its next segment, or releases it.</summary>
    private void Done(in FrameMeta meta, bool segmenting, bool wholeFrame)
    {
        if (segmenting && !wholeFrame)
        {
            if (_nextSegment == 0)
            {
                Interlocked.Increment(ref _counters.RxSegmented);
                Interlocked.Increment(ref _vif.Segmented);
            }

            if (++_nextSegment < TcpSegmenter.Count(meta))
            {
                return;
            }
        }

        _nextSegment = 0;
        _frames.Release();
    }

    private bool Expired() =>
        _frames.OldestQueuedAt is { } queuedAt && Stopwatch.GetTimestamp() - queuedAt >= _drainTicks;

    /// <summary>
    /// Fills as many posted buffers as <paramref name="data"/> needs (they are published: the caller
    /// counted them), as netback's <c>xenvif_rx_skb</c>: the first data slot, then the extra-info
    /// slots (GSO, then hash), then the other data slots; each response in its request's slot with
    /// that slot's byte count. False (the guest crashed) if the frontend took back published requests.
    /// </summary>
    private bool Deliver(ReadOnlySpan<byte> data, in FrameMeta meta, bool gsoWhole)
    {
        var alive = _hv.FindDomain(_guest.Id) == _guest;
        var extras = (gsoWhole ? 1 : 0) + (meta.HasHash ? 1 : 0);
        var csum = meta.Checksum switch
        {
            FrameChecksum.Partial => Netif.NETRXF_csum_blank | Netif.NETRXF_data_validated,
            FrameChecksum.Validated => Netif.NETRXF_data_validated,
            _ => 0,
        };
        var at = 0;
        var ok = true;
        var slot = 0;
        while (at < data.Length || extras > 0)
        {
            if (_rxRing.TryTakeRequest(out var request) != RingStatus.Ok)
            {
                Fatal("the frontend took back receive requests it had published (its request producer went backwards)");
                return false;
            }

            if (slot > 0 && extras > 0)
            {
                _rxRing.TryQueueResponse(ExtraSlot(meta, gsoFirst: gsoWhole, ref extras));
                slot++;
                continue;
            }

            var chunk = Math.Min(PageSize, data.Length - at);
            var rc = alive ? GrantOps.HostCopyIn(_hv.HostDomain, _guest, request.gref, 0, data.Slice(at, chunk)) : GrantStatus.BadDomain;
            at += chunk;
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"queue {Id}: receive request {request.id}: grant {request.gref}: {rc}");
                Interlocked.Increment(ref _counters.RxErrors);
                ok = false;
            }

            var flags = at < data.Length ? Netif.NETRXF_more_data : 0;
            if (slot == 0)
            {
                flags |= csum | (extras > 0 ? Netif.NETRXF_extra_info : 0);
            }

            _rxRing.TryQueueResponse(new netif_rx_response
            {
                id = request.id,
                offset = 0,
                flags = (ushort)flags,
                status = rc == GrantStatus.Okay ? (short)chunk : (short)Netif.NETIF_RSP_ERROR,
            });
            slot++;
        }

        if (ok)
        {
            if (gsoWhole)
            {
                Interlocked.Increment(ref _counters.RxGsoPackets);
            }

            Interlocked.Increment(ref _counters.RxPackets);
            Interlocked.Add(ref _counters.RxBytes, data.Length);
            _guest.Meter.CountNetReceived(data.Length);
        }

        return true;
    }

    /// <summary>The next extra-info slot of a receive packet (GSO first, then hash), as a response; counts it off.</summary>
    private static netif_rx_response ExtraSlot(in FrameMeta meta, bool gsoFirst, ref int extras)
    {
        Span<byte> info = stackalloc byte[8]; // struct netif_extra_info overlays the response
        info.Clear();
        extras--;
        var isGso = gsoFirst && extras == (meta.HasHash ? 1 : 0);
        if (isGso)
        {
            info[0] = Netif.XEN_NETIF_EXTRA_TYPE_GSO;
            BinaryPrimitives.WriteUInt16LittleEndian(info[2..], meta.GsoSize);
            info[4] = meta.GsoType;
        }
        else
        {
            info[0] = Netif.XEN_NETIF_EXTRA_TYPE_HASH;
            info[2] = meta.HashType;
            info[3] = Netif.XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
            BinaryPrimitives.WriteUInt32LittleEndian(info[4..], meta.Hash);
        }

        if (extras > 0)
        {
            info[1] = Netif.XEN_NETIF_EXTRA_FLAG_MORE;
        }

        return MemoryMarshal.Read<netif_rx_response>(info);
    }
}
