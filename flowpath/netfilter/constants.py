"""Netfilter constants with their kernel names and values.

Linux: include/uapi/linux/netfilter.h (verdicts, hooks, NFPROTO_*),
include/uapi/linux/netfilter_ipv4.h (NF_IP_PRI_*), include/uapi/linux/netfilter/nf_conntrack_common.h
(ip_conntrack_info, ip_conntrack_status bits), include/uapi/linux/netfilter/nf_tables.h (NFT_* verdicts).
"""

from __future__ import annotations

# Verdicts (netfilter.h)
NF_DROP = 0
NF_ACCEPT = 1
NF_STOLEN = 2
NF_QUEUE = 3
NF_REPEAT = 4
# nf_tables.h › enum nft_verdicts (negative, chain-control)
NFT_CONTINUE = -1
NFT_BREAK = -2
NFT_JUMP = -3
NFT_GOTO = -4
NFT_RETURN = -5

# Hooks (enum nf_inet_hooks) and the netdev hooks (enum nf_dev_hooks, numbered after the inet ones here)
NF_INET_PRE_ROUTING = 0
NF_INET_LOCAL_IN = 1
NF_INET_FORWARD = 2
NF_INET_LOCAL_OUT = 3
NF_INET_POST_ROUTING = 4
NF_NETDEV_INGRESS = 5
NF_NETDEV_EGRESS = 6
HOOK_NAMES = {
    "prerouting": NF_INET_PRE_ROUTING,
    "input": NF_INET_LOCAL_IN,
    "forward": NF_INET_FORWARD,
    "output": NF_INET_LOCAL_OUT,
    "postrouting": NF_INET_POST_ROUTING,
    "ingress": NF_NETDEV_INGRESS,
    "egress": NF_NETDEV_EGRESS,
}

# Families (NFPROTO_*)
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_NETDEV = 5
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10

# Hook priorities (enum nf_ip_hook_priorities) and nft's symbolic names (nftables src/rule.c)
NF_IP_PRI_RAW = -300
NF_IP_PRI_CONNTRACK_DEFRAG = -400
NF_IP_PRI_CONNTRACK = -200
NF_IP_PRI_MANGLE = -150
NF_IP_PRI_NAT_DST = -100
NF_IP_PRI_FILTER = 0
NF_IP_PRI_SECURITY = 50
NF_IP_PRI_NAT_SRC = 100
NF_IP_PRI_CONNTRACK_HELPER = 300
NF_IP_PRI_CONNTRACK_CONFIRM = 2147483647
NFT_PRIO_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}

# enum ip_conntrack_info
IP_CT_ESTABLISHED = 0
IP_CT_RELATED = 1
IP_CT_NEW = 2
IP_CT_IS_REPLY = 3
IP_CT_ESTABLISHED_REPLY = IP_CT_ESTABLISHED + IP_CT_IS_REPLY
IP_CT_RELATED_REPLY = IP_CT_RELATED + IP_CT_IS_REPLY
IP_CT_UNTRACKED = 7

# enum ip_conntrack_dir
IP_CT_DIR_ORIGINAL = 0
IP_CT_DIR_REPLY = 1

# enum ip_conntrack_status bits
IPS_EXPECTED_BIT = 0
IPS_SEEN_REPLY_BIT = 1
IPS_ASSURED_BIT = 2
IPS_CONFIRMED_BIT = 3
IPS_SRC_NAT_BIT = 4
IPS_DST_NAT_BIT = 5
IPS_SEQ_ADJUST_BIT = 6
IPS_SRC_NAT_DONE_BIT = 7
IPS_DST_NAT_DONE_BIT = 8
IPS_DYING_BIT = 9
IPS_FIXED_TIMEOUT_BIT = 10
IPS_TEMPLATE_BIT = 11
IPS_UNTRACKED_BIT = 12
IPS_NAT_CLASH_BIT = 12  # shares the bit with UNTRACKED, as in Linux
IPS_HELPER_BIT = 13
IPS_OFFLOAD_BIT = 14
IPS_HW_OFFLOAD_BIT = 15
IPS_EXPECTED = 1 << IPS_EXPECTED_BIT
IPS_SEEN_REPLY = 1 << IPS_SEEN_REPLY_BIT
IPS_ASSURED = 1 << IPS_ASSURED_BIT
IPS_CONFIRMED = 1 << IPS_CONFIRMED_BIT
IPS_SRC_NAT = 1 << IPS_SRC_NAT_BIT
IPS_DST_NAT = 1 << IPS_DST_NAT_BIT
IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT
IPS_SEQ_ADJUST = 1 << IPS_SEQ_ADJUST_BIT
IPS_SRC_NAT_DONE = 1 << IPS_SRC_NAT_DONE_BIT
IPS_DST_NAT_DONE = 1 << IPS_DST_NAT_DONE_BIT
IPS_DYING = 1 << IPS_DYING_BIT
IPS_FIXED_TIMEOUT = 1 << IPS_FIXED_TIMEOUT_BIT
IPS_TEMPLATE = 1 << IPS_TEMPLATE_BIT
IPS_UNTRACKED = 1 << IPS_UNTRACKED_BIT
IPS_HELPER = 1 << IPS_HELPER_BIT
IPS_OFFLOAD = 1 << IPS_OFFLOAD_BIT
IPS_HW_OFFLOAD = 1 << IPS_HW_OFFLOAD_BIT

# enum nf_nat_manip_type
NF_NAT_MANIP_SRC = 0
NF_NAT_MANIP_DST = 1
