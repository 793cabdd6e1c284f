"""The netdev hooks where the stack meets them, and the transmits of their fwd and dup statements.

Linux: include/linux/netfilter_netdev.h › nf_hook_ingress, nf_hook_egress (net/core/dev.c ›
__dev_queue_xmit runs it before the qdisc, for the device the frame is queued on: a VLAN device's frame
meets the VLAN device's chains, then vlan_dev_hard_start_xmit queues it on the lower device, which has
its own); net/netfilter/nf_dup_netdev.c › nf_do_netdev_egress (NF_RECURSION_LIMIT), nf_fwd_netdev_egress,
nf_dup_netdev_egress; net/core/neighbour.c › neigh_xmit (`fwd ip to ADDR device DEV`).

A chain sees the frame as Linux has it at that device: a VLAN device's own tag, and those of the
devices below it, are not on it yet (vlan_dev_hard_start_xmit adds it on the way down; on receive,
vlan_do_receive has taken it off). The tags are taken off for the chain and put back after it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flowpath.inet.neigh_output import neigh_resolve_output
from flowpath.netfilter import constants as C
from flowpath.netfilter.netdev import nf_hook_netdev
from flowpath.netfilter.nft_fwd_netdev import NfDupRequest
from flowpath.packet import layout as L
from flowpath.packet.counters import TX_BYTES, TX_PACKETS
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

NF_RECURSION_LIMIT = 2  # net/netfilter/nf_dup_netdev.c


class _NextHop(NamedTuple):
    """What neigh_resolve_output reads of a route: neigh_xmit's address and device."""

    gateway: int
    oif: int


def dev_xmit_path(net, link) -> list:
    """The devices a frame queued on `link` goes through: the link, then each lower device of a VLAN
    (a QinQ VLAN sits on a VLAN), the physical one last."""
    path = [link]
    while path[-1].kind == "vlan":
        path.append(net.links[path[-1].parent])
    return path


def _vlan_depth(net, link) -> int:
    """How many tags of the frame's outer ones `link` and the devices below it own."""
    return len(dev_xmit_path(net, link)) - 1


def _untag(frame: bytes, k: int) -> bytes:
    return frame[:12] + frame[12 + 4 * k :] if k else frame


def _retag(tagged: bytes, k: int, seen: bytes) -> bytes:
    """The frame a chain saw without its k outer tags (and may have changed), with them again."""
    return seen[:12] + tagged[12 : 12 + 4 * k] + seen[12:] if k else seen


def nf_hook_ingress(net, q, skb: SkBuff, link) -> Reason | None:
    """The ingress chains of `link` on a received frame: None when the frame goes on, else its final
    Reason: a drop, or what became of it where a `fwd` sent it (TX, NEIGH_QUEUED, a drop there)."""
    nft = net.nft
    if nft is None or not nft.has_hook(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS):
        return None
    verdict, reason, xmit = nf_hook_netdev(nft, C.NF_NETDEV_INGRESS, skb, link)
    stolen = _nf_dup_xmit(net, q, xmit, skb, _vlan_depth(net, link))
    if verdict == C.NF_DROP:
        return reason
    return stolen if verdict == C.NF_STOLEN else None


def dev_queue_xmit_egress(net, q, link, frame: bytes) -> Reason | None:
    """__dev_queue_xmit with egress chains in the ruleset: each device's chains on the way down (module
    docstring), then the frame is queued on the physical device. None when it left (or a `fwd` sent
    it on), else its Reason: a drop (NETFILTER_EGRESS for a rule's or policy's), or NEIGH_QUEUED (a
    `fwd ip` waits for its neighbour)."""
    path = dev_xmit_path(net, link)
    for k, dev in enumerate(path):
        depth = len(path) - 1 - k
        skb = _skb_egress(_untag(frame, depth), dev.ifindex, q.now_ns)
        r = _nf_hook_egress(net, q, skb, dev)
        if r is not None:
            return None if r == Reason.TX else r
        frame = _retag(frame, depth, skb.buf.tobytes())
    q.frames.append((path[-1].ifindex, frame))
    return None


def nf_hook_egress_tunnel(net, q, dev, frame: bytes, l3proto: int) -> tuple[Reason | None, bytes]:
    """dev_queue_xmit on a tunnel device (ipip, ip6tnl: no link header; neigh_direct_output): its egress
    chains on the network-layer frame, skb->len from the network header. (None, the frame as they left
    it) when it goes on to the tunnel's transmit, else (its Reason, b""): a drop, or TX when a `fwd`
    sent it. Deviation: flowpath's skb starts with a link header, so the chains see a zeroed one (link
    layer matches read it, where Linux's mac header is the network header) and a fwd or dup from here
    sends it."""
    nft = net.nft
    if nft is None or not nft.has_hook(C.NFPROTO_NETDEV, C.NF_NETDEV_EGRESS):
        return None, frame
    skb = _skb_egress(bytes(12) + l3proto.to_bytes(2, "big") + frame, dev.ifindex, q.now_ns)
    skb.data_at_mac = False
    r = _nf_hook_egress(net, q, skb, dev)
    return (r, b"") if r is not None else (None, skb.buf[L.ETH_HLEN :].tobytes())


def _nf_hook_egress(net, q, skb: SkBuff, dev) -> Reason | None:
    """One device's egress chains and their fwd/dup transmits: None when the frame goes on, else its
    Reason (TX when a `fwd` sent it on)."""
    verdict, reason, xmit = nf_hook_netdev(net.nft, C.NF_NETDEV_EGRESS, skb, dev)
    stolen = _nf_dup_xmit(net, q, xmit, skb, 0)
    if verdict == C.NF_DROP:  # its own reason: ip_forward offloads a flow its chains drop, as Linux
        return Reason.NETFILTER_EGRESS if reason == Reason.NETFILTER_DROP else reason
    return stolen if verdict == C.NF_STOLEN else None


def _skb_egress(frame: bytes, ifindex: int, ts_ns: int) -> SkBuff:
    """The frame as an skb for the chains (a frame skb_parse refuses still meets them, by ethertype)."""
    buf = frame_array(frame)
    skb = skb_parse(buf, ifindex, ts_ns)
    if isinstance(skb, Reason):
        skb = SkBuff(buf=buf, iif=ifindex, ts_ns=ts_ns, l3proto=int.from_bytes(frame[12:14], "big"))
    skb.data_at_mac = True  # dev_queue_xmit: skb->data at the MAC header
    return skb


def _nf_dup_xmit(net, q, xmit: list, skb: SkBuff, depth: int) -> Reason | None:
    """Carry out a hook's fwd and dup transmits in order; the fate of the fwd's (None: there was none).
    A dup's copy is counted as an originated packet, sent or not; depth: the tags the hook's device
    owns, not on the frame it sends (module docstring)."""
    stolen = None
    for req in xmit:
        r = nf_do_netdev_egress(net, q, req, skb, depth)
        if req.stolen:
            stolen = r
        elif r == Reason.TX:
            q.generated += 1
        elif r is not None:
            q.generated_drops.append(r)
    return stolen


def nf_do_netdev_egress(net, q, req: NfDupRequest, skb: SkBuff, depth: int) -> Reason | None:
    """nf_fwd_netdev_egress / nf_dup_netdev_egress: out of req.dev as it is, or to its neighbour.
    TX, NEIGH_QUEUED or a drop Reason; None for a dup to a device that does not exist (nothing is
    sent). Past NF_RECURSION_LIMIT nested transmits (a chain that sends to its own device) the frame
    is freed."""
    try:
        link = net.link_by_name(req.dev)
    except KeyError:  # dev_get_by_index_rcu found none: fwd frees the packet, dup makes no copy
        return Reason.NO_LINK if req.stolen else None
    if q.dup_recursion > NF_RECURSION_LIMIT:
        return Reason.NF_DUP_RECURSION
    if not link.up:  # __dev_queue_xmit: -ENETDOWN
        return Reason.LINK_DOWN
    q.dup_recursion += 1
    try:
        if req.family:  # neigh_xmit: the neighbour's output (queued while it is unresolved)
            r = neigh_resolve_output(net, q, [req.frame], skb, _NextHop(req.addr, link.ifindex))
            if not q.originating:
                q.neigh_item = None  # no reassembled datagram's fragments share this one's fate
            return r
        return q.dev_queue_xmit(net, link, _untag(req.frame, depth)) or Reason.TX
    finally:
        q.dup_recursion -= 1


def egress_devs(net, nif: int) -> np.ndarray | None:
    """bool[nif]: the devices with egress chains; None when the ruleset has none (the fast paths then
    pay nothing for the hook)."""
    nft = net.nft
    if nft is None or not nft.has_hook(C.NFPROTO_NETDEV, C.NF_NETDEV_EGRESS):
        return None
    out = np.zeros(nif, np.bool_)
    for x, link in net.links.items():
        out[x] = bool(nft.base_chains(C.NFPROTO_NETDEV, C.NF_NETDEV_EGRESS, link.name))
    return out


def nf_hook_egress_hits(net, q, batch, hits: np.ndarray, egress: np.ndarray, stats, slow: list) -> np.ndarray:
    """The egress chains on the fast path's transmits: hits (int32 packet indices, counted as
    forwarded by their stage) that leave through a device with egress chains meet them here, after
    the flowtable rewrote them and before they leave, as nf_flow_queue_xmit's dev_queue_xmit meets
    them in Linux (XMIT_DIRECT: the physical device's chains, batch.oif). Returns the hits that stay
    in their slots (a chain's payload changes written there). The others become what the hook made of
    them: dropped (verdict and reason moved from FLOW_FORWARD), or frames on `slow` as (packet index,
    seq, ifindex, frame, ts_ns), counted as transmitted (a fwd's, a dup's copies with the packet).
    What the chains originated stays counted on q (generated) for the caller.

    No Linux counterpart as a batch step. Deviation from a step aside (the classic path for such
    flows): that would run their forward chains again, which Linux's offloaded packets skip.
    """
    sel = np.flatnonzero(egress[batch.oif[hits]])
    if not sel.size:
        return hits
    keep = np.ones(hits.shape[0], np.bool_)
    ifc = stats.ifc
    for j in sel.tolist():
        i = int(hits[j])
        oif, frame, ts_ns = int(batch.oif[i]), batch.frame(i), int(batch.ts_ns[i])
        q.frames.clear()
        q.now_ns = ts_ns
        r = q.dev_queue_xmit(net, net.links[oif], frame.tobytes())
        out = q.frames
        if r is None and len(out) == 1 and out[0][0] == oif and len(out[0][1]) == frame.shape[0]:
            frame[:] = np.frombuffer(out[0][1], np.uint8)
            continue
        keep[j] = False
        if 0 <= oif < ifc.shape[0]:  # its transmit, which the stage counted, did not happen
            ifc[oif, TX_PACKETS] -= 1
            ifc[oif, TX_BYTES] -= frame.shape[0]
        stats.tx_packets -= 1
        if r is not None:
            stats.resolve_held(r, 1, Reason.FLOW_FORWARD)
            batch.verdict[i] = r
        for seq, (ifx, f) in enumerate(out):
            slow.append((i, seq, ifx, f, ts_ns))
            stats.tx(ifx, len(f))
        stats.tx_bursts += len(out)
    q.frames.clear()
    return hits[keep]
