"""Flowtable: flow entries and their index, the compiled fast path, bulk grouping, GC and teardown.

Linux: net/netfilter/nf_flow_table_core.c (core.py), nf_flow_table_ip.c (ip.py, hook.py),
include/net/netfilter/nf_flow_table.h (key.py), include/linux/netfilter_netdev.h › nf_hook_ingress
(ingress.py: the hooks a Worker's poll runs, ESP included); bulk.py and xfrm.py's early ESP input have
no mainline counterpart.
"""

from flowpath.flowtable.core import (
    FLOW_ADD_EXISTS,
    FLOW_ADD_FULL,
    NF_FLOWTABLE_COUNTER,
    NF_FLOWTABLE_HW_OFFLOAD,
    FlowRoute,
    Flowtable,
    FlowTuple,
)
from flowpath.flowtable.hook import OffloadResult, OffloadScratch, nf_flow_offload_hook, warm
from flowpath.flowtable.key import (
    F_CLOSING,
    F_DNAT,
    F_SNAT,
    F_TEARDOWN,
    FLOW_OFFLOAD_DIR_ORIGINAL,
    FLOW_OFFLOAD_DIR_REPLY,
    FLOW_OFFLOAD_XMIT_DIRECT,
    FLOW_OFFLOAD_XMIT_NEIGH,
    FLOW_OFFLOAD_XMIT_XFRM,
    FlowtableViews,
)

__all__ = [
    "FLOW_ADD_EXISTS", "FLOW_ADD_FULL", "NF_FLOWTABLE_COUNTER", "NF_FLOWTABLE_HW_OFFLOAD",
    "Flowtable", "FlowRoute", "FlowTuple", "OffloadResult", "OffloadScratch", "nf_flow_offload_hook", "warm",
    "F_CLOSING", "F_DNAT", "F_SNAT", "F_TEARDOWN", "FLOW_OFFLOAD_DIR_ORIGINAL", "FLOW_OFFLOAD_DIR_REPLY",
    "FLOW_OFFLOAD_XMIT_DIRECT", "FLOW_OFFLOAD_XMIT_NEIGH", "FLOW_OFFLOAD_XMIT_XFRM", "FlowtableViews",
]  # fmt: skip
