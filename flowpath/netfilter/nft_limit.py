"""nft limit: a token bucket in nanoseconds of packet time, one truth for the VM and the closures.

Linux: net/netfilter/nft_limit.c › nft_limit_init (tokens_max from the rate and burst), nft_limit_eval
(tokens refilled by the time since `last`, capped, then the packet's cost taken or not),
nft_limit_pkts_eval / nft_limit_bytes_eval (a packet's cost), nft_limit_clone (a dynset element's own
bucket starts full).

A limit's parameters and bucket live in a row of an int64[n, LIM_COLS] array (as NftCounter's numbers):
nft_compile.compile_chains binds every anonymous and named limit of a ruleset to the array the compiled
programs read (`progs`' limits), so the VM's OP_LIMIT, the closures and a dynset element's template see
one bucket. A dynset element keeps its own tokens and last in its slot (nft_set_hash.py) and the
template's row for the rest. Times are packet time (skb.ts_ns, DESIGN.md §3); LIM_LAST -1: no packet
yet (the kernel starts the clock at load, flowpath at the first packet: there is no clock before it).
"""

from __future__ import annotations

from numba import njit

from flowpath.netfilter.constants import NFT_BREAK, NFT_CONTINUE
from flowpath.netfilter.nft_cells import NftCells
from flowpath.netfilter.nft_types import NftBuildError

LIM_TOKENS, LIM_LAST, LIM_MAX, LIM_COST, LIM_RATE, LIM_PER, LIM_INV = range(7)  # LIM_COST 0: bytes
LIM_COLS = 7
_PER_NS = {"second": 10**9, "minute": 60 * 10**9, "hour": 3600 * 10**9, "day": 86400 * 10**9,
           "week": 7 * 86400 * 10**9}  # fmt: skip
_BYTE_UNITS = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 * 1024}


@njit(cache=True, nogil=True)
def nft_limit_eval(lim, row, tokens, last, now_ns, length):
    """nft_limit_eval on a bucket (tokens, last; last -1: full, no packet yet) with row's parameters:
    (over, tokens, last) after a packet of `length` bytes (skb->len) at now_ns. over: the limit matches
    not (`over`: inverted), so the rule breaks."""
    cost = lim[row, LIM_COST]
    if cost == 0:  # nft_limit_bytes_eval: div64_u64(nsecs * skb->len, rate)
        cost = lim[row, LIM_PER] * length // lim[row, LIM_RATE]
    if last < 0:
        tokens, last = lim[row, LIM_MAX], now_ns
    tokens = min(tokens + now_ns - last, lim[row, LIM_MAX])
    inv = lim[row, LIM_INV] != 0
    if tokens - cost >= 0:
        return inv, tokens - cost, now_ns
    return not inv, tokens, now_ns


class NftLimit(NftCells):
    """struct nft_limit_priv with its bucket: a row of an int64[n, LIM_COLS] array (see the module)."""

    __slots__ = ()

    def __init__(self, rate: int, per_ns: int, cost: int, tokens_max: int, inv: bool):
        super().__init__([tokens_max, -1, tokens_max, cost, rate, per_ns, int(inv)])

    def eval(self, now_ns: int, length: int) -> bool:
        """nft_limit_eval on this limit's own bucket: True when the rule breaks."""
        c, r = self._cells, self._row
        over, c[r, LIM_TOKENS], c[r, LIM_LAST] = nft_limit_eval(c, r, c[r, LIM_TOKENS], c[r, LIM_LAST],
                                                                now_ns, length)  # fmt: skip
        return bool(over)


def limit_from_stmt(arg: dict) -> NftLimit:
    """nft_limit_init from a `limit` statement's or object's JSON (rate, per, rate_unit, burst, inv)."""
    rate, per = int(arg.get("rate", 0)), _PER_NS.get(arg.get("per", "second"))
    unit = arg.get("rate_unit", "packets")
    if rate <= 0 or per is None or (unit != "packets" and unit not in _BYTE_UNITS):
        raise NftBuildError(f"unsupported limit {arg!r}")
    burst = int(arg.get("burst", 0))
    if unit == "packets":
        cost = per // rate
        tokens_max = cost * (burst or 5)  # nft_limit_init: NFT_LIMIT_PKT_BURST_DEFAULT
    else:
        rate *= _BYTE_UNITS[unit]
        burst *= _BYTE_UNITS.get(arg.get("burst_unit", "bytes"), 1)
        cost = 0
        tokens_max = per * (rate + burst) // rate  # unit * (rate + burst) / rate
    return NftLimit(rate, per, cost, tokens_max, bool(arg.get("inv", False)))


def nft_limit_op(limit: NftLimit):
    """The closure of a limit statement (anonymous, or a named limit's: its bucket shared)."""
    ev = limit.eval

    def op(pkt):
        skb = pkt.skb
        return NFT_BREAK if ev(skb.ts_ns, skb.skb_len) else NFT_CONTINUE

    op.limit = limit  # what nft_compile binds and compiles (OP_LIMIT)
    return op


def build_limit(arg: dict, info) -> object:
    """An anonymous `limit` statement: its NftLimit recorded in the rule's RuleInfo (info.limits)."""
    limit = limit_from_stmt(arg)
    if info is not None:
        info.limits.append(limit)
    return nft_limit_op(limit)
