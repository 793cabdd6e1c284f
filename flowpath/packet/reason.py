"""Every packet outcome, listed once.

Linux: include/net/dropreason-core.h › DEFINE_DROP_REASON; VPP: foreach_*_error.
One list gives the `Reason` enum (a uint8 per packet in `PacketBatch.verdict`), the printed labels and
the masks. Kinds: "ok" (still moving / delivered), "slow" (sent from the fast path to the slow path),
"drop" (counted and freed). Names follow `skb_drop_reason` where Linux has one.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

_REASONS = (  # name                    kind    text
    ("FLOW_FORWARD",            "ok",   "forwarded by the flowtable"),  # 0: still on the fast path
    ("TX",                      "ok",   "transmitted by the classic path"),
    ("LOCAL_IN",                "ok",   "delivered to the gateway itself"),
    ("SLOW_NO_ENTRY",           "slow", "no flowtable entry"),
    ("SLOW_NOT_IP",             "slow", "not IPv4/IPv6"),
    ("SLOW_IP_OPTIONS",         "slow", "IPv4 header with options"),
    ("SLOW_FRAGMENT",           "slow", "IP fragment"),
    ("SLOW_TTL",                "slow", "ttl <= 1: the slow path sends time exceeded"),
    ("SLOW_L4PROTO",            "slow", "protocol not handled by the flowtable"),
    ("SLOW_MTU",                "slow", "larger than the cached MTU"),
    ("SLOW_TEARDOWN",           "slow", "flow entry in teardown"),
    ("SLOW_TCP_STATE",          "slow", "TCP SYN on a closing flow"),
    ("SLOW_EXTHDR",             "slow", "IPv6 extension headers"),
    ("SLOW_GSO",                "slow", "GSO super-packet the fast path cannot send whole (ESP output)"),
    ("PKT_TOO_SMALL",           "drop", "truncated header"),
    ("PKT_TOO_BIG",             "drop", "frame larger than the batch slot"),
    ("MAC_MISMATCH",            "drop", "destination MAC is not ours"),
    ("UNHANDLED_PROTO",         "drop", "ethertype not handled"),
    ("VLAN_UNKNOWN",            "drop", "802.1Q tag without a matching link"),
    ("IP_INHDR",                "drop", "bad IP header (version, length)"),
    ("IP_CSUM",                 "drop", "bad IPv4 header checksum"),
    ("IP_INADDRERRORS",         "drop", "bad source or destination address"),
    ("IP_NOPROTO",              "drop", "no local handler for the protocol"),
    ("IP_RPFILTER",             "drop", "reverse path filter"),
    ("IP_OUTNOROUTES",          "drop", "no route to the destination"),
    ("IP_FRAG_FAILED",          "drop", "fragmentation impossible"),
    ("PKT_TOO_BIG_DF",          "drop", "larger than the egress MTU with DF (frag needed sent)"),
    ("TTL_EXPIRED",             "drop", "ttl/hop limit exceeded (time exceeded sent)"),
    ("NEIGH_FAILED",            "drop", "no neighbour entry for the next hop"),
    ("NETFILTER_DROP",          "drop", "dropped by an nft rule or chain policy"),
    ("NETFILTER_REJECT",        "drop", "rejected by an nft rule (error sent)"),
    ("CT_INVALID",              "drop", "conntrack: invalid packet"),
    ("CT_TABLE_FULL",           "drop", "conntrack table full"),
    ("NAT_NO_PORTS",            "drop", "NAT: no free port in the range"),
    ("TCP_CSUM",                "drop", "bad TCP checksum"),
    ("UDP_CSUM",                "drop", "bad UDP checksum"),
    ("ICMP_CSUM",               "drop", "bad ICMP checksum"),
    ("ICMP_RATELIMIT",          "drop", "ICMP error suppressed"),
    ("LINK_DOWN",               "drop", "link administratively down"),
    ("NO_LINK",                 "drop", "packet from an unknown interface"),
    ("FLOWTABLE_FULL",          "drop", "flowtable at its configured maximum"),
    ("XFRM_POLICY",             "drop", "xfrm policy check failed"),
    ("XFRM_NO_STATE",           "drop", "no xfrm state"),
    # appended, not grouped by kind: numba caches keyed on other files keep the values they compiled with
    ("SLOW_MALFORMED",          "slow", "header too short or inconsistent: the classic path drops it"),
    ("XFRM_IN_HDR",             "drop", "ESP: truncated or bad header (XfrmInHdrError)"),
    ("XFRM_IN_REPLAY",          "drop", "ESP: replayed sequence number (XfrmInStateSeqError)"),
    ("XFRM_IN_REPLAY_WINDOW",   "drop", "ESP: sequence number left of the replay window"),
    ("XFRM_IN_ICV",             "drop", "ESP: integrity check failed (XfrmInStateProtoError)"),
    ("XFRM_IN_PADDING",         "drop", "ESP: bad padding"),
    ("XFRM_IN_NEXTHDR",         "drop", "ESP: next header is not IPv4/IPv6 in tunnel mode"),
    ("XFRM_STATE_EXPIRED",      "drop", "xfrm state expired (XfrmIn/OutStateExpired)"),
    ("XFRM_OUT_SEQ_OVERFLOW",   "drop", "ESP: sequence number space exhausted (XfrmOutStateSeqError)"),
    ("XFRM_NO_ROOM",            "drop", "ESP: no room in the slot for the pushed headers"),
    ("XFRM_INNER_PROTO",        "drop", "ESP: inner packet is not IPv4/IPv6"),
    ("SLOW_NATT_NON_ESP",       "slow", "UDP 4500 payload is IKE or a NAT keepalive: slow path"),
    ("IP_SOURCE_ROUTE",         "drop", "IPv4 source route option (accept_source_route = 0)"),
    ("IP_DEFRAG_QUEUED",        "ok",   "held for reassembly (nf_defrag)"),
    ("FRAG_REASM_TIMEOUT",      "drop", "fragment reassembly timed out"),
    ("IP_FRAG_OVERLAP",         "drop", "overlapping fragment: its datagram dropped (RFC 5722)"),
    ("IP_FRAG_INVALID",         "drop", "fragment inconsistent with its datagram (end, length, ECN, > 65535)"),
    ("DUP_FRAG",                "drop", "duplicate fragment"),
    ("FRAG_TOO_FAR",            "drop", "reassembly restarted: ipfrag_max_dist fragments of the source between"),
    ("IP_FRAG_MEM",             "drop", "fragment refused: reassembly memory above the high threshold"),
    ("NEIGH_QUEUED",            "ok",   "waiting for its next hop's link-layer address"),
    ("NEIGH_QUEUEFULL",         "drop", "neighbour queue full (unres_qlen_bytes): the oldest packet dropped"),
    ("IPV6_NDISC_INVALID",      "drop", "invalid neighbour discovery message (hop limit, code, options)"),
    ("SKB_GSO_SEG",             "drop", "GSO super-packet the port cannot segment (type or headers)"),
    ("SKB_CSUM",                "drop", "checksum left to offload that the port cannot complete"),
    ("PACKET_RX_TRUNCATED",     "drop", "frame cut short by the receive ring (snaplen < len)"),
    ("RPS_HANDOFF",             "ok",   "handed to the worker its flow steers to (after decryption)"),
    ("IP_TUNNEL_NOMATCH",       "drop", "IP-in-IP to us that no tunnel device takes (port unreachable sent)"),
    ("IP_TUNNEL_ECN",           "drop", "tunnel decapsulation: CE outer on a not-ECT inner (RFC 6040)"),
    ("IP_TUNNEL_PROTO",         "drop", "tunnel device does not carry the packet's protocol (tx_errors)"),
    ("IP_TUNNEL_LOOP",          "drop", "tunnel's outer route leaves through a tunnel again (collisions)"),
    ("IP_TUNNEL_FRAG",          "drop", "fragment of an IP-in-IP packet that was not reassembled"),
    ("IP6_TNL_ENCAP_LIMIT",     "drop", "IPv6 inner packet with a tunnel encapsulation limit of 0 (parameter problem sent)"),
    ("IP6_TNL_XMIT_CTL",        "drop", "ip6tnl cannot send: local end not ours, remote ours or no remote (unreachable sent)"),
    ("IP6_TNL_RCV_CTL",         "drop", "ip6tnl received from one of our own addresses or a non-unicast end"),
    ("SLOW_TUNNEL_ID",          "slow", "IPIP push without DF: the classic path numbers the outer header"),
    ("SLOW_TUNNEL_ECN",         "slow", "IPIP with a CE outer over a not-ECT inner: the classic path drops it"),
    ("NETFILTER_QUEUE",         "drop", "queued by an nft rule, and no queue listener (nf_queue: -ESRCH)"),
    ("NETFILTER_EGRESS",        "drop", "dropped by a netdev egress chain's rule or policy (in dev_queue_xmit)"),
    ("NF_DUP_RECURSION",        "drop", "netdev fwd/dup nested past NF_RECURSION_LIMIT (a chain sending to its own device)"),
)  # fmt: skip

Reason = IntEnum("Reason", [(name, i) for i, (name, _, _) in enumerate(_REASONS)])
REASON_NAMES = tuple(name for name, _, _ in _REASONS)
REASON_TEXT = tuple(text for _, _, text in _REASONS)
REASON_KIND = tuple(kind for _, kind, _ in _REASONS)
# over every uint8 verdict (256 entries): the values past the list (stage markers such as a parked
# packet) are neither, so a verdict indexes them without a bounds check
IS_DROP = np.array([kind == "drop" for _, kind, _ in _REASONS] + [False] * (256 - len(_REASONS)), dtype=np.bool_)
IS_SLOW = np.array([kind == "slow" for _, kind, _ in _REASONS] + [False] * (256 - len(_REASONS)), dtype=np.bool_)
N_REASONS = len(_REASONS)
assert N_REASONS < 256  # verdict is uint8


def reason_label(r: int) -> str:
    """Lower-case label used in stats JSON: `ip_outnoroutes`."""
    return REASON_NAMES[r].lower()


# Why the compiled classic lane (flowpath/inet/classic_lane.py) left a packet to the Python classic
# path: counted per worker (Stats.lane_punts), listed in stats as classic_lane.punted.
_LANE_PUNTS = (
    ("GC", "the GC is due, or an earlier ARP/ICMPv6 packet was punted: the rest of the batch follows"),
    ("L2", "not for our MAC, a tagged, non-IP, GSO or decrypted frame, or its link is not one the lane takes"),
    ("HEADER", "IP options, fragment, extension headers, ttl <= 1, not TCP/UDP/ICMP, or malformed"),
    ("CSUM", "bad IPv4 header or L4 checksum, or a UDP length past the datagram: the Python path drops it"),
    ("NO_CT", "a new connection the lane may not open: after an earlier punt in the batch, several workers, an expired entry in the way, the table must grow or its index be rebuilt, or an eviction of an entry Python holds"),
    ("CT_STATE", "after an earlier punted packet of its connection, dying, expected, refused by the tracker, or a clash at confirm"),
    ("NFT", "an nft chain the VM cannot run, a NAT statement outside a nat chain, or a ct mark written"),
    ("ROUTE", "local, multicast, martian, no unicast route, or out through a tunnel or VLAN device"),
    ("MTU", "larger than the route's MTU"),
    ("NEIGH", "next hop not resolved, stale, or its timer is due"),
    ("OFFLOAD", "flow add: the Python path offloads the connection"),
    ("NAT", "a NAT binding the lane does not make: redirect, IPv6 masquerade, a device with several addresses to masquerade to"),
    ("ICMP", "an ICMP error (RELATED to another connection), ICMPv6 neighbour discovery or MLD, a type conntrack has no reply for, or ICMP of the other IP version"),
)
LANE_PUNT_NAMES = tuple(n.lower() for n, _ in _LANE_PUNTS)
LANE_PUNT_TEXT = tuple(d for _, d in _LANE_PUNTS)
N_LANE_PUNTS = len(_LANE_PUNTS)
(PUNT_GC, PUNT_L2, PUNT_HEADER, PUNT_CSUM, PUNT_NO_CT, PUNT_CT_STATE, PUNT_NFT, PUNT_ROUTE, PUNT_MTU,
 PUNT_NEIGH, PUNT_OFFLOAD, PUNT_NAT, PUNT_ICMP) = range(N_LANE_PUNTS)  # fmt: skip
