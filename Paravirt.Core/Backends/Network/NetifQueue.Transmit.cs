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

/// <summary>A queue's transmit side (guest → switch), as netback's <c>xenvif_tx_build_gops</c> and <c>xenvif_tx_submit</c>.</summary>
internal sealed partial class NetifQueue
{
    private enum TxStep
    {
        /// <summary>No packet is published.</summary>
        Empty,

        /// <summary>Every slot of the packet was answered (refused, or a multicast filter change).</summary>
        Answered,

        /// <summary>Well-formed: copy, check and switch it.</summary>
        Ready,

        /// <summary>A fatal protocol error: the guest is being crashed.</summary>
        Fatal,
    }

    private Progress ServiceTx()
    {
        var result = Progress.Idle;
        var answered = false;
        for (var n = 0; n < Budget && !_stop.IsCancellationRequested; n++)
        {
            if (!_deferred)
            {
                var step = TakePacket();
                if (step == TxStep.Empty)
                {
                    break;
                }

                if (step == TxStep.Fatal)
                {
                    result = Progress.Fatal;
                    break;
                }

                if (step == TxStep.Answered)
                {
                    answered = true;
                    result = n == Budget - 1 ? Progress.More : result;
                    continue;
                }
            }

            if (!TransmitPacket())
            {
                break; // waits for credit; the timer kicks the worker
            }

            answered = true;
            if (n == Budget - 1)
            {
                result = Progress.More;
            }
        }

        if (answered && _txRing.PushResponses())
        {
            Notify(_txChannel);
        }

        return result;
    }

    /// <summary>
    /// Copies one packet's slots out of the ring and judges them as netback does: the first
    /// request; its extra-info slots (while XEN_NETIF_EXTRA_FLAG_MORE; a type outside 1..4 is
    /// fatal); a multicast filter change is answered at once (its fragments, if any, are not its);
    /// then fragments while NETTXF_more_data (<c>xenvif_count_requests</c>: more than 18 answered
    /// NETIF_RSP_ERROR, 20 or more fatal, one larger than what is left of the packet answered
    /// NETIF_RSP_ERROR, one crossing its page fatal); the first slot's own bytes at least ETH_HLEN
    /// (else NETIF_RSP_ERROR) and within its page (else fatal); a GSO slot with a size and a TCP type
    /// (else fatal). Empty when no packet is published.
    /// </summary>
    private TxStep TakePacket()
    {
        _slotCount = 0;
        Array.Clear(_hasExtra);
        var status = _txRing.TryTakeRequest(out var first);
        if (status != RingStatus.Ok)
        {
            if (status == RingStatus.ProtocolError)
            {
                Overrun("transmit");
                return TxStep.Fatal;
            }

            return TxStep.Empty;
        }

        Add(first, extra: false);
        if ((first.flags & Netif.NETTXF_extra_info) != 0)
        {
            while (true)
            {
                if (!TakeNext(out var slot))
                {
                    return TxStep.Fatal;
                }

                Add(slot, extra: true);
                var info = Unsafe.As<netif_tx_request, netif_extra_info>(ref slot);
                if (info.type is Netif.XEN_NETIF_EXTRA_TYPE_NONE or >= Netif.XEN_NETIF_EXTRA_TYPE_MAX)
                {
                    Fatal($"transmit request {first.id} has an extra-info slot of type {info.type} (io/netif.h: XEN_NETIF_EXTRA_TYPE_GSO..HASH, 1 to {Netif.XEN_NETIF_EXTRA_TYPE_MAX - 1})");
                    return TxStep.Fatal;
                }

                _extras[info.type - 1] = info;
                _hasExtra[info.type - 1] = true;
                if ((info.flags & Netif.XEN_NETIF_EXTRA_FLAG_MORE) == 0)
                {
                    break;
                }
            }
        }

        if (_hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1] || _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL - 1])
        {
            // A dummy request carrying a filter change: answered with its extra slots, nothing more taken.
            Interlocked.Increment(ref _counters.TxMulticastRequests);
            var ok = _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1]
                ? _vif.AddMulticast(Mac(_extras[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD - 1]))
                : _vif.RemoveMulticast(Mac(_extras[Netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL - 1]));
            Answer(ok ? Netif.NETIF_RSP_OKAY : Netif.NETIF_RSP_ERROR);
            return TxStep.Answered;
        }

        var remaining = (int)first.size;
        var fragments = 0;
        var refuse = false;
        var last = first;
        while ((last.flags & Netif.NETTXF_more_data) != 0)
        {
            if (fragments >= FatalSkbSlots)
            {
                Fatal($"transmit request {first.id} goes on for more than {FatalSkbSlots} fragments after its first slot (netback's fatal_skb_slots: a malicious frontend)");
                return TxStep.Fatal;
            }

            if (!TakeNext(out last))
            {
                return TxStep.Fatal;
            }

            Add(last, extra: false);
            refuse |= fragments >= LegacySlotsMax || last.size > remaining; // too many slots, or more bytes than the packet has left
            remaining -= last.size;
            fragments++;
            if (last.offset + last.size > PageSize)
            {
                Fatal($"transmit request {last.id}: offset {last.offset} + {last.size} bytes crosses the end of its page");
                return TxStep.Fatal;
            }
        }

        if (refuse || remaining < VirtualSwitch.MinFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxErrors);
            Answer(Netif.NETIF_RSP_ERROR);
            return TxStep.Answered;
        }

        if (first.offset + remaining > PageSize)
        {
            Fatal($"transmit request {first.id}: offset {first.offset} + {remaining} bytes crosses the end of its page");
            return TxStep.Fatal;
        }

        if (_hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1])
        {
            var gso = _extras[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1].u.gso;
            if (gso.size == 0)
            {
                Fatal($"transmit request {first.id}: GSO size 0 (netback: GSO size must not be zero)");
                return TxStep.Fatal;
            }

            if (gso.type is not (Netif.XEN_NETIF_GSO_TYPE_TCPV4 or Netif.XEN_NETIF_GSO_TYPE_TCPV6))
            {
                Fatal($"transmit request {first.id}: GSO type {gso.type} (netback takes XEN_NETIF_GSO_TYPE_TCPV4 and _TCPV6)");
                return TxStep.Fatal;
            }
        }

        _firstBytes = remaining;
        return TxStep.Ready;
    }

    private static MacAddress Mac(in netif_extra_info info)
    {
        var copy = info;
        return MacAddress.Read(MemoryMarshal.AsBytes(new Span<netif_extra_info>(ref copy))[2..8]);
    }

    private void Add(in netif_tx_request slot, bool extra)
    {
        _slots[_slotCount] = slot;
        _isExtra[_slotCount] = extra;
        _slotCount++;
    }

    private bool TakeNext(out netif_tx_request slot)
    {
        // At most a ring's worth can be outstanding: the ring refuses more (Empty), which for a
        // packet still flagged to continue means its slots run past what was published.
        slot = default;
        var status = _slotCount < _slots.Length ? _txRing.TryTakeRequest(out slot) : RingStatus.Empty;
        if (status == RingStatus.Ok)
        {
            return true;
        }

        slot = default;
        if (status == RingStatus.ProtocolError)
        {
            Overrun("transmit");
        }
        else
        {
            Fatal($"a transmit packet continues (NETTXF_more_data or extra info) past the {_slotCount} requests published (io/netif.h: a packet's slots are published together)");
        }

        return false;
    }

    /// <summary>Answers every slot of the packet: <paramref name="status"/> for data slots, NETIF_RSP_NULL for extra-info slots.</summary>
    private void Answer(int status)
    {
        for (var i = 0; i < _slotCount; i++)
        {
            var response = _isExtra[i]
                ? new netif_tx_response { id = 0, status = (short)Netif.NETIF_RSP_NULL }
                : new netif_tx_response { id = _slots[i].id, status = (short)status };
            _txRing.TryQueueResponse(response);
        }

        _slotCount = 0;
    }

    /// <summary>Sends a well-formed packet (or waits for credit) and answers every slot. False when it must wait for credit.</summary>
    private bool TransmitPacket()
    {
        var total = (int)_slots[0].size;
        var gso = _hasExtra[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1];
        if (!gso && total > _vif.MaxFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxDropped); // well-formed, but longer than the vif's MTU allows
            Answer(Netif.NETIF_RSP_DROPPED);
            return true;
        }

        if (!_vif.TryConsumeCredit(total, out var retryAt))
        {
            if (!_deferred)
            {
                Interlocked.Increment(ref _counters.TxRateLimited);
            }

            _deferred = true;
            var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), retryAt);
            _creditTimer!.Change(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
            return false;
        }

        _deferred = false;
        Answer(CopyAndSwitch(total, gso));
        return true;
    }

    private int CopyAndSwitch(int total, bool gso)
    {
        if (_hv.FindDomain(_guest.Id) != _guest)
        {
            Interlocked.Increment(ref _counters.TxErrors);
            return Netif.NETIF_RSP_ERROR; // destroyed meanwhile: no grants to copy
        }

        var at = 0;
        var data = 0;
        for (var i = 0; i < _slotCount; i++)
        {
            if (_isExtra[i])
            {
                continue;
            }

            var s = _slots[i];
            var bytes = data++ == 0 ? _firstBytes : s.size;
            if (bytes == 0)
            {
                continue;
            }

            var rc = GrantOps.HostCopyOut(_hv.HostDomain, _guest, s.gref, s.offset, _frame.AsSpan(at, bytes));
            if (rc != GrantStatus.Okay)
            {
                _owner.Log($"queue {Id}: transmit request {s.id}: grant {s.gref}: {rc}");
                Interlocked.Increment(ref _counters.TxErrors);
                return Netif.NETIF_RSP_ERROR;
            }

            at += bytes;
        }

        var frame = _frame.AsSpan(0, total);
        if (!TryDescribe(frame, gso, out var meta))
        {
            // netback answers before its skb_checksum_setup, then drops what that refuses.
            Interlocked.Increment(ref _counters.TxOffloadDropped);
            return Netif.NETIF_RSP_OKAY;
        }

        if (gso && meta.SegmentBytes > _vif.MaxFrameBytes)
        {
            Interlocked.Increment(ref _counters.TxDropped); // its segments would be longer than the MTU allows
            return Netif.NETIF_RSP_DROPPED;
        }

        _vif.Switch.Forward(_vif, frame, meta);
        if (gso)
        {
            Interlocked.Increment(ref _counters.TxGsoPackets);
        }

        Interlocked.Increment(ref _counters.TxPackets);
        Interlocked.Add(ref _counters.TxBytes, total);
        _guest.Meter.CountNetSent(total);
        return Netif.NETIF_RSP_OKAY;
    }

    /// <summary>
    /// The frame's checksum and GSO state (netback's <c>xenvif_tx_submit</c> and <c>checksum_setup</c>):
    /// NETTXF_csum_blank makes it partial, NETTXF_data_validated validated; a GSO packet is partial
    /// whatever its flags (its pseudo-header checksum written here if the frontend did not set
    /// NETTXF_csum_blank). A partial frame must be TCP or UDP over unfragmented IPv4/IPv6; a GSO frame
    /// TCP over the IP version its type names, with its whole TCP header and an MSS of at least 48.
    /// </summary>
    private bool TryDescribe(Span<byte> frame, bool gso, out FrameMeta meta)
    {
        var flags = _slots[0].flags;
        var checksum = (flags & Netif.NETTXF_csum_blank) != 0 ? FrameChecksum.Partial
            : (flags & Netif.NETTXF_data_validated) != 0 ? FrameChecksum.Validated
            : FrameChecksum.None;
        meta = new FrameMeta { Checksum = checksum };
        var fixup = gso && checksum != FrameChecksum.Partial;
        if (!gso && checksum != FrameChecksum.Partial)
        {
            return true;
        }

        if (!PacketHeaders.TryChecksumSetup(frame, out var ip))
        {
            return false;
        }

        meta = meta with
        {
            Checksum = FrameChecksum.Partial,
            IsIPv6 = ip.IsIPv6,
            L4Protocol = ip.Protocol,
            L4Offset = (ushort)ip.L4Offset,
            L4Length = (ushort)ip.L4Length,
        };
        if (gso)
        {
            var g = _extras[Netif.XEN_NETIF_EXTRA_TYPE_GSO - 1].u.gso;
            var tcpHeader = ip.Protocol == PacketHeaders.IpProtoTcp ? (frame[ip.L4Offset + 12] >> 4) * 4 : 0;
            if (ip.Protocol != PacketHeaders.IpProtoTcp || ip.IsIPv6 != (g.type == Netif.XEN_NETIF_GSO_TYPE_TCPV6) ||
                tcpHeader < PacketHeaders.TcpHeader || tcpHeader > ip.L4Length || g.size < MinGsoSize)
            {
                return false;
            }

            meta = meta with { GsoType = g.type, GsoSize = g.size, HeaderBytes = (ushort)(ip.L4Offset + tcpHeader) };
        }

        if (fixup)
        {
            Interlocked.Increment(ref _counters.TxChecksumFixups);
            PacketHeaders.SeedPartial(frame, ip.IsIPv6, ip.Protocol, ip.L4Offset, ip.L4Length);
        }

        return true;
    }
}
