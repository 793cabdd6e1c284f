"""Header layouts, declared once.

Linux: include/uapi/linux/{if_ether,ip,ipv6,tcp,udp,icmp,icmpv6,ip_esp}.h.
Each header is a structured numpy dtype with kernel field names. `field_offsets` derives a NamedTuple of
byte offsets from it, which numba freezes as constants, so kernels and the slow path share one truth.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def field_offsets(name: str, dtype: np.dtype) -> NamedTuple:
    """NamedTuple of each field's byte offset, plus `size` (the header length)."""
    fields = list(dtype.names) + ["size"]
    cls = NamedTuple(name, [(f, int) for f in fields])
    return cls(*[dtype.fields[f][1] for f in dtype.names], dtype.itemsize)


ETHHDR = np.dtype([("h_dest", "u1", 6), ("h_source", "u1", 6), ("h_proto", ">u2")])  # struct ethhdr
VLANHDR = np.dtype([("h_vlan_TCI", ">u2"), ("h_vlan_encapsulated_proto", ">u2")])  # struct vlan_hdr

IPHDR = np.dtype([  # struct iphdr, RFC 791
    ("version_ihl", "u1"),  # version:4 | ihl:4
    ("tos", "u1"), ("tot_len", ">u2"), ("id", ">u2"),
    ("frag_off", ">u2"),  # flags:3 | fragment offset:13
    ("ttl", "u1"), ("protocol", "u1"), ("check", ">u2"),
    ("saddr", ">u4"), ("daddr", ">u4"),
])  # fmt: skip
IPHDR_BITS = {"version_ihl": (("version", 4), ("ihl", 4)), "frag_off": (("flags", 3), ("frag", 13))}

IPV6HDR = np.dtype([  # struct ipv6hdr, RFC 8200
    ("ver_tc_flow", ">u4"),  # version:4 | traffic class:8 | flow label:20
    ("payload_len", ">u2"), ("nexthdr", "u1"), ("hop_limit", "u1"),
    ("saddr", "u1", 16), ("daddr", "u1", 16),
])  # fmt: skip
IPV6HDR_BITS = {"ver_tc_flow": (("version", 4), ("priority", 8), ("flow_lbl", 20))}
IPV6_OPT_HDR = np.dtype([("nexthdr", "u1"), ("hdrlen", "u1")])  # struct ipv6_opt_hdr (hbh, dst, routing)
FRAG_HDR = np.dtype([("nexthdr", "u1"), ("reserved", "u1"), ("frag_off", ">u2"), ("identification", ">u4")])

TCPHDR = np.dtype([  # struct tcphdr, RFC 9293
    ("source", ">u2"), ("dest", ">u2"), ("seq", ">u4"), ("ack_seq", ">u4"),
    ("doff_res", "u1"),  # doff:4 | res:4
    ("flags", "u1"),  # cwr ece urg ack psh rst syn fin
    ("window", ">u2"), ("check", ">u2"), ("urg_ptr", ">u2"),
])  # fmt: skip
TCPHDR_BITS = {"doff_res": (("doff", 4), ("res1", 4))}
UDPHDR = np.dtype([("source", ">u2"), ("dest", ">u2"), ("len", ">u2"), ("check", ">u2")])  # struct udphdr
ICMPHDR = np.dtype([  # struct icmphdr (echo view of the union), RFC 792; icmp6hdr has the same shape
    ("type", "u1"), ("code", "u1"), ("checksum", ">u2"), ("id", ">u2"), ("sequence", ">u2"),
])  # fmt: skip
ESPHDR = np.dtype([("spi", ">u4"), ("seq_no", ">u4")])  # struct ip_esp_hdr, RFC 4303
AUTHHDR = np.dtype([  # struct ip_auth_hdr, RFC 4302 (the ICV follows)
    ("nexthdr", "u1"), ("hdrlen", "u1"), ("reserved", ">u2"), ("spi", ">u4"), ("seq_no", ">u4"),
])  # fmt: skip
COMPHDR = np.dtype([("nexthdr", "u1"), ("flags", "u1"), ("cpi", ">u2")])  # struct ip_comp_hdr, RFC 3173
SCTPHDR = np.dtype([("source", ">u2"), ("dest", ">u2"), ("vtag", ">u4"), ("checksum", ">u4")])  # RFC 9260
SCTP_CHUNKHDR = np.dtype([("type", "u1"), ("flags", "u1"), ("length", ">u2")])  # struct sctp_chunkhdr
DCCPHDR = np.dtype([  # struct dccp_hdr, RFC 4340 (the short-sequence-number view)
    ("dccph_sport", ">u2"), ("dccph_dport", ">u2"), ("dccph_doff", "u1"),
    ("dccph_cscov_ccval", "u1"),  # cscov:4 | ccval:4
    ("dccph_checksum", ">u2"),
    ("dccph_res_type_x", "u1"),  # reserved:3 | type:4 | x:1
    ("dccph_seq2", "u1"), ("dccph_seq", ">u2"),
])  # fmt: skip
IGMPHDR = np.dtype([("type", "u1"), ("code", "u1"), ("csum", ">u2"), ("group", ">u4")])  # struct igmphdr
ARPHDR = np.dtype([  # struct arphdr + the Ethernet/IPv4 body
    ("ar_hrd", ">u2"), ("ar_pro", ">u2"), ("ar_hln", "u1"), ("ar_pln", "u1"), ("ar_op", ">u2"),
    ("ar_sha", "u1", 6), ("ar_sip", ">u4"), ("ar_tha", "u1", 6), ("ar_tip", ">u4"),
])  # fmt: skip

ETH = field_offsets("ETH", ETHHDR)
VLAN = field_offsets("VLAN", VLANHDR)
IPH = field_offsets("IPH", IPHDR)
IP6H = field_offsets("IP6H", IPV6HDR)
OPTH = field_offsets("OPTH", IPV6_OPT_HDR)
FRAGH = field_offsets("FRAGH", FRAG_HDR)
TCPH = field_offsets("TCPH", TCPHDR)
UDPH = field_offsets("UDPH", UDPHDR)
ICMPH = field_offsets("ICMPH", ICMPHDR)
ESPH = field_offsets("ESPH", ESPHDR)
ARPH = field_offsets("ARPH", ARPHDR)
AUTHH = field_offsets("AUTHH", AUTHHDR)
COMPH = field_offsets("COMPH", COMPHDR)
SCTPH = field_offsets("SCTPH", SCTPHDR)
SCTP_CHUNKH = field_offsets("SCTP_CHUNKH", SCTP_CHUNKHDR)
DCCPH = field_offsets("DCCPH", DCCPHDR)
IGMPH = field_offsets("IGMPH", IGMPHDR)

assert (ETH.size, VLAN.size, IPH.size, IP6H.size) == (14, 4, 20, 40)
assert (TCPH.size, UDPH.size, ICMPH.size, ESPH.size, FRAGH.size, ARPH.size) == (20, 8, 8, 8, 8, 28)
assert (AUTHH.size, COMPH.size, SCTPH.size, SCTP_CHUNKH.size, DCCPH.size, IGMPH.size) == (12, 4, 12, 4, 12, 8)

# include/uapi/linux/if_ether.h
ETH_ALEN = 6
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IPV6 = 0x86DD
ETH_P_PPP_SES = 0x8864

# include/uapi/linux/in.h, in6.h
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_COMP = 108
IPPROTO_SCTP = 132
IPPROTO_MH = 135
IPPROTO_UDPLITE = 136
IPV6_EXT_HDRS = (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS, IPPROTO_AH, IPPROTO_MH)

# include/uapi/linux/ip.h: IPv4 options (type byte) and timestamp flags
IPOPT_END = 0
IPOPT_NOOP = 1
IPOPT_RR = 7
IPOPT_TIMESTAMP = 68
IPOPT_SEC = 130
IPOPT_LSRR = 131
IPOPT_CIPSO = 134
IPOPT_SID = 136
IPOPT_SSRR = 137
IPOPT_RA = 148
IPOPT_TS_TSONLY = 0
IPOPT_TS_TSANDADDR = 1
IPOPT_TS_PRESPEC = 3

# include/net/ip.h
IP_CE = 0x8000
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

# TCP flags byte (include/net/tcp.h TCPHDR_*)
TCPHDR_FIN = 0x01
TCPHDR_SYN = 0x02
TCPHDR_RST = 0x04
TCPHDR_PSH = 0x08
TCPHDR_ACK = 0x10
TCPHDR_URG = 0x20
TCPHDR_ECE = 0x40
TCPHDR_CWR = 0x80

# include/uapi/linux/icmp.h
ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETERPROB = 12
ICMP_TIMESTAMP = 13
ICMP_TIMESTAMPREPLY = 14
ICMP_INFO_REQUEST = 15
ICMP_INFO_REPLY = 16
ICMP_ADDRESS = 17
ICMP_ADDRESSREPLY = 18
ICMP_NET_UNREACH = 0  # codes for ICMP_DEST_UNREACH
ICMP_HOST_UNREACH = 1
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4
ICMP_NET_ANO = 9
ICMP_HOST_ANO = 10
ICMP_PKT_FILTERED = 13
ICMP_EXC_TTL = 0
ICMP_ERRORS = (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB)

# include/uapi/linux/icmpv6.h
ICMPV6_DEST_UNREACH = 1
ICMPV6_PKT_TOOBIG = 2
ICMPV6_TIME_EXCEED = 3
ICMPV6_PARAMPROB = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
NDISC_ROUTER_SOLICITATION = 133
NDISC_ROUTER_ADVERTISEMENT = 134
NDISC_NEIGHBOUR_SOLICITATION = 135
NDISC_NEIGHBOUR_ADVERTISEMENT = 136
ICMPV6_NOROUTE = 0  # codes for ICMPV6_DEST_UNREACH
ICMPV6_ADM_PROHIBITED = 1
ICMPV6_ADDR_UNREACH = 3
ICMPV6_PORT_UNREACH = 4
ICMPV6_EXC_HOPLIMIT = 0
ICMPV6_HDR_FIELD = 0  # codes for ICMPV6_PARAMPROB
ICMPV6_UNK_NEXTHDR = 1

# include/uapi/linux/if_arp.h
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

IPV4_MIN_MTU = 68
IPV6_MIN_MTU = 1280
