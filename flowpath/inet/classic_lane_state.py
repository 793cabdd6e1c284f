"""The compiled classic lane's shared words: a stage's results, what Python sets per batch (cfg),
what the batch counted (cnt), the per-packet state the stages hand each other (ps), and copies that
do not allocate.

No Linux counterpart: flowpath/inet/classic_lane.py runs the lane; classic_lane_nft.py (a base chain
through the VM), classic_lane_new.py (a new connection) and classic_lane_offload.py (flow add) are
its stages compiled apart; classic_lane_views.py is its Python side.
"""

from __future__ import annotations

from numba import njit

from flowpath.packet import layout as L

LANE_OK = -1  # result of a packet the lane finished: verdict holds TX or its drop reason
LANE_YIELD = -2  # Python makes room (cnt[CNT_YIELD]: for what); the batch resumes at the packet as it came
LANE_ICMP = -3  # an ICMP packet: the lane's ICMP copy takes it (classic_lane.py › lane_one_icmp)

# cfg int64 words
CFG_NEXT_GC_NS = 0  # packet time of the Worker's next GC: the lane stops there
CFG_NEW_OK = 1  # 1: the lane may open new connections (one worker; rows and index room made ready)
CFG_NR_CPUS = 2  # workers sharing the table (NAT's port choice keeps a connection's worker)
CFG_PUNTED = 3  # set once a packet of the batch was punted: later new connections are punted too
CFG_MAX_ENTRIES = 4  # nf_conntrack_max
CFG_EVICT_SLOTS = 5  # index slots early_drop looks at (NfConntrackTable.early_drop_slots)
CFG_EVICT_OK = 6  # 0: conntrack has destroy hooks (Python): the lane does not evict
CFG_BATCH = 7  # 1: the first call for a batch (not a resume): the lane clears the counts and CFG_PUNTED
CFG_WORDS = 8
# cnt int64 words (acct's): what classic_lane_batch finished and left
CNT_DONE, CNT_SENT, CNT_FOUND, CNT_INSERT, CNT_PUNTED, CNT_LAST_TS, CNT_EARLY_DROP, CNT_CT_DROP = range(8)
CNT_ZOMBIES = 8  # evicted rows a Python view holds: Python frees them after the batch (ct[11])
CNT_RESUME = 9  # > 0: the batch stopped at LANE_YIELD; resume at idx[CNT_RESUME - 1] once Python is done
CNT_OFFLOADED = 10  # connections lane_flow_offload offloaded
CNT_YIELD = 11  # why the batch stopped at LANE_YIELD: one of YIELD_*
CNT_WORDS = 12
# what Python does at a LANE_YIELD before the batch resumes (classic_lane_views.py › ClassicLane._make_room)
YIELD_INDEX_ROOM = 1  # confirming one more entry takes the index past half full: rebuilt (larger if need be)
YIELD_INDEX_PROBE = 2  # a tuple found no slot within its probe run: the index rebuilt twice as large
YIELD_ROWS = 3  # no free row: the evicted rows Python views hold (CNT_ZOMBIES) are freed now
SNAP_BYTES = L.ETH_HLEN + L.IP6H.size + L.TCPH.size  # every byte the lane may write (lane_one)

# ---- the per-packet state a stage hands the next (ps int64[PS_SIZE]) ----
PS_L3, PS_L4, PS_THOFF, PS_END, PS_IIF, PS_OIF, PS_ED, PS_CTINFO, PS_NOW, PS_MARK = range(10)
PS_RTMTU, PS_NACC, PS_FOUND = 10, 11, 12
PS_NEW = 13  # the row of the connection this packet opened (unconfirmed until POSTROUTING), else -1
PS_PRNG = 14  # NAT's PRNG state as the packet found it (restored on a punt)
PS_NEW_OK, PS_NR_CPUS, PS_INSERT, PS_CT_DROP = 15, 16, 17, 18  # PS_INSERT: confirmed a new entry
PS_FLOW = 19  # 1: a FORWARD chain said `flow add` to the lane's flowtable (done once it is transmitted)
PS_OFFLOADED = 20  # 1: the packet's connection was offloaded (lane_flow_offload)
PS_SIZE = 22
# nat chains per hook: natv int64[2, 5, MAX_NAT_CHAINS] (VM chain ids), natn int64[2, 5]
MAX_NAT_CHAINS = 8
# hook entries (flowpath/netfilter/hooks.py's kinds): hookv int64[2, 5, MAX_ENTRIES, 2] (kind, chain)
ENTRY_CHAIN, ENTRY_CONNTRACK, ENTRY_NAT, ENTRY_CONFIRM, ENTRY_DEFRAG = range(5)
MAX_ENTRIES = 16
DROP_BASE = -1000  # lane_hook's result for a drop: DROP_BASE - reason


# The lane's stages are inlined into one kernel and compiled without NRT (_nrt=False): called one by
# one, each call passed the tables as tuples of arrays, flattened into scalar arguments with their
# reference counts, which cost more than the work. What only a new connection runs is compiled apart
# (not inlined), so that it does not weigh on the established path. Without NRT nothing here may
# allocate: copies are loops, not slice assignments.
@njit(cache=True, nogil=True, inline="always")
def lane_fill(a, v):
    """a[:] = v without allocating."""
    for j in range(a.shape[0]):
        a[j] = v


@njit(cache=True, nogil=True, inline="always")
def lane_copy(dst, src, n):
    """dst[:n] = src[:n] without allocating."""
    for j in range(n):
        dst[j] = src[j]
