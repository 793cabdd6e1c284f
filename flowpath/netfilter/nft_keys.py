"""meta and ct keys beyond the basic ones, numgen and jhash, and data maps: the evaluator's loads.

Linux: net/netfilter/nft_meta.c › nft_meta_get_eval (and nft_meta_set_eval for priority),
nft_ct.c › nft_ct_get_eval / nft_ct_set_eval (labels), nft_numgen.c, nft_hash.c › nft_jhash_eval
with include/linux/jhash.h, and nft_lookup.c for a data map. Each builder returns (fn, dtype, bits) as
nft_exthdr and nft_fib do; fn(pkt) gives None where the kernel breaks the rule (NFT_BREAK).

What flowpath has no counterpart for breaks the rule as Linux does without it: skuid, skgid and cgroup
need a local socket (flowpath forwards; nft_meta_get_eval_skugid: no sk, goto err), ct helper needs a
helper (nft_ct_get_eval: no nfct_help, goto err). Keys whose value flowpath cannot know are refused
when the ruleset loads (NftBuildError, a ConfigError naming the rule): meta cpu, rtclassid and rt
classid (no realms), ct id, symhash (the flow dissector's hash). Statements likewise: ct event set, ct
zone set, meta nftrace set, meta pkttype set, ct count.
"""

from __future__ import annotations

import random
import time

from flowpath.config.nft.datatype_meta import ARPHRD
from flowpath.netfilter import constants as C
from flowpath.netfilter.ct_layout import CT_ZONE
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.packet.jhash import jhash

ARPHRD_ETHER = ARPHRD["ether"]
NF_CT_LABELS_MAX_SIZE = 128  # bits (nf_conntrack_labels.h)
_NFPROTO = {"ip": C.NFPROTO_IPV4, "ip6": C.NFPROTO_IPV6}
_DIR = {"original": C.IP_CT_DIR_ORIGINAL, "reply": C.IP_CT_DIR_REPLY}
_REFUSED = {"cpu": "the evaluator does not know which CPU runs it", "rtclassid": "flowpath's routes carry no realm",
            "ibrname": "no bridge ports", "obrname": "no bridge ports", "ibrpvid": "no bridge ports",
            "ibrvproto": "no bridge ports"}  # fmt: skip


# --- meta (nft_meta.c) -------------------------------------------------------------------------------------
def _dev_type(ifindex_of):
    def load(pkt):
        return ARPHRD_ETHER if ifindex_of(pkt) else None  # flowpath's ports are Ethernet

    return load


def _dev_group(ifindex_of):
    def load(pkt):
        return 0 if ifindex_of(pkt) else None  # dev->group: flowpath's devices stay in the default group

    return load


def _no_socket(pkt):
    return None  # nft_meta_get_eval_skugid / cgroup: no skb->sk on a forwarded packet


def _meta_time(pkt):
    """NFT_META_TIME_NS: the packet's time (flowpath's clock is the port's, DESIGN.md §3)."""
    return pkt.skb.ts_ns


def _meta_day(pkt):
    """NFT_META_TIME_DAY. Deviation: local time of the packet's time, as nft lists the day."""
    return (time.localtime(pkt.skb.ts_ns // 10**9).tm_wday + 1) % 7  # tm_wday 0 is Monday


def _meta_hour(pkt):
    """NFT_META_TIME_HOUR: seconds since midnight. Deviation: local time, as nft lists the hour."""
    t = time.localtime(pkt.skb.ts_ns // 10**9)
    return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec


META_LOADS = {
    "priority": (lambda pkt: pkt.skb.meta.get("priority", 0), "tc_handle", 32),
    "iiftype": (_dev_type(lambda pkt: pkt.iif), "arphrd", 16),
    "oiftype": (_dev_type(lambda pkt: pkt.oif), "arphrd", 16),
    "iifgroup": (_dev_group(lambda pkt: pkt.iif), "devgroup", 32),
    "oifgroup": (_dev_group(lambda pkt: pkt.oif), "devgroup", 32),
    "skuid": (_no_socket, "uid", 32),
    "skgid": (_no_socket, "gid", 32),
    "cgroup": (_no_socket, "integer", 32),
    "nftrace": (lambda pkt: 0, "integer", 1),  # skb->nf_trace: flowpath does not trace
    "random": (lambda pkt: random.getrandbits(32), "integer", 32),  # prandom_u32_state
    "time": (_meta_time, "date", 64),
    "day": (_meta_day, "day", 8),
    "hour": (_meta_hour, "hour", 32),
    # inet_sdif: flowpath has no VRF (l3mdev) devices, so no packet has a slave device. Deviation: sdif
    # compares as the (empty) name, so `meta sdif "lo"` never matches as in Linux, but `meta sdif 0` neither
    "sdif": (lambda pkt: "", "ifname", 128),
    "sdifname": (lambda pkt: "", "ifname", 128),
}  # fmt: skip


def build_meta_key(key: str):
    """(fn, dtype, bits) of a meta key nft_expr's own table lacks."""
    if key in _REFUSED:
        raise NftBuildError(f"meta {key}: {_REFUSED[key]}")
    if key not in META_LOADS:
        raise NftBuildError(f"unsupported meta key {key!r}")
    return META_LOADS[key]


# --- ct (nft_ct.c › nft_ct_get_eval) ------------------------------------------------------------------------
def _ct_fn(get):
    def load(pkt):
        ct = pkt.skb.ct
        return None if ct is None else get(pkt, ct)

    return load


def _expiration(pkt, ct):
    """nf_ct_expires in ms: what is left of the timeout, 0 once past."""
    return max(ct.timeout_ns - pkt.skb.ts_ns, 0) // 1_000_000


def _counter(words: str, d: int | None):
    def get(pkt, ct):
        w = getattr(ct, words)
        return w[0] + w[1] if d is None else w[d]  # no direction: both (nft_ct_get_eval_counter)

    return get


def _avgpkt(d: int | None):
    def get(pkt, ct):
        pcnt = ct.packets[0] + ct.packets[1] if d is None else ct.packets[d]
        bcnt = ct.bytes[0] + ct.bytes[1] if d is None else ct.bytes[d]
        return bcnt // pcnt if pcnt else 0

    return get


def _tuple_field(d: int, field: str, nfproto: int | None):
    def get(pkt, ct):
        t = ct.tuplehash[d]
        if nfproto is not None and t.l3proto != nfproto:
            return None  # Deviation: Linux compares the other family's address bytes; never a match
        return getattr(t, field)

    return get


def build_ct_key(m: dict):
    """(fn, dtype, bits) of a ct key nft_expr's own table lacks: `key`, maybe `dir`, "ip saddr"."""
    key, dname = m.get("key"), m.get("dir")
    if dname is not None and dname not in _DIR:
        raise NftBuildError(f"ct direction {dname!r}")
    d = _DIR.get(dname)
    fam, _, addr = str(key).rpartition(" ")
    if addr in ("saddr", "daddr") and d is not None and fam in _NFPROTO:
        dtype = "ipv4_addr" if fam == "ip" else "ipv6_addr"
        return (
            _ct_fn(_tuple_field(d, "src" if addr == "saddr" else "dst", _NFPROTO[fam])),
            dtype,
            32 if fam == "ip" else 128,
        )
    if key in ("proto-src", "proto-dst") and d is not None:
        return _ct_fn(_tuple_field(d, "sport" if key == "proto-src" else "dport", None)), "inet_service", 16
    if key in ("bytes", "packets"):
        return _ct_fn(_counter(key, d)), "integer", 64
    if key == "avgpkt":
        return _ct_fn(_avgpkt(d)), "integer", 64
    if key == "zone":  # Deviation: flowpath's conntrack has no zones: every entry is in zone 0
        return _ct_fn(lambda pkt, ct: int(ct.hot_row[CT_ZONE])), "integer", 16
    if dname is not None:
        raise NftBuildError(f"ct {key} takes no direction")
    if key == "expiration":
        return _ct_fn(_expiration), "time", 32
    if key == "l3proto":
        return _ct_fn(lambda pkt, ct: ct.l3proto), "nf_proto", 8
    if key == "protocol":
        return _ct_fn(lambda pkt, ct: ct.l4proto), "inet_proto", 8
    if key == "helper":
        return _ct_fn(lambda pkt, ct: None), "ifname", 128  # flowpath attaches no conntrack helper
    if key == "label":
        return _ct_fn(lambda pkt, ct: ct.ext.get("labels", 0)), "ct_label", NF_CT_LABELS_MAX_SIZE
    if key == "id":
        raise NftBuildError("ct id: flowpath's entries have no kernel id")
    raise NftBuildError(f"unsupported ct expression {m!r}")


def ct_label_set(ct, bits: int) -> None:
    """nft_ct_set_eval › NFT_CT_LABELS: nf_connlabels_replace adds the bits (labels are never cleared)."""
    ct.ext["labels"] = ct.ext.get("labels", 0) | bits


# --- numgen and jhash (nft_numgen.c, nft_hash.c) -------------------------------------------------------------
def reciprocal_scale(val: int, ep_ro: int) -> int:
    """include/linux/math.h: val scaled into [0, ep_ro)."""
    return (val * ep_ro) >> 32


def build_numgen(arg: dict):
    """nft_ng_inc_eval (the counter moves first, the new value is used) and nft_ng_random_eval."""
    mode, mod, offset = arg.get("mode"), int(arg.get("mod", 0)), int(arg.get("offset", 0))
    if mode not in ("inc", "random") or not 0 < mod < 1 << 32:
        raise NftBuildError(f"unsupported numgen {arg!r}")
    if mode == "random":
        return (lambda pkt: reciprocal_scale(random.getrandbits(32), mod) + offset), "integer", 32
    counter = [mod - 1]  # nft_ng_inc_init: so that the first packet gets 0

    def inc(pkt):
        counter[0] = counter[0] + 1 if counter[0] + 1 < mod else 0
        return counter[0] + offset

    return inc, "integer", 32


def build_jhash(arg: dict, key_load, key_bytes):
    """nft_jhash_eval: jhash of the key's register bytes, scaled into mod, plus offset.

    key_load  the key expression's fn; key_bytes(value) -> the bytes its registers hold.
    A seed nft did not send is random, as nft_jhash_init draws one.
    """
    mod, offset = int(arg.get("mod", 0)), int(arg.get("offset", 0))
    if not 0 < mod < 1 << 32:
        raise NftBuildError(f"unsupported jhash modulus {mod!r}")
    seed = int(arg["seed"]) if "seed" in arg else random.getrandbits(32)

    def load(pkt):
        v = key_load(pkt)
        return None if v is None else reciprocal_scale(jhash(key_bytes(v), seed), mod) + offset

    return load, "integer", 32
